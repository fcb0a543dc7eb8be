"""Vectorisable CPU kernels (numba) with lazy reduction: NTT, INTT, base conversion, element-wise ops.

Every kernel works on a range of rows (or, for base conversion, of columns) of its operands and
writes into a caller-given output, so :mod:`fhe.ring.threads` can split one call across threads.
They return exactly what the array-module reference in :mod:`fhe.ring.ring` returns -- every
output is the canonical residue in [0, q) -- and the tests compare the two bit for bit.

Reduction ("float-assisted Shoup"): ``x * w mod q`` for a fixed ``w < q`` with ``wf = w / q``
precomputed in float64 takes the quotient estimate ``trunc(float(x) * wf)``.  For ``x < 2^52`` the
estimate is within one of ``floor(x w / q)``, so ``r = x w - est q`` (wrapping uint64 arithmetic)
lies in [-q, 2q) and ``min(r, r + q)`` (unsigned) lies in [0, 2q).  Conversions go through int64
so that LLVM vectorises them (AVX-512DQ ``vcvtqq2pd``/``vcvttpd2qq``, ``vpmullq``).

NTT/INTT are Harvey's butterflies: values stay in [0, 4q) (forward) or [0, 2q) (inverse) between
stages and are brought to [0, q) once at the end.  That needs ``4q < 2^52``: every prime below
``2**50`` (:data:`LAZY_PRIME_LIMIT`); :class:`~fhe.ring.ring.RNSRing` falls back to the exact
kernels of :mod:`fhe.ring.cpu_kernels` otherwise.  The last three forward stages (and first three
inverse ones), whose butterfly spans are 4, 2 and 1, loop over butterfly groups so that they
vectorise too.
"""
from __future__ import annotations

import numpy as np

from .cpu_kernels import AVAILABLE, njit

__all__ = ["AVAILABLE", "LAZY_PRIME_LIMIT"]

#: NTT/INTT here need every prime below this (values up to 4q must stay below 2^52)
LAZY_PRIME_LIMIT = 2**50

_JIT = dict(cache=True, boundscheck=False, nogil=True, fastmath=False)


@njit(cache=True, inline="always")
def _est(x, wf):  # pragma: no cover - compiled
    """trunc(float(x) * wf) for x < 2^63, through int64 so it vectorises."""
    return np.uint64(np.int64(np.float64(np.int64(x)) * wf))


@njit(cache=True, inline="always")
def _mulred_lazy(x, w, wf, q):  # pragma: no cover - compiled
    """x * w mod q in [0, 2q) for x < 2^52, w < q, wf = w / q."""
    r = x * w - _est(x, wf) * q
    return min(r, r + q)


@njit(cache=True, inline="always")
def _mulmod(x, y, q, qf):  # pragma: no cover - compiled
    """x * y mod q in [0, q) for x, y in [0, q), q < 2^51, qf = 1 / q (both factors variable)."""
    rr = x * y - np.uint64(np.int64(np.float64(np.int64(x)) * np.float64(np.int64(y)) * qf)) * q
    return _canon2(min(rr, rr + q), q)


@njit(cache=True, inline="always")
def _canon2(v, q):  # pragma: no cover - compiled
    """[0, 2q) -> [0, q)."""
    return min(v, v - q)


@njit(cache=True, inline="always")
def _canon4(v, q, q2):  # pragma: no cover - compiled
    """[0, 4q) -> [0, q)."""
    v = min(v, v - q2)
    return min(v, v - q)


@njit(cache=True, inline="always")
def _fwd_bf(row, j, jt, w, wf, q, q2):  # pragma: no cover - compiled
    """Harvey forward butterfly on row[j], row[jt] (both in [0, 4q) -> [0, 4q))."""
    u = row[j]
    u = min(u, u - q2)
    v = _mulred_lazy(row[jt], w, wf, q)
    row[j] = u + v
    row[jt] = u - v + q2


@njit(cache=True, inline="always")
def _inv_bf(row, j, jt, w, wf, q, q2):  # pragma: no cover - compiled
    """Harvey inverse butterfly on row[j], row[jt] (both in [0, 2q) -> [0, 2q))."""
    u = row[j]
    x = row[jt]
    s = u + x
    row[j] = min(s, s - q2)
    row[jt] = _mulred_lazy(u - x + q2, w, wf, q)


