"""Count what an fhe circuit does without running it: an Evaluator-shaped tracer.

:class:`TraceEvaluator` implements the Evaluator methods that :mod:`fhe.circuits`
call, on :class:`SymbolicCiphertext` (a level and nothing else), and records each
primitive with its level in a :class:`aegis.prims.Tally`.  Running the real
:class:`fhe.circuits.PolynomialEvaluator` on it gives the exact operation counts and
depth of a polynomial evaluation, so the planner never keeps a second copy of the
algorithm.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fhe.circuits.polynomial import PolynomialEvaluator
from fhe.ckks.evaluator import LevelError
from fhe.params import CKKSParameters

from .prims import Tally, Work


@dataclass
class SymbolicCiphertext:
    """A ciphertext of which only the level (and part count) is known."""

    level: int
    parts: int = 2


class _UnitLevels:
    """Level rules of a chain without composite levels (every rescale drops one prime)."""

    @staticmethod
    def depth_left(level: int) -> int:
        return level

    @staticmethod
    def level_below(level: int) -> int:
        return level - 1

    @staticmethod
    def level_above(level: int) -> int:
        return level + 1

    @staticmethod
    def rescale_width(level: int) -> int:
        return 1


class TraceEvaluator:
    """Records primitives instead of computing; method names and level rules follow fhe.ckks.Evaluator.

    With ``params`` the level rules are that parameter set's (composite levels of a
    bootstrapping region rescale by two primes: two ``rescale`` primitives, two levels).
    """

    def __init__(self, params: CKKSParameters | None = None) -> None:
        self.tally = Tally()
        self.params = params if params is not None else _UnitLevels()

    def _t(self, prim: str, level: int, count: int = 1) -> None:
        self.tally.add(prim, level, count)

    def adjust_level(self, ct: SymbolicCiphertext, level: int) -> SymbolicCiphertext:
        if level == ct.level:
            return ct
        if level > ct.level:
            raise LevelError(f"cannot raise a ciphertext from level {ct.level} to {level}")
        up = self.params.level_above(level)
        self._t("pmul", up)
        self._rescale_prims(up)
        return SymbolicCiphertext(level, ct.parts)

    def _rescale_prims(self, level: int) -> int:
        for i in range(self.params.rescale_width(level)):
            self._t("rescale", level - i)
        return self.params.level_below(level)

    def _align(self, a: SymbolicCiphertext, b: SymbolicCiphertext) -> tuple[SymbolicCiphertext, SymbolicCiphertext]:
        lvl = min(a.level, b.level)
        return self.adjust_level(a, lvl), self.adjust_level(b, lvl)

    def add(self, a: SymbolicCiphertext, b: SymbolicCiphertext) -> SymbolicCiphertext:
        a, b = self._align(a, b)
        self._t("add", a.level)
        return SymbolicCiphertext(a.level, max(a.parts, b.parts))

    def sub(self, a: SymbolicCiphertext, b: SymbolicCiphertext) -> SymbolicCiphertext:
        return self.add(a, b)

    def add_const(self, ct: SymbolicCiphertext, c: float) -> SymbolicCiphertext:
        return ct   # one limb-wise add on c0: negligible, not a primitive

    def mul_const(self, ct: SymbolicCiphertext, c: float) -> SymbolicCiphertext:
        self._t("pmul", ct.level)
        return ct

    def mul_int(self, ct: SymbolicCiphertext, k: int) -> SymbolicCiphertext:
        self._t("pmul", ct.level)
        return ct

    def rescale(self, ct: SymbolicCiphertext) -> SymbolicCiphertext:
        if ct.level == 0:
            raise LevelError("cannot rescale at level 0")
        return SymbolicCiphertext(self._rescale_prims(ct.level), ct.parts)

    def mul_const_rescale(self, ct: SymbolicCiphertext, c: float) -> SymbolicCiphertext:
        return self.rescale(self.mul_const(ct, c))

    def mul_relin_rescale(self, a: SymbolicCiphertext, b: SymbolicCiphertext) -> SymbolicCiphertext:
        a, b = self._align(a, b)
        self._t("tensor", a.level)
        self._t("relin", a.level)
        return self.rescale(SymbolicCiphertext(a.level))


@lru_cache(maxsize=None)
def polynomial_work(degree: int, interval: tuple[float, float], level: int,
                    params: CKKSParameters | None = None) -> tuple[Work, int]:
    """Primitives and output level of a generic degree-``degree`` Chebyshev series evaluated from ``level``.

    A generic series (all coefficients non-zero) is the worst case the executor may meet.
    ``params`` supplies composite-level rules (bootstrapping's EvalMod region).
    """
    ev = TraceEvaluator(params)
    # generic coefficients: no term cancels in the Chebyshev divisions (all-ones series would)
    coeffs = 1.0 + np.arange(degree + 1) / (degree + 1.0) ** 2
    out = PolynomialEvaluator(ev).evaluate(SymbolicCiphertext(level), coeffs, interval)
    return ev.tally.freeze(), out.level
