"""Bootstrapping as the planner counts it: the operations :mod:`fhe.circuits.bootstrapping` runs.

Phases (ops per bootstrapped tile: one per CoeffToSlot / SlotToCoeff factor, one for EvalMod):

* ``boot_cts``: sparse-secret encapsulation (a key switch at level 0 and one at the top),
  ModRaise (``modraise``), SubSum rotations under sparse packing, then the CoeffToSlot
  factors of :func:`fhe.circuits.bootstrapping.transform_shapes` (hoisted baby steps, giant
  steps, one product per diagonal, a rescale -- two primes in the composite region) and the
  conjugation that splits real and imaginary halves before the last rescale;
* ``boot_evalmod``: on both halves, the EvalMod Chebyshev series (traced through the real
  :class:`fhe.circuits.PolynomialEvaluator` by :mod:`aegis.trace`) and the double angles;
* ``boot_stc``: the halves recombined (a monomial product and an addition) and the
  SlotToCoeff factors.

``client_aided`` replaces all of it by an explicit refresh round trip to the key owner
(DESIGN §4: a real protocol step, never a silent decrypt on the server).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from fhe.circuits.bootstrapping import BootstrapError as _FheBootstrapError
from fhe.circuits.bootstrapping import BootstrapParameters, subsum_steps, transform_shapes
from fhe.circuits.evalmod import EvalModConfig
from fhe.params import MIN_SPARSE_HAMMING_WEIGHT, CKKSParameters

from .prims import Tally, Work
from .trace import polynomial_work


class BootstrapError(ValueError):
    """The parameters cannot hold bootstrapping plus the next step."""


@dataclass(frozen=True)
class BootstrapConfig:
    """Bootstrapping shape.  ``mode`` is ``"ckks"`` (bootstrapping on the server) or ``"client_aided"``.

    The other fields are those of :class:`fhe.circuits.bootstrapping.BootstrapParameters`.
    """

    mode: str = "ckks"
    cts_levels: int = 3
    stc_levels: int = 3
    evalmod_degree: int = 39
    k_bound: int = 16
    double_angle: int = 3
    hamming_weight: int = MIN_SPARSE_HAMMING_WEIGHT   # the floor on secure sets (fhe.params)

    MODES = ("ckks", "client_aided")

    def __post_init__(self) -> None:
        if self.mode not in self.MODES:
            raise BootstrapError(f"unknown bootstrap mode {self.mode!r}; valid: {', '.join(self.MODES)}")

    def circuit(self) -> BootstrapParameters:
        """The fhe bootstrapping parameters this configuration stands for."""
        return BootstrapParameters(self.cts_levels, self.stc_levels,
                                   EvalModConfig(self.k_bound, self.double_angle, self.evalmod_degree),
                                   self.hamming_weight)


def _rescale(t: Tally, params: CKKSParameters, level: int, times: int = 1) -> int:
    """``times`` rescales at ``level`` (two primes each in a composite region); returns the level below."""
    for i in range(params.rescale_width(level)):
        t.add("rescale", level - i, times)
    return params.level_below(level)


def _transform(t: Tally, params: CKKSParameters, sh, split: bool) -> tuple[int, list[int]]:
    """One CoeffToSlot/SlotToCoeff factor into ``t``; (level after it, its rotation steps)."""
    lvl = sh.level
    t.add("hoist", lvl).add("hrot", lvl, sh.babies).add("giant", lvl, sh.giants).add("gout", lvl)
    t.add("pmul", lvl, sh.nnz).add("add", lvl, sh.nnz)
    if split:
        # conjugation before the rescale; real = x + conj x, imaginary = i (conj x - x)
        t.add("rot", lvl).add("add", lvl, 2).add("pmul", lvl)
        return _rescale(t, params, lvl, 2), list(sh.rotations)
    return _rescale(t, params, lvl), list(sh.rotations)


class BootstrapModel:
    """Work and levels of one bootstrap for a parameter set."""

    def __init__(self, params: CKKSParameters, config: BootstrapConfig = BootstrapConfig()) -> None:
        self.params = params
        self.config = config

    @cached_property
    def parts(self) -> tuple[tuple[str, Work, int, int, tuple[int, ...]], ...]:
        """``(name, work per ciphertext, input level, output level, rotation steps)`` of every stage, in order:
        CoeffToSlot one factor per stage (the first also encapsulates, raises and sums; the last splits the
        halves), EvalMod, SlotToCoeff one factor per stage (the first also recombines the halves).  A stage is
        one op: its keys are the ones that op must hold at once (:mod:`aegis.keystore`)."""
        p = self.params
        if self.config.mode == "client_aided":
            return (("refresh_client", (), 0, p.application_top, ()),)
        bp = self.config.circuit()
        try:
            lv = bp.levels(p)
            cts_shapes, stc_shapes = transform_shapes(p, bp)
        except _FheBootstrapError as exc:
            raise BootstrapError(f"{exc}; or plan with bootstrap='client_aided'") from exc
        top = p.max_level
        out: list[tuple[str, Work, int, int, tuple[int, ...]]] = []
        t = Tally().add("relin", 0).add("modraise", 0).add("relin", top)
        steps = subsum_steps(bp.used_slots(p), p.slots)
        t.add("rot", top, len(steps)).add("add", top, len(steps))
        rots = list(steps)
        lin = 0
        for i, sh in enumerate(cts_shapes):
            lout, r = _transform(t, p, sh, split=i == len(cts_shapes) - 1)
            out.append(("boot_cts", t.freeze(), lin, lout, tuple(rots + r)))
            t, rots, lin = Tally(), [], lout
        if lin != lv["evalmod"]:
            raise BootstrapError(f"CoeffToSlot ends at level {lin}, the circuit expects {lv['evalmod']}")  # pragma: no cover
        em = Tally()
        w, lvl = polynomial_work(bp.evalmod.degree, (-1.0, 1.0), lv["evalmod"], p)
        em.extend(w, 2)
        for _ in range(bp.evalmod.double_angle):
            em.add("tensor", lvl, 2).add("relin", lvl, 2).add("pmul", lvl, 2)
            lvl = _rescale(em, p, lvl, 2)
        if lvl != lv["stc"]:
            raise BootstrapError(f"EvalMod ends at level {lvl}, the circuit expects {lv['stc']}")   # pragma: no cover
        out.append(("boot_evalmod", em.freeze(), lv["evalmod"], lvl, ()))
        t = Tally().add("pmul", lvl).add("add", lvl)                   # recombine the halves
        lin = lvl
        for sh in stc_shapes:
            lout, r = _transform(t, p, sh, split=False)
            out.append(("boot_stc", t.freeze(), lin, lout, tuple(r)))
            t, lin = Tally(), lout
        return tuple(out)

    def stages(self, name: str) -> int:
        """How many stages (ops) phase ``name`` has."""
        return sum(1 for n, *_ in self.parts if n == name)

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
