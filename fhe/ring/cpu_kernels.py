"""Exact-reduction compiled NTT/INTT (numba), for rings with a prime in [2^50, 2^51).

The fast kernels live in :mod:`fhe.ring.lazy_kernels`; they keep values up to 4q between NTT
stages, which needs every prime below 2^50 (every preset's are).  These reduce to [0, q) after
every butterfly, so they hold for any prime below 2^51, the ring's own limit.  Both compute
exactly what the array-module versions in :mod:`fhe.ring.ring` compute (tests compare them bit
for bit).  This module also owns the numba switch: set ``AEGIS_NO_NUMBA=1`` to force the
array-module reference path everywhere.
"""
from __future__ import annotations

import os

import numpy as np

try:  # numba is a core dependency, but keep the reference path importable without it
    if os.environ.get("AEGIS_NO_NUMBA"):
        raise ImportError("disabled by AEGIS_NO_NUMBA")
    from numba import njit

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only without numba
    AVAILABLE = False

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        def deco(fn):
            return fn
        return deco


@njit(cache=True, inline="always")
def _reduce_by_estimate(prod, qq, q):  # pragma: no cover - compiled
    """``prod mod q`` (both uint64, ``prod`` the low 64 bits of a product) given a quotient estimate
    ``qq`` off by at most one: the remainder ``prod - qq q`` in signed 64 bits, corrected once."""
    r = np.int64(prod - qq * q)
    qi = np.int64(q)
    if r < 0:
        r += qi
    elif r >= qi:
        r -= qi
    return np.uint64(r)


@njit(cache=True, fastmath=False, boundscheck=False)
def _mulred(x, w, wf, q):  # pragma: no cover - compiled
    """x * w mod q with a precomputed ``wf = w / q``: quotient estimate float(x) * wf."""
    return _reduce_by_estimate(x * w, np.uint64(np.float64(x) * wf), q)


@njit(cache=True, boundscheck=False, nogil=True)
def ntt_inplace_wide(a, psi, psi_f, p):  # pragma: no cover - compiled
    """Forward negacyclic NTT of every row of ``a`` (k, N) in place; tables (k, N), moduli p (k,).

    Branch-free butterflies: reductions use the unsigned ``min(v, v - q)`` trick (v - q wraps
    above v when v < q), which is exact for q < 2^62 and lets the compiler keep the loop tight.
    """
    k, n = a.shape
    for r in range(k):
        q = p[r]
        t = n
        m = 1
        while m < n:
            t >>= 1
            for i in range(m):
                w = psi[r, m + i]
                wf = psi_f[r, m + i]
                j1 = 2 * i * t
                for j in range(j1, j1 + t):
                    x = a[r, j + t]
                    v = x * w - np.uint64(np.int64(np.float64(x) * wf)) * q + q   # in (0, 3q)
                    v = min(v, v - q)
                    v = min(v, v - q)
                    u = a[r, j]
                    s = u + v
                    d = u + q - v
                    a[r, j] = min(s, s - q)
                    a[r, j + t] = min(d, d - q)
            m <<= 1


@njit(cache=True, boundscheck=False, nogil=True)
def intt_inplace_wide(a, ipsi, ipsi_f, p, ninv, ninv_f):  # pragma: no cover - compiled
    """Inverse negacyclic NTT of every row of ``a`` in place (bit-reversed input), including N^{-1}."""
    k, n = a.shape
    for r in range(k):
        q = p[r]
        t = 1
        m = n
        while m > 1:
            h = m >> 1
            for i in range(h):
                w = ipsi[r, h + i]
                wf = ipsi_f[r, h + i]
                j1 = 2 * i * t
                for j in range(j1, j1 + t):
                    u = a[r, j]
                    x = a[r, j + t]
                    s = u + x
                    a[r, j] = min(s, s - q)
                    d = u + q - x
                    d = min(d, d - q)
                    v = d * w - np.uint64(np.int64(np.float64(d) * wf)) * q + q
                    v = min(v, v - q)
                    a[r, j + t] = min(v, v - q)
            t <<= 1
            m = h
        for j in range(n):
            a[r, j] = _mulred(a[r, j], ninv[r], ninv_f[r], q)
