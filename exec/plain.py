"""A plaintext evaluator with the Evaluator's interface: the approximated model without encryption.

:class:`PlainEvaluator` works on :class:`PlainCiphertext` (a slot vector and a level) and
follows the same level rules as :class:`fhe.ckks.Evaluator` (a product needs a rescale, a
rescale uses a level, ``adjust_level`` brings an operand down).  Running the executor's op
implementations on it gives (1) the plaintext run of the *same* approximated program the
encrypted run computes, and (2) a check that the program's levels are consistent, in
milliseconds.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fhe.ckks.evaluator import LevelError


@dataclass
class PlainCiphertext:
    values: np.ndarray
    level: int
    parts: int = 2

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)


class PlainEvaluator:
    """Slot-vector arithmetic with CKKS level bookkeeping (no encryption, no noise)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots

    def encrypt(self, values: Any, level: int) -> PlainCiphertext:
        v = np.zeros(self.slots)
        a = np.asarray(values, dtype=np.float64)
        v[: a.shape[0]] = a
        return PlainCiphertext(v, level)

    def decrypt(self, ct: PlainCiphertext) -> np.ndarray:
        return ct.values.copy()

    # ---- Evaluator interface used by the op implementations and fhe.circuits -----------------
    def adjust_level(self, ct: PlainCiphertext, level: int) -> PlainCiphertext:
        if level > ct.level:
            raise LevelError(f"cannot raise a ciphertext from level {ct.level} to {level}")
        return ct if level == ct.level else PlainCiphertext(ct.values, level)

    def drop_level(self, ct: PlainCiphertext, level: int) -> PlainCiphertext:
        return self.adjust_level(ct, level)

    def _lvl(self, *cts: PlainCiphertext) -> int:
        return min(c.level for c in cts)

    def add(self, a: PlainCiphertext, b: PlainCiphertext) -> PlainCiphertext:
        return PlainCiphertext(a.values + b.values, self._lvl(a, b), max(a.parts, b.parts))

    def sub(self, a: PlainCiphertext, b: PlainCiphertext) -> PlainCiphertext:
        return PlainCiphertext(a.values - b.values, self._lvl(a, b))

    def neg(self, a: PlainCiphertext) -> PlainCiphertext:
        return PlainCiphertext(-a.values, a.level)

    def add_const(self, ct: PlainCiphertext, c: float) -> PlainCiphertext:
        return PlainCiphertext(ct.values + c, ct.level)

    def add_plain(self, ct: PlainCiphertext, v: Any) -> PlainCiphertext:
        return PlainCiphertext(ct.values + np.asarray(v), ct.level)

    def _rescaled(self, values: np.ndarray, level: int) -> PlainCiphertext:
        if level == 0:
            raise LevelError("cannot rescale a ciphertext at level 0: no levels left")
        return PlainCiphertext(values, level - 1)

    def mul_relin_rescale(self, a: PlainCiphertext, b: PlainCiphertext) -> PlainCiphertext:
        return self._rescaled(a.values * b.values, self._lvl(a, b))

    def mul(self, a: PlainCiphertext, b: PlainCiphertext) -> PlainCiphertext:
        """The tensor product (3 parts: relinearise, then rescale, as fhe.ckks.Evaluator.mul)."""
        if a.parts != 2 or b.parts != 2:
            raise ValueError("mul takes relinearised (2-part) ciphertexts")
        return PlainCiphertext(a.values * b.values, self._lvl(a, b), 3)

    def relinearize(self, ct: PlainCiphertext) -> PlainCiphertext:
        return PlainCiphertext(ct.values, ct.level)

    def mul_plain(self, ct: PlainCiphertext, v: Any) -> PlainCiphertext:
        """ct * plaintext without rescale (a sum of such products is rescaled once)."""
        return PlainCiphertext(ct.values * np.asarray(v), ct.level)

    def mul_plain_rescale(self, ct: PlainCiphertext, v: Any) -> PlainCiphertext:
        return self._rescaled(ct.values * np.asarray(v), ct.level)

    def mul_const_rescale(self, ct: PlainCiphertext, c: float) -> PlainCiphertext:
        return self._rescaled(ct.values * c, ct.level)

    # the unrescaled forms PolynomialEvaluator uses: the rescale follows explicitly
    def mul_const(self, ct: PlainCiphertext, c: float) -> PlainCiphertext:
        return PlainCiphertext(ct.values * c, ct.level)

    def mul_int(self, ct: PlainCiphertext, k: int) -> PlainCiphertext:
        return PlainCiphertext(ct.values * k, ct.level)

    def rescale(self, ct: PlainCiphertext) -> PlainCiphertext:
        return self._rescaled(ct.values, ct.level)

    def rotate(self, ct: PlainCiphertext, steps: int) -> PlainCiphertext:
        """Slot i receives slot i + steps (as fhe.ckks.Evaluator.rotate)."""
        if ct.parts != 2:
            raise ValueError("relinearise before rotating")
        return PlainCiphertext(np.roll(ct.values, -steps), ct.level)

    def rotate_hoisted(self, ct: PlainCiphertext, steps: Sequence[int]) -> dict[int, PlainCiphertext]:
        return {s: self.rotate(ct, s) for s in steps}



