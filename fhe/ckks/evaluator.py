"""Server side: homomorphic operations on ciphertexts with evaluation keys only.

Scale management follows a per-level scale table (``params.level_scales``):
every ciphertext at level l carries scale_l, products are rescaled by q_l to
land on scale_{l-1}, and an operand at a higher level is brought down by
:meth:`Evaluator.adjust_level` (drop limbs, multiply by an integer ~ scale
ratio, rescale), so ciphertexts of different depths can be added and
multiplied without scale drift.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..rlwe import keyswitch as ks
from ..rlwe.keys import EvaluationKeys, conjugation_element, galois_element
from .context import CKKSContext, Ciphertext, Plaintext
from .encoder import Encoder

_SCALE_RTOL = 1e-9


class LevelError(ValueError):
    """An operation needs more levels than the ciphertext has left."""


class Evaluator:
    """Homomorphic evaluation with a context and an :class:`EvaluationKeys` bundle (no secret)."""

    def __init__(self, ctx: CKKSContext, keys: EvaluationKeys | None = None) -> None:
        self.ctx = ctx
        self.params = ctx.params
        self.ring = ctx.ring
        self.keys = keys if keys is not None else EvaluationKeys(params=ctx.params)
        self.encoder = Encoder(ctx)
        self._monomials: dict[tuple[int, int], Any] = {}

    # ---- levels and scales -------------------------------------------------------
    def _idx(self, level: int) -> tuple[int, ...]:
        return self.params.q_indices(level)

    def drop_level(self, ct: Ciphertext, level: int) -> Ciphertext:
        """Keep limbs q_0..q_level (no scale change; the message is unchanged)."""
        if level > ct.level:
            raise LevelError(f"cannot raise a ciphertext from level {ct.level} to {level}")
        return Ciphertext([p[: level + 1] for p in ct.parts], level, ct.scale)

    def adjust_level(self, ct: Ciphertext, level: int) -> Ciphertext:
        """Bring ``ct`` to ``level`` *and* that level's scale (costs one rescale when level < ct.level)."""
        if level == ct.level:
            return ct
        if level > ct.level:
            raise LevelError(f"cannot raise a ciphertext from level {ct.level} to {level}")
        up = self.params.level_above(level)
        if up > ct.level:
            raise LevelError(f"level {level} is reached by a rescale from level {up}, above the ciphertext's "
                             f"level {ct.level} (composite region: levels pair up)")
        ct = self.drop_level(ct, up)
        q = self.params.rescale_modulus(up)
        factor = int(round(self.params.scale_at(level) * q / ct.scale))
        idx = self._idx(up)
        parts = [self.ring.mul_scalar(p, [factor] * len(idx), idx) for p in ct.parts]
        return self.rescale(Ciphertext(parts, up, ct.scale * factor))

    def _align(self, a: Ciphertext, b: Ciphertext) -> tuple[Ciphertext, Ciphertext]:
        lvl = min(a.level, b.level)
        return self.adjust_level(a, lvl), self.adjust_level(b, lvl)

    @staticmethod
    def _check_scales(sa: float, sb: float) -> None:
        if abs(sa - sb) > _SCALE_RTOL * max(sa, sb):
            raise ValueError(f"scales differ ({sa:.6g} vs {sb:.6g}); rescale or adjust_level first")

    # ---- additive ----------------------------------------------------------------------
    def add(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        a, b = self._align(a, b)
        self._check_scales(a.scale, b.scale)
        idx = self._idx(a.level)
        parts = [self.ring.add(x, y, idx) for x, y in zip(a.parts, b.parts)]
        longer = a.parts if len(a.parts) > len(b.parts) else b.parts
        parts += longer[len(parts):]
        return Ciphertext(parts, a.level, a.scale)

    def neg(self, a: Ciphertext) -> Ciphertext:
        idx = self._idx(a.level)
        return Ciphertext([self.ring.neg(p, idx) for p in a.parts], a.level, a.scale)

    def sub(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        return self.add(a, self.neg(b))

    def _plain_at(self, pt: Plaintext | Any, ct: Ciphertext, scale: float | None = None) -> Plaintext:
        if isinstance(pt, Plaintext):
            if pt.level < ct.level:
                raise LevelError(f"plaintext at level {pt.level} is below the ciphertext's level {ct.level}")
            return Plaintext(pt.data[: ct.level + 1], ct.level, pt.scale)
        return self.encoder.encode(pt, level=ct.level, scale=scale if scale is not None else ct.scale)

    def add_plain(self, ct: Ciphertext, pt: Plaintext | Any) -> Ciphertext:
        """ct + plaintext (a :class:`Plaintext` at the same scale, or raw values encoded here)."""
        pt = self._plain_at(pt, ct)
        self._check_scales(ct.scale, pt.scale)
        idx = self._idx(ct.level)
        return Ciphertext([self.ring.add(ct.parts[0], pt.data, idx)] + ct.parts[1:], ct.level, ct.scale)

    def sub_plain(self, ct: Ciphertext, pt: Plaintext | Any) -> Ciphertext:
        pt = self._plain_at(pt, ct)
        self._check_scales(ct.scale, pt.scale)
        idx = self._idx(ct.level)
        return Ciphertext([self.ring.sub(ct.parts[0], pt.data, idx)] + ct.parts[1:], ct.level, ct.scale)

    def add_const(self, ct: Ciphertext, c: float) -> Ciphertext:
        """ct + c in every slot (a real constant; exact up to rounding c * scale)."""
        idx = self._idx(ct.level)
        v = int(round(c * ct.scale))
        consts = self.ctx.backend.asarray(np.array([v % self.ring.primes[i] for i in idx],
                                                   dtype=np.uint64).reshape(-1, 1))
        c0 = self.ring.add(ct.parts[0], self.ctx.xp.broadcast_to(consts, ct.parts[0].shape), idx)
        return Ciphertext([c0] + ct.parts[1:], ct.level, ct.scale)

    # ---- multiplicative ---------------------------------------------------------------------
    def mul_plain(self, ct: Ciphertext, pt: Plaintext | Any) -> Ciphertext:
        """ct * plaintext, not rescaled (scale multiplies).  Raw values are encoded at the level's scale."""
        pt = self._plain_at(pt, ct, scale=self.params.scale_at(ct.level))
        idx = self._idx(ct.level)
        return Ciphertext([self.ring.mul(p, pt.data, idx) for p in ct.parts], ct.level, ct.scale * pt.scale)

    def mul_plain_add(self, acc: Ciphertext, ct: Ciphertext, pt: Plaintext) -> Ciphertext:
        """acc + ct * plaintext in one multiply-accumulate pass per part (same level; acc at ct's scale times
        the plaintext's): what a sum of plaintext products (a linear transform's diagonals) needs."""
        pt = self._plain_at(pt, ct)
        if acc.level != ct.level or len(acc.parts) != len(ct.parts):
            raise ValueError(f"mul_plain_add: accumulator at level {acc.level} with {len(acc.parts)} parts, "
                             f"ciphertext at level {ct.level} with {len(ct.parts)}")
        self._check_scales(acc.scale, ct.scale * pt.scale)
        idx = self._idx(ct.level)
        return Ciphertext([self.ring.mac(a, p, pt.data, idx) for a, p in zip(acc.parts, ct.parts)], ct.level, acc.scale)

    def mul_const(self, ct: Ciphertext, c: float) -> Ciphertext:
        """ct * c for a real constant, not rescaled (the constant is taken at the level's scale)."""
        s = self.params.scale_at(ct.level)
        v = int(round(c * s))
        idx = self._idx(ct.level)
        return Ciphertext([self.ring.mul_scalar(p, [v] * len(idx), idx) for p in ct.parts], ct.level, ct.scale * s)

    def mul_int(self, ct: Ciphertext, k: int) -> Ciphertext:
        """ct * k for an integer k: no scale change, no level used."""
        idx = self._idx(ct.level)
        return Ciphertext([self.ring.mul_scalar(p, [k] * len(idx), idx) for p in ct.parts], ct.level, ct.scale)

    def mul_monomial(self, ct: Ciphertext, k: int) -> Ciphertext:
        """ct * X^k (exact: no scale change, no level).  k = N/2 multiplies every slot by i."""
        n = self.params.n
        k %= 2 * n
        idx = self._idx(ct.level)
        key = (k, ct.level)
        mono = self._monomials.get(key)
        if mono is None:
            coeffs = np.zeros(n, dtype=np.int64)
            coeffs[k % n] = 1 if k < n else -1          # X^n = -1
            rns = np.mod(coeffs.reshape(1, -1), np.array([self.ring.primes[i] for i in idx],
                                                          dtype=np.int64).reshape(-1, 1)).astype(np.uint64)
            mono = self.ring.ntt(self.ctx.backend.asarray(rns), idx)
            self._monomials[key] = mono
        return Ciphertext([self.ring.mul(p, mono, idx) for p in ct.parts], ct.level, ct.scale)

    def mul_i(self, ct: Ciphertext) -> Ciphertext:
        """Multiply every slot by the imaginary unit i (X^(N/2): exact, no level)."""
        return self.mul_monomial(ct, self.params.n // 2)

    def mul(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        """Tensor product of two 2-part ciphertexts -> 3 parts (not relinearised, not rescaled)."""
        if len(a.parts) != 2 or len(b.parts) != 2:
            raise ValueError("mul takes relinearised (2-part) ciphertexts")
        a, b = self._align(a, b)
        idx = self._idx(a.level)
        r = self.ring
        d0 = r.mul(a.parts[0], b.parts[0], idx)
        d1 = r.mac(r.mul(a.parts[0], b.parts[1], idx), a.parts[1], b.parts[0], idx)
        d2 = r.mul(a.parts[1], b.parts[1], idx)
        return Ciphertext([d0, d1, d2], a.level, a.scale * b.scale)

    def relinearize(self, ct: Ciphertext) -> Ciphertext:
        """Key-switch the s^2 part back to s (needs the relinearisation key)."""
        if len(ct.parts) == 2:
            return ct
        if self.keys.relin is None:
            raise KeyError("no relinearisation key in the evaluation keys")
        idx = self._idx(ct.level)
        k0, k1 = ks.key_switch(self.ring, self.params, ct.parts[2], self.keys.relin, ct.level)
        return Ciphertext([self.ring.add(ct.parts[0], k0, idx), self.ring.add(ct.parts[1], k1, idx)],
                          ct.level, ct.scale)

    def rescale(self, ct: Ciphertext) -> Ciphertext:
        """Divide by q_level (rounded): level - 1, scale / q_level.

        In a composite region (``params.boot_levels``) a rescale divides by the prime pair
        q_level * q_(level-1), one prime at a time: level - 2.
        """
        if ct.level == 0:
            raise LevelError("cannot rescale a ciphertext at level 0: no levels left (bootstrap or use more levels)")
        width = self.params.rescale_width(ct.level)
        idx = self._idx(ct.level)
        parts = [self.ring.rescale_many(p, idx, width) for p in ct.parts]
        return Ciphertext(parts, ct.level - width, ct.scale / self.params.rescale_modulus(ct.level))

    def mul_relin_rescale(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        """a * b, relinearised and rescaled: the usual homomorphic multiplication."""
        return self.rescale(self.relinearize(self.mul(a, b)))

    def square(self, a: Ciphertext) -> Ciphertext:
        return self.mul_relin_rescale(a, a)

    def mul_plain_rescale(self, ct: Ciphertext, pt: Plaintext | Any) -> Ciphertext:
        return self.rescale(self.mul_plain(ct, pt))

    def mul_const_rescale(self, ct: Ciphertext, c: float) -> Ciphertext:
        return self.rescale(self.mul_const(ct, c))

    # ---- rotations -------------------------------------------------------------------------
    def _apply_galois(self, ct: Ciphertext, g: int, what: str) -> Ciphertext:
        if len(ct.parts) != 2:
            raise ValueError("relinearise before rotating")
        key = self.keys.galois_key(g, what)
        idx = self._idx(ct.level)
        c0 = self.ring.automorphism_ntt(ct.parts[0], g)
        c1 = self.ring.automorphism_ntt(ct.parts[1], g)
        k0, k1 = ks.key_switch(self.ring, self.params, c1, key, ct.level)
        return Ciphertext([self.ring.add(c0, k0, idx), k1], ct.level, ct.scale)

    def rotate(self, ct: Ciphertext, steps: int) -> Ciphertext:
        """Rotate slots left by ``steps`` (slot i receives slot i + steps)."""
        if steps % self.params.slots == 0:
            return ct
        return self._apply_galois(ct, galois_element(self.params, steps), f"rotation by {steps}")

    def conjugate(self, ct: Ciphertext) -> Ciphertext:
        """Complex-conjugate every slot."""
        return self._apply_galois(ct, conjugation_element(self.params), "conjugation")

    def rotate_hoisted(self, ct: Ciphertext, steps: Sequence[int]) -> dict[int, Ciphertext]:
        """Several rotations of one ciphertext sharing a single ModUp (hoisting).

        Returns ``{steps: rotated}``; rotation by 0 returns ``ct`` itself.
        """
        out: dict[int, Ciphertext] = {}
        todo = [s for s in dict.fromkeys(steps) if s % self.params.slots]
        for s in steps:
            if s % self.params.slots == 0:
                out[s] = ct
        if not todo:
            return out
        idx = self._idx(ct.level)
        exts = ks.mod_up(self.ring, self.params, ct.parts[1], ct.level)
        for s in todo:
            g = galois_element(self.params, s)
            key = self.keys.galois_key(g, f"rotation by {s}")
            b, a = ks.inner_product(self.ring, self.params, ks.permute_extended(self.ring, exts, g), key, ct.level)
            k0 = ks.mod_down(self.ring, self.params, b, ct.level)
            k1 = ks.mod_down(self.ring, self.params, a, ct.level)
            c0 = self.ring.automorphism_ntt(ct.parts[0], g)
            out[s] = Ciphertext([self.ring.add(c0, k0, idx), k1], ct.level, ct.scale)
        return out

    def sum_slots(self, ct: Ciphertext, width: int) -> Ciphertext:
        """Every slot i receives sum_{j<width} slot (i+j) (``width`` a power of two; log2(width) rotations)."""
        if width & (width - 1) or width < 1:
            raise ValueError(f"width must be a power of two, got {width}")
        step = 1
        while step < width:
            ct = self.add(ct, self.rotate(ct, step))
            step *= 2
        return ct

    @staticmethod
    def sum_slots_rotations(width: int) -> list[int]:
        """Rotation steps :meth:`sum_slots` needs for ``width``."""
        return [1 << i for i in range(max(width - 1, 0).bit_length())]