@njit(**_JIT)
def ntt_rows(src, a, psi, psi_f, p, r0, r1):  # pragma: no cover - compiled
    """Forward negacyclic NTT of rows r0..r1-1 of ``src`` (k, N) into ``a`` (may be ``src``); bit-reversed output.

    ``psi``/``psi_f`` (k, N): psi^bitrev(i) mod p and its float ratio to p; ``p`` (k,) moduli.
    """
    n = a.shape[1]
    for r in range(r0, r1):
        q = p[r]
        q2 = q + q
        row = a[r]
        row[:] = src[r]
        pr = psi[r]
        pf = psi_f[r]
        t = n
        m = 1
        while t > 8:
            t >>= 1
            for i in range(m):
                w = pr[m + i]
                wf = pf[m + i]
                j1 = 2 * i * t
                lo = row[j1:j1 + t]
                hi = row[j1 + t:j1 + 2 * t]
                for j in range(t):
                    u = lo[j]
                    u = min(u, u - q2)
                    v = _mulred_lazy(hi[j], w, wf, q)
                    lo[j] = u + v
                    hi[j] = u - v + q2
            m <<= 1
        if t == 8:  # spans 4, 2, 1: one group of butterflies per twiddle, looped over groups
            for i in range(m):
                b = 8 * i
                for j in range(4):
                    _fwd_bf(row, b + j, b + j + 4, pr[m + i], pf[m + i], q, q2)
            m <<= 1
            t = 4
        if t == 4:
            for i in range(m):
                b = 4 * i
                _fwd_bf(row, b, b + 2, pr[m + i], pf[m + i], q, q2)
                _fwd_bf(row, b + 1, b + 3, pr[m + i], pf[m + i], q, q2)
            m <<= 1
            t = 2
        if t == 2:
            for i in range(m):
                _fwd_bf(row, 2 * i, 2 * i + 1, pr[m + i], pf[m + i], q, q2)
        for j in range(n):
            row[j] = _canon4(row[j], q, q2)


@njit(**_JIT)
def intt_rows(src, a, ipsi, ipsi_f, p, ninv, ninv_f, r0, r1):  # pragma: no cover - compiled
    """Inverse negacyclic NTT of rows r0..r1-1 of ``src`` (bit-reversed input) into ``a`` (may be ``src``),
    times N^{-1}."""
    n = a.shape[1]
    for r in range(r0, r1):
        q = p[r]
        q2 = q + q
        row = a[r]
        row[:] = src[r]
        pr = ipsi[r]
        pf = ipsi_f[r]
        m = n
        t = 1
        if n >= 2:
            h = m >> 1
            for i in range(h):
                _inv_bf(row, 2 * i, 2 * i + 1, pr[h + i], pf[h + i], q, q2)
            m = h
            t = 2
        if n >= 4:
            h = m >> 1
            for i in range(h):
                b = 4 * i
                _inv_bf(row, b, b + 2, pr[h + i], pf[h + i], q, q2)
                _inv_bf(row, b + 1, b + 3, pr[h + i], pf[h + i], q, q2)
            m = h
            t = 4
        if n >= 8:
            h = m >> 1
            for i in range(h):
                b = 8 * i
                for j in range(4):
                    _inv_bf(row, b + j, b + j + 4, pr[h + i], pf[h + i], q, q2)
            m = h
            t = 8
        while m > 1:
            h = m >> 1
            for i in range(h):
                w = pr[h + i]
                wf = pf[h + i]
                j1 = 2 * i * t
                lo = row[j1:j1 + t]
                hi = row[j1 + t:j1 + 2 * t]
                for j in range(t):
                    u = lo[j]
                    x = hi[j]
                    s = u + x
                    lo[j] = min(s, s - q2)
                    hi[j] = _mulred_lazy(u - x + q2, w, wf, q)
            t <<= 1
            m = h
        c = ninv[r]
        cf = ninv_f[r]
        for j in range(n):
            row[j] = _canon2(_mulred_lazy(row[j], c, cf, q), q)


@njit(**_JIT)
def mul_rows(a, b, p, pinv, out, r0, r1):  # pragma: no cover - compiled
    """out = a * b mod p on rows r0..r1-1 (a, b in [0, p), p < 2^51, pinv = 1 / p)."""
    n = a.shape[1]
    for r in range(r0, r1):
        q = p[r]
        qf = pinv[r]
        ar = a[r]
        br = b[r]
        orow = out[r]
        for i in range(n):
            orow[i] = _mulmod(ar[i], br[i], q, qf)


@njit(**_JIT)
def mac_rows(acc, a, b, p, pinv, out, r0, r1):  # pragma: no cover - compiled
    """out = acc + a * b mod p on rows r0..r1-1 (all in [0, p))."""
    n = a.shape[1]
    for r in range(r0, r1):
        q = p[r]
        qf = pinv[r]
        ar = a[r]
        br = b[r]
        cr = acc[r]
        orow = out[r]
        for i in range(n):
            orow[i] = _canon2(cr[i] + _mulmod(ar[i], br[i], q, qf), q)