class CountingEvaluator(PlainEvaluator):
    """A :class:`PlainEvaluator` that also tallies the primitives it performs, by level.

    Comparing the tally of each op with the program's work list checks that the program
    counts exactly what the executor does (what limb-parallel communication depends on).
    """

    def __init__(self, slots: int) -> None:
        super().__init__(slots)
        from aegis.prims import Tally

        self.tally = Tally()

    def _t(self, prim: str, level: int, n: int = 1) -> None:
        self.tally.add(prim, level, n)

    def adjust_level(self, ct: PlainCiphertext, level: int) -> PlainCiphertext:
        if level < ct.level:
            self._t("pmul", level + 1)
            self._t("rescale", level + 1)
        return super().adjust_level(ct, level)

    def _aligned(self, a: PlainCiphertext, b: PlainCiphertext) -> tuple[PlainCiphertext, PlainCiphertext]:
        lvl = min(a.level, b.level)
        return self.adjust_level(a, lvl), self.adjust_level(b, lvl)

    def add(self, a: PlainCiphertext, b: PlainCiphertext) -> PlainCiphertext:
        a, b = self._aligned(a, b)
        self._t("add", a.level)
        return super().add(a, b)

    def sub(self, a: PlainCiphertext, b: PlainCiphertext) -> PlainCiphertext:
        a, b = self._aligned(a, b)
        self._t("add", a.level)
        return super().sub(a, b)

    def mul_relin_rescale(self, a: PlainCiphertext, b: PlainCiphertext) -> PlainCiphertext:
        a, b = self._aligned(a, b)
        self._t("tensor", a.level)
        self._t("relin", a.level)
        self._t("rescale", a.level)
        return super().mul_relin_rescale(a, b)

    def mul(self, a: PlainCiphertext, b: PlainCiphertext) -> PlainCiphertext:
        a, b = self._aligned(a, b)
        self._t("tensor", a.level)
        return super().mul(a, b)

    def relinearize(self, ct: PlainCiphertext) -> PlainCiphertext:
        if ct.parts == 3:
            self._t("relin", ct.level)
        return super().relinearize(ct)

    def mul_plain(self, ct: PlainCiphertext, v: Any) -> PlainCiphertext:
        self._t("pmul", ct.level)
        return super().mul_plain(ct, v)

    def mul_plain_rescale(self, ct: PlainCiphertext, v: Any) -> PlainCiphertext:
        self._t("pmul", ct.level)
        self._t("rescale", ct.level)
        return super().mul_plain_rescale(ct, v)

    def mul_const_rescale(self, ct: PlainCiphertext, c: float) -> PlainCiphertext:
        self._t("pmul", ct.level)
        self._t("rescale", ct.level)
        return super().mul_const_rescale(ct, c)

    def mul_const(self, ct: PlainCiphertext, c: float) -> PlainCiphertext:
        self._t("pmul", ct.level)
        return super().mul_const(ct, c)

    def mul_int(self, ct: PlainCiphertext, k: int) -> PlainCiphertext:
        self._t("pmul", ct.level)
        return super().mul_int(ct, k)

    def rescale(self, ct: PlainCiphertext) -> PlainCiphertext:
        self._t("rescale", ct.level)
        return super().rescale(ct)

    def rotate(self, ct: PlainCiphertext, steps: int) -> PlainCiphertext:
        self._t("rot", ct.level)
        return super().rotate(ct, steps)

    def rotate_hoisted(self, ct: PlainCiphertext, steps: Sequence[int]) -> dict[int, PlainCiphertext]:
        real = [s for s in dict.fromkeys(steps) if s % self.slots]
        if real:
            self._t("hoist", ct.level)
            self._t("hrot", ct.level, len(real))
        return {s: PlainCiphertext(np.roll(ct.values, -s), ct.level) for s in steps}

    def rotate_sum(self, terms: list[tuple[PlainCiphertext, int]]) -> PlainCiphertext:
        """Giant steps aggregated on the output (as limb parallelism runs them)."""
        lvl = min(c.level for c, _ in terms)
        self._t("giant", lvl, sum(1 for _, s in terms if s))
        self._t("gout", lvl)
        self._t("add", lvl, len(terms) - 1)
        out = np.zeros(self.slots)
        for c, s in terms:
            out = out + np.roll(c.values, -s)
        return PlainCiphertext(out, lvl)
