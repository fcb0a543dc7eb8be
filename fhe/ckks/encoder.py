"""Canonical-embedding encoder: N/2 complex slots <-> a scaled integer polynomial.

Slot j is the evaluation of the message polynomial at zeta^(5^j mod 2N), zeta =
exp(i pi / N); its conjugate sits at zeta^(-5^j).  Both directions are one
length-N FFT (``xp.fft``) plus a twist by powers of zeta.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .context import CKKSContext, Plaintext

Array = Any


class Encoder:
    """Encodes real/complex vectors into :class:`Plaintext` and decodes them back."""

    def __init__(self, ctx: CKKSContext) -> None:
        self.ctx = ctx
        p = ctx.params
        n = p.n
        idx = np.array([pow(5, j, 2 * n) for j in range(p.slots)], dtype=np.int64)
        self._pos = ctx.backend.asarray((idx - 1) // 2)           # FFT bin of slot j
        self._neg = ctx.backend.asarray((2 * n - idx - 1) // 2)   # bin of its conjugate
        i = np.arange(n)
        self._twist = ctx.backend.asarray(np.exp(1j * np.pi * i / n))
        self._untwist = ctx.backend.asarray(np.exp(-1j * np.pi * i / n))

    def coefficients(self, values: Any) -> Array:
        """Real polynomial coefficients (float64, shape (N,)) whose embedding is ``values`` (<= N/2 slots)."""
        xp, p = self.ctx.xp, self.ctx.params
        z = xp.asarray(values, dtype=xp.complex128).reshape(-1)
        if z.size > p.slots:
            raise ValueError(f"{z.size} values do not fit {p.slots} slots (N={p.n})")
        full = xp.zeros(p.slots, dtype=xp.complex128)
        full[: z.size] = z
        w = xp.zeros(p.n, dtype=xp.complex128)
        w[self._pos] = full
        w[self._neg] = xp.conj(full)
        return (xp.fft.fft(w) / p.n * self._untwist).real

    def encode(self, values: Any, level: int | None = None, scale: float | None = None) -> Plaintext:
        """Encode up to N/2 values at ``level`` (default top) and ``scale`` (default that level's scale)."""
        p = self.ctx.params
        level = p.max_level if level is None else level
        p.check_level(level)
        scale = p.scale_at(level) if scale is None else scale
        coeffs = self.coefficients(values) * scale
        return Plaintext(self.coeffs_to_ntt(coeffs, level), level, scale)

    def coeffs_to_ntt(self, coeffs: Array, level: int) -> Array:
        """Round real coefficients (|c| < 2**84) and reduce into NTT-form limbs q_0..q_level."""
        xp, ring = self.ctx.xp, self.ctx.ring
        idx = self.ctx.params.q_indices(level)
        c = xp.rint(coeffs)
        if float(xp.max(xp.abs(c))) >= 2.0 ** 84:
            raise OverflowError("encoded coefficients exceed 2^84; lower the scale or the values")
        hi = xp.floor(c / 2.0 ** 32)
        lo = (c - hi * 2.0 ** 32).astype(xp.int64)          # in [0, 2^32)
        hi = hi.astype(xp.int64)
        q = xp.asarray(np.array([ring.primes[i] for i in idx], dtype=np.int64).reshape(-1, 1))
        two32 = xp.asarray(np.array([(1 << 32) % ring.primes[i] for i in idx], dtype=np.uint64).reshape(-1, 1))
        hi_r = xp.mod(hi[None, :], q).astype(xp.uint64)
        lo_r = xp.mod(lo[None, :], q).astype(xp.uint64)
        t = ring.tables(idx)
        from ..ring import modarith as ma
        r = ma.addmod(ma.mulmod(hi_r, two32, t.p, t.pinv, xp), lo_r, t.p, xp)
        return ring.ntt(r, idx)

    def decode(self, pt: Plaintext) -> Array:
        """The N/2 complex slot values of a plaintext (on the backend's device)."""
        ring, p = self.ctx.ring, self.ctx.params
        idx = p.q_indices(pt.level)
        coeffs = ring.to_float(ring.intt(pt.data, idx), idx) / pt.scale
        w = self.ctx.xp.fft.ifft(coeffs * self._twist) * p.n
        return w[self._pos]
