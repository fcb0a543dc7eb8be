"""Primitive CKKS operations the planner counts, their cost, and their limb-parallel communication.

Every HE-program op carries a *work list* of ``(prim, level, count)``: how many of each
primitive it performs at which level (level = Q limbs - 1 of the ciphertext it works on).
The primitives are the units that differ in cost or in communication under limb
parallelism:

========== =================================================================================
prim       meaning (one ciphertext unless said)
========== =================================================================================
rot        a rotation or conjugation: automorphism + one key switch (ModUp, inner product,
           ModDown x2)
relin      relinearisation: one key switch
hoist      the ModUp shared by a group of hoisted rotations
hrot       one rotation inside a hoisted group (inner product, ModDown x2, automorphisms)
giant      a baby-step giant-step giant rotation (a key switch; limb-parallel designs
           aggregate these on the output instead of gathering the input)
gout       an output ciphertext that giant steps accumulate into (limb: one reduce-scatter)
tensor     ciphertext x ciphertext tensor product (relinearisation counted as ``relin``)
pmul       ciphertext x plaintext or constant
add        ciphertext + ciphertext (or + plaintext)
rescale    rescale of both polynomials
encode     encoding one plaintext at the level (on-the-fly weights)
modraise   bootstrapping's ModRaise of a level-0 ciphertext to the top level
keyexp     regenerating the uniform half of a seed-compressed evaluation key before one key switch
           (added by :mod:`aegis.keystore` when a plan keeps its keys seed-compressed)
========== =================================================================================

Costs come from :mod:`fhe.costs` (the one source of truth for bytes and modular operations);
this module only maps primitives onto them.
"""
from __future__ import annotations

from collections import Counter
from functools import lru_cache

from fhe import costs
from fhe.costs import Cost
from fhe.params import WORD_BYTES, CKKSParameters

PRIMS = ("rot", "relin", "hoist", "hrot", "giant", "gout", "tensor", "pmul", "add", "rescale", "encode", "modraise",
         "keyexp")
#: primitives that run one key switch's ModUp on their input (an input all-gather under limb parallelism)
MODUP_PRIMS = ("rot", "relin", "hoist")
#: primitives that run a key switch (ModUp or not): need an evaluation key
KEY_PRIMS = ("rot", "relin", "hrot", "giant")

Work = tuple[tuple[str, int, int], ...]


class Tally:
    """Accumulates ``(prim, level) -> count``."""

    __slots__ = ("c",)

    def __init__(self) -> None:
        self.c: Counter[tuple[str, int]] = Counter()

    def add(self, prim: str, level: int, count: int = 1) -> "Tally":
        if count:
            if prim not in PRIMS:
                raise ValueError(f"unknown primitive {prim!r}; valid: {', '.join(PRIMS)}")
            self.c[(prim, level)] += count
        return self

    def extend(self, work: Work, times: int = 1) -> "Tally":
        for p, lvl, n in work:
            self.c[(p, lvl)] += n * times
        return self

    def freeze(self) -> Work:
        return tuple(sorted((p, lvl, n) for (p, lvl), n in self.c.items() if n))


@lru_cache(maxsize=None)
def scaled(work: Work, times: int) -> Work:
    """``work`` repeated ``times`` times."""
    return tuple((p, lvl, n * times) for p, lvl, n in work if n * times)


@lru_cache(maxsize=None)
def merged(*works: Work) -> Work:
    """Several work lists summed into one (canonical order)."""
    t = Tally()
    for w in works:
        t.extend(w)
    return t.freeze()


@lru_cache(maxsize=None)
def prim_cost(params: CKKSParameters, prim: str, level: int) -> Cost:
    """Single-device cost of one primitive at ``level`` (from :mod:`fhe.costs`)."""
    n, l1 = params.n, level + 1
    if prim == "rot" or prim == "giant":
        return costs.rotate(params, level)
    if prim == "relin":
        return costs.key_switch(params, level) + costs.add(n, l1) * 2
    if prim == "hoist":
        return costs.mod_up(params, level)
    if prim == "hrot":
        return costs.hoisted_rotation_each(params, level)
    if prim == "gout":
        return Cost()
    if prim == "tensor":
        return costs.mul(n, l1) * 3 + costs.mac(n, l1)
    if prim == "pmul":
        return costs.pmul(params, level)
    if prim == "add":
        return costs.add(n, l1) * 2
    if prim == "rescale":
        return costs.rescale_total(n, l1) * 2
    if prim == "encode":
        # complex slots in (16 bytes each), one polynomial out; rounding + reduction, then NTT
        c = costs.ntt(n, l1)
        return Cost(params.slots * 16, c.bytes_written, c.mod_ops + n * l1, 1)
    if prim == "keyexp":
        return costs.key_expand(params, level)
    if prim == "modraise":
        top = params.max_level + 1
        c = costs.intt(n, 1) + costs.ntt(n, top)
        return (c + Cost(0, 0, n * top, 0)) * 2
    raise ValueError(f"unknown primitive {prim!r}; valid: {', '.join(PRIMS)}")


@lru_cache(maxsize=None)
def prim_cost_styled(params: CKKSParameters, prim: str, level: int, fused: bool = False,
                     word: costs.WordSize = costs.WORD64) -> Cost:
    """Cost of one primitive at ``level`` in a kernel style: unfused (our rings, :func:`prim_cost`, 64-bit
    words only) or fused (:class:`fhe.costs.FusedCosts`, any :class:`fhe.costs.WordSize`)."""
    if fused:
        return costs.FusedCosts(params, word, costs.FUSED_LAUNCHES).prim(prim, level)
    if word != costs.WORD64:
        raise ValueError("the unfused kernel model has 64-bit words only (word size needs fused kernels)")
    return prim_cost(params, prim, level)


def work_cost(params: CKKSParameters, work: Work) -> Cost:
    """Total single-device cost of a work list."""
    total = Cost()
    for p, lvl, n in work:
        total = total + prim_cost(params, p, lvl) * n
    return total


def key_switches(work: Work) -> int:
    """Key switches (each needs an evaluation key) in a work list."""
    return sum(n for p, _, n in work if p in KEY_PRIMS)


@lru_cache(maxsize=None)
def ct_bytes(params: CKKSParameters, level: int, cts: float = 1) -> int:
    """Bytes of ``cts`` ciphertexts at ``level`` (2 polynomials x (level+1) limbs x N words)."""
    return int(cts * costs.ciphertext_bytes(params.n, level + 1))


def limb_bytes(params: CKKSParameters) -> int:
    return params.n * WORD_BYTES


# ---- limb parallelism (BASELINES.md) ------------------------------------------------------
def own_limbs(limbs: int, devices: int, d: int) -> int:
    """Limbs of a ``limbs``-limb polynomial that device ``d`` owns (round robin: limb i on device i mod G)."""
    return len(range(d, limbs, devices))


def limb_share(limbs: int, devices: int, d: int) -> float:
    """Fraction of a ciphertext's limbs that device ``d`` holds."""
    return own_limbs(limbs, devices, d) / limbs
