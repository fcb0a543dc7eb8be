"""Bootstrapping as the planner counts it: ModRaise, CoeffToSlot, EvalMod, SlotToCoeff.

The structure follows full-slot CKKS bootstrapping (Cheon et al. 2018; Bossuat et al. 2021):

* **ModRaise** of a level-0 ciphertext to the top level (``modraise``);
* **CoeffToSlot**: the homomorphic DFT split into ``cts_levels`` sparse linear transforms,
  each merging ``log2(slots) / cts_levels`` butterfly stages (``2^(k+1) - 1`` diagonals,
  BSGS with hoisted baby steps), then a conjugation that separates the real and imaginary
  halves into two ciphertexts;
* **EvalMod** on both halves: a Chebyshev approximation of the scaled cosine evaluated with
  :class:`fhe.circuits.PolynomialEvaluator` (counted by :mod:`aegis.trace`), then
  ``double_angle`` squarings;
* **SlotToCoeff**: the two halves recombined and ``stc_levels`` inverse transforms.

``client_aided`` replaces all of it by an explicit refresh round trip to the key owner
(DESIGN §4: a real protocol step, never a silent decrypt on the server).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from fhe.circuits.linear import bsgs_split
from fhe.params import CKKSParameters

from .prims import Tally, Work
from .trace import polynomial_work


class BootstrapError(ValueError):
    """The parameters cannot hold bootstrapping plus the next step."""


@dataclass(frozen=True)
class BootstrapConfig:
    """Bootstrapping shape.  ``mode`` is ``"ckks"`` (bootstrapping on the server) or ``"client_aided"``."""

    mode: str = "ckks"
    cts_levels: int = 3
    stc_levels: int = 3
    evalmod_degree: int = 31
    evalmod_interval: float = 12.0
    double_angle: int = 3

    MODES = ("ckks", "client_aided")

    def __post_init__(self) -> None:
        if self.mode not in self.MODES:
            raise BootstrapError(f"unknown bootstrap mode {self.mode!r}; valid: {', '.join(self.MODES)}")


class BootstrapModel:
    """Work and levels of one bootstrap for a parameter set."""

    def __init__(self, params: CKKSParameters, config: BootstrapConfig = BootstrapConfig()) -> None:
        self.params = params
        self.config = config

    def _dft_levels(self, levels: int) -> list[int]:
        """Butterfly stages merged at each DFT level (they sum to log2(slots))."""
        stages = int(math.log2(self.params.slots))
        base, extra = divmod(stages, levels)
        return [base + (1 if i < extra else 0) for i in range(levels)]

    def _dft(self, t: Tally, top: int, levels: int) -> tuple[int, list[int]]:
        rots: list[int] = []
        lvl = top
        stride = 1                                   # diagonals of merged stages sit at multiples of the stride
        for k in self._dft_levels(levels):
            diags = 2 ** (k + 1) - 1
            n1, n2 = bsgs_split(diags)
            t.add("hoist", lvl).add("hrot", lvl, n1 - 1).add("giant", lvl, n2 - 1).add("gout", lvl)
            t.add("pmul", lvl, diags).add("add", lvl, diags).add("rescale", lvl)
            rots += [b * stride for b in range(1, n1)] + [g * n1 * stride for g in range(1, n2)]
            stride <<= k
            lvl -= 1
        return lvl, rots

    @cached_property
    def parts(self) -> tuple[tuple[str, Work, int, int, tuple[int, ...]], ...]:
        """``(name, work per ciphertext, input level, output level, rotation steps)`` of the three phases."""
        if self.config.mode == "client_aided":
            return (("refresh_client", (), 0, self.params.max_level, ()),)
        c = self.config
        top = self.params.max_level
        t = Tally().add("modraise", 0)
        lvl, rots_cts = self._dft(t, top, c.cts_levels)
        t.add("rot", lvl).add("add", lvl, 2).add("pmul", lvl)          # conjugate: real / imaginary halves
        cts = ("boot_cts", t.freeze(), 0, lvl, tuple(rots_cts))
        em = Tally()
        w, out = polynomial_work(c.evalmod_degree, (-c.evalmod_interval, c.evalmod_interval), lvl)
        em.extend(w, 2)
        for _ in range(c.double_angle):
            em.add("tensor", out, 2).add("relin", out, 2).add("rescale", out, 2).add("pmul", out - 1, 2)
            out -= 1
        evalmod = ("boot_evalmod", em.freeze(), lvl, out, ())
        st = Tally().add("pmul", out).add("add", out)                   # recombine the halves
        end, rots_stc = self._dft(st, out, c.stc_levels)
        stc = ("boot_stc", st.freeze(), out, end, tuple(rots_stc))
        if end < 1:
            raise BootstrapError(
                f"{self.params.name}: bootstrapping needs {top - end} levels but the top level is {top}; "
                "use a preset with more levels (n16) or bootstrap='client_aided'")
        return cts, evalmod, stc

    @property
    def output_level(self) -> int:
        """Level of a freshly bootstrapped ciphertext."""
        return self.parts[-1][3]

    @property
    def depth(self) -> int:
        return self.params.max_level - self.output_level

    @property
    def uses_conjugation(self) -> bool:
        return self.config.mode == "ckks"
