"""Compiled CPU kernels (numba) for the hottest ring loops: NTT, INTT, base conversion.

They compute exactly what the array-module versions in :mod:`fhe.ring.ring`
compute (same float-assisted reduction, same bit-reversed order), one limb at
a time in scalar loops, which avoids NumPy's temporaries.  The array-module
versions stay the reference: tests compare the two bit for bit.  Set
``AEGIS_NO_NUMBA=1`` to force the reference path.
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
def ntt_inplace(a, psi, psi_f, p):  # pragma: no cover - compiled
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
def intt_inplace(a, ipsi, ipsi_f, p, ninv, ninv_f):  # pragma: no cover - compiled
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


@njit(cache=True, boundscheck=False, nogil=True)
def base_convert(a, src_p, hat_inv, hat_inv_f, dst_p, dst_pinv, hat_mod, hat_mod_f, neg_q):  # pragma: no cover
    """Fast base conversion with centred digits (see RNSRing.base_convert): a (k, N) -> (m, N)."""
    k, n = a.shape
    m = dst_p.shape[0]
    y = np.empty((k, n), dtype=np.uint64)
    high = np.zeros(n, dtype=np.uint64)
    for i in range(k):
        half = src_p[i] >> np.uint64(1)
        for j in range(n):
            v = _mulred(a[i, j], hat_inv[i], hat_inv_f[i], src_p[i])
            y[i, j] = v
            if v > half:
                high[j] += np.uint64(1)
    out = np.empty((m, n), dtype=np.uint64)
    for t in range(m):
        q = dst_p[t]
        qf = dst_pinv[t]
        for j in range(n):
            acc = high[j] * neg_q[t]
            for i in range(k):
                x = y[i, j]
                qq = np.uint64(np.float64(x) * hat_mod_f[t, i])
                acc += np.uint64(np.int64(x * hat_mod[t, i] - qq * q) + np.int64(q))  # in (0, 3q)
            qq = np.uint64(np.float64(acc) * qf)
            r = np.int64(acc - qq * q)
            qi = np.int64(q)
            while r < 0:
                r += qi
            while r >= qi:
                r -= qi
            out[t, j] = np.uint64(r)
    return out


@njit(cache=True, inline="always")
def _mulmod_f(x, y, q, qf):  # pragma: no cover - compiled
    """x * y mod q with the quotient estimated as float(x) * float(y) * (1/q), as modarith.mulmod does."""
    return _reduce_by_estimate(x * y, np.uint64(np.float64(x) * np.float64(y) * qf), q)


@njit(cache=True, boundscheck=False, nogil=True)
def mulmod2d(a, b, p, pinv):  # pragma: no cover - compiled
    """a * b mod p row-wise: a (k, N), b (k, N) or (k, 1), p / pinv (k,); same reduction as modarith.mulmod."""
    k, n = a.shape
    bcast = b.shape[1] == 1
    out = np.empty((k, n), dtype=np.uint64)
    for r in range(k):
        for i in range(n):
            out[r, i] = _mulmod_f(a[r, i], b[r, 0] if bcast else b[r, i], p[r], pinv[r])
    return out


@njit(cache=True, boundscheck=False, nogil=True)
def macmod2d(acc, a, b, p, pinv):  # pragma: no cover - compiled
    """acc + a * b mod p row-wise (all (k, N)): modarith.addmod(acc, modarith.mulmod(a, b))."""
    k, n = a.shape
    out = np.empty((k, n), dtype=np.uint64)
    for r in range(k):
        q = p[r]
        for i in range(n):
            s = acc[r, i] + _mulmod_f(a[r, i], b[r, i], q, pinv[r])
            out[r, i] = s - q if s >= q else s
    return out


@njit(cache=True, boundscheck=False, nogil=True)
def addmod2d(a, b, p):  # pragma: no cover - compiled
    """a + b mod p row-wise (a, b in [0, p))."""
    k, n = a.shape
    out = np.empty((k, n), dtype=np.uint64)
    for r in range(k):
        q = p[r]
        for i in range(n):
            s = a[r, i] + b[r, i]
            if s >= q:
                s -= q
            out[r, i] = s
    return out


@njit(cache=True, boundscheck=False, nogil=True)
def submod2d(a, b, p):  # pragma: no cover - compiled
    """a - b mod p row-wise (a, b in [0, p))."""
    k, n = a.shape
    out = np.empty((k, n), dtype=np.uint64)
    for r in range(k):
        q = p[r]
        for i in range(n):
            x = a[r, i]
            y = b[r, i]
            out[r, i] = x - y if x >= y else x + q - y
    return out