@njit(**_JIT)
def mul_scalar_rows(a, c, cf, p, out, r0, r1):  # pragma: no cover - compiled
    """out = a * c mod p on rows r0..r1-1, one constant c[r] < p per row, cf[r] = c[r] / p[r]."""
    n = a.shape[1]
    for r in range(r0, r1):
        q = p[r]
        w = c[r]
        wf = cf[r]
        ar = a[r]
        orow = out[r]
        for i in range(n):
            orow[i] = _canon2(_mulred_lazy(ar[i], w, wf, q), q)


@njit(**_JIT)
def add_rows(a, b, p, out, r0, r1):  # pragma: no cover - compiled
    """out = a + b mod p on rows r0..r1-1 (a, b in [0, p))."""
    n = a.shape[1]
    for r in range(r0, r1):
        q = p[r]
        ar = a[r]
        br = b[r]
        orow = out[r]
        for i in range(n):
            orow[i] = _canon2(ar[i] + br[i], q)


@njit(**_JIT)
def sub_rows(a, b, p, out, r0, r1):  # pragma: no cover - compiled
    """out = a - b mod p on rows r0..r1-1 (a, b in [0, p))."""
    n = a.shape[1]
    for r in range(r0, r1):
        q = p[r]
        ar = a[r]
        br = b[r]
        orow = out[r]
        for i in range(n):
            orow[i] = _canon2(ar[i] - br[i] + q, q)


@njit(**_JIT)
def base_convert_cols(a, src_p, hat_inv, hat_inv_f, dst_p, dst_pinv, hat_mod, hat_mod_f, neg_q,
                      out, c0, c1):  # pragma: no cover - compiled
    """Fast base conversion with centred digits (RNSRing.base_convert) of columns c0..c1-1: a (k, N) -> out (m, N).

    Column blocks of 1024 keep the digits of a block in cache while every target limb reads them;
    each product is reduced lazily to [0, 2p) and the sum (< 3 k p < 2^63) once at the end.
    """
    k = a.shape[0]
    m = dst_p.shape[0]
    blk = 1024
    y = np.empty((k, blk), dtype=np.uint64)
    high = np.empty(blk, dtype=np.uint64)
    acc = np.empty(blk, dtype=np.uint64)
    for b0 in range(c0, c1, blk):
        b1 = min(b0 + blk, c1)
        w = b1 - b0
        for j in range(w):
            high[j] = 0
        for i in range(k):
            q = src_p[i]
            half = q >> np.uint64(1)
            c = hat_inv[i]
            cf = hat_inv_f[i]
            ar = a[i]
            yr = y[i]
            for j in range(w):
                v = _canon2(_mulred_lazy(ar[b0 + j], c, cf, q), q)
                yr[j] = v
                high[j] += np.uint64(1) if v > half else np.uint64(0)
        for t in range(m):
            q = dst_p[t]
            nq = neg_q[t]
            for j in range(w):
                acc[j] = high[j] * nq
            for i in range(k):
                c = hat_mod[t, i]
                cf = hat_mod_f[t, i]
                yr = y[i]
                for j in range(w):
                    acc[j] += _mulred_lazy(yr[j], c, cf, q)
            qf = dst_pinv[t]
            orow = out[t]
            for j in range(w):
                x = acc[j]
                orow[b0 + j] = _canon2(_mulred_lazy(x, np.uint64(1), qf, q), q)


@njit(**_JIT)
def rescale_lift_cols(tail, q_last, p, pinv, shift, out, c0, c1):  # pragma: no cover - compiled
    """out[i] = centred(tail) mod p[i] on columns c0..c1-1: tail (N,) in [0, q_last), values above
    q_last / 2 standing for tail - q_last (``shift[i] = -q_last mod p[i]`` is added to those)."""
    half = q_last >> np.uint64(1)
    for i in range(p.shape[0]):
        q = p[i]
        qf = pinv[i]
        s = shift[i]
        orow = out[i]
        for j in range(c0, c1):
            x = tail[j]
            v = _canon2(_mulred_lazy(x, np.uint64(1), qf, q), q)
            v2 = v + s
            orow[j] = _canon2(v2, q) if x > half else v


@njit(**_JIT)
def permute_rows(a, perm, out, r0, r1):  # pragma: no cover - compiled
    """out[r, j] = a[r, perm[j]] on rows r0..r1-1 (an automorphism in NTT form)."""
    n = a.shape[1]
    for r in range(r0, r1):
        ar = a[r]
        orow = out[r]
        for j in range(n):
            orow[j] = ar[perm[j]]
