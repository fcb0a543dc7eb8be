"""CKKS bootstrapping: ModRaise, CoeffToSlot, EvalMod, SlotToCoeff (full or sparse packing).

Pipeline for a ciphertext at level 0 holding ``m`` at scale ``D`` (after Cheon et al. 2018,
Chen-Chillotti-Song 2019, Bossuat et al. 2021/2022):

1. **Sparse-secret encapsulation + ModRaise.**  Key-switch to an ephemeral sparse secret s'
   (modulus q_0 * p_0 only), lift the two polynomials from q_0 to the whole chain Q_L, and
   key-switch back to s.  The result decrypts to ``t = D m + e + q_0 I`` with small integer
   I (|I| <= K with overwhelming probability); we declare its scale to be q_0, so its
   message is ``y = t / q_0``.
2. **SubSum** (sparse packing with n < N/2 slots only): log2(N / 2n) rotations that keep the
   coefficients of the subring the message lives in.
3. **CoeffToSlot**: ``cts_levels`` diagonal transforms (merged inverse butterflies, see
   :mod:`fhe.circuits.dft`), with 1/(2B) folded in, then one conjugation: the real and the
   imaginary parts go to two ciphertexts whose slots hold ``y_k / B`` (bit-reversed order).
4. **EvalMod** on both (:mod:`fhe.circuits.evalmod`): ``sin(2 pi y)``.
5. **SlotToCoeff**: recombine ``re + i im`` (a monomial product, no level) and apply
   ``stc_levels`` merged butterflies with ``q_0 / (2 pi D)`` folded in.

The output is at level ``L - cts_levels - EvalMod depth - stc_levels`` on that level's table
scale.  CoeffToSlot and EvalMod should run in the parameter set's high-scale region
(``boot_levels`` / ``boot_scale_bits`` of :class:`fhe.params.CKKSParameters`, composite
levels of two primes): CoeffToSlot and EvalMod carry y with its 10 bits below q_0 plus the
precision wanted, and SlotToCoeff's key switches would otherwise add their noise at the
application's 2^40 scale.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..ckks.context import Ciphertext
from ..ckks.evaluator import Evaluator
from ..params import MIN_SPARSE_HAMMING_WEIGHT, CKKSParameters, check_sparse_secret
from ..rlwe import keyswitch as ks
from .dft import DiagonalTransform, bsgs_shape, dft_matrices, scale_diagonals, tile_diagonals
from .evalmod import EvalModConfig, eval_mod


class BootstrapError(ValueError):
    """Bootstrapping cannot run with these parameters or keys (the message says what would)."""


@dataclass(frozen=True)
class BootstrapParameters:
    """Shape of bootstrapping.

    Attributes:
        cts_levels: levels (merged DFT factors) of CoeffToSlot.
        stc_levels: levels of SlotToCoeff.
        evalmod: the EvalMod approximation.
        hamming_weight: weight h of the ephemeral sparse secret (encapsulation); at least
            :data:`fhe.params.MIN_SPARSE_HAMMING_WEIGHT` (32) on secure parameter sets.
        slots: slots in use (a power of two <= N/2); None = N/2 (full packing).
    """

    cts_levels: int = 3
    stc_levels: int = 3
    evalmod: EvalModConfig = field(default_factory=EvalModConfig)
    hamming_weight: int = MIN_SPARSE_HAMMING_WEIGHT
    slots: int | None = None

    def used_slots(self, params: CKKSParameters) -> int:
        used = params.slots if self.slots is None else int(self.slots)
        if used < 2 or used > params.slots or used & (used - 1):
            raise BootstrapError(f"slots={self.slots} must be a power of two between 2 and N/2 = {params.slots}")
        return used

    @property
    def depth(self) -> int:
        """Levels one bootstrap consumes."""
        return self.cts_levels + self.evalmod.depth + self.stc_levels

    def levels(self, params: CKKSParameters) -> dict[str, int]:
        """Input levels of each phase and the output level, for ``params``."""
        top = params.max_level
        if params.boot_levels < self.high_scale_levels():
            raise BootstrapError(
                f"{params.name}: bootstrapping needs {self.high_scale_levels()} composite high-scale levels "
                f"(CoeffToSlot {self.cts_levels}, EvalMod {self.evalmod.depth}, SlotToCoeff's first), the parameter set "
                f"has {params.boot_levels}; use a bootstrapping preset (n16-boot, toy-n10-boot)")

        def down(lvl: int, steps: int) -> int:
            for _ in range(steps):
                lvl = params.level_below(lvl)
            return lvl

        em_in = down(top, self.cts_levels)
        em_out = down(em_in, self.evalmod.depth)
        out = down(em_out, self.stc_levels)
        if out < 1:
            raise BootstrapError(
                f"{params.name}: bootstrapping needs {self.depth} levels (CoeffToSlot {self.cts_levels}, EvalMod "
                f"{self.evalmod.depth}, SlotToCoeff {self.stc_levels}) plus one for the application, but the top "
                f"level is {top}; use a bootstrapping preset (n16-boot) or fewer DFT levels")
        return {"cts": top, "evalmod": em_in, "stc": em_out, "output": out}

    def high_scale_levels(self) -> int:
        """Composite high-scale levels a parameter set needs: CoeffToSlot, EvalMod and SlotToCoeff
        all run there (SlotToCoeff's last transform lands on the application's scale)."""
        return self.cts_levels + self.evalmod.depth + self.stc_levels

    def rotations(self, params: CKKSParameters) -> list[int]:
        """Every rotation step (slots) bootstrapping needs keys for (the conjugation key too)."""
        rots: set[int] = set(subsum_steps(self.used_slots(params), params.slots))
        for phase in transform_shapes(params, self):
            for sh in phase:
                rots |= set(sh.rotations)
        return sorted(rots)

    def key_request(self, params: CKKSParameters) -> dict:
        """Keyword arguments for :meth:`fhe.rlwe.keys.KeyGenerator.evaluation_keys` (client side).

        Raises :class:`fhe.params.SecurityError` for a sparse-secret weight below the floor on a secure set.
        """
        check_sparse_secret(params, self.hamming_weight)
        return {"rotations": self.rotations(params), "conjugate": True, "encapsulation": True,
                "hamming_weight": self.hamming_weight}


@dataclass(frozen=True)
class TransformShape:
    """One merged DFT factor as it runs: input level, diagonals, hoisted baby and giant rotations."""

    name: str
    level: int
    nnz: int
    babies: int
    giants: int
    rotations: tuple[int, ...]


@lru_cache(maxsize=None)
def transform_shapes(params: CKKSParameters, bp: BootstrapParameters) -> tuple[tuple[TransformShape, ...], ...]:
    """(CoeffToSlot, SlotToCoeff) factor shapes for ``params``: what :class:`Bootstrapper` runs,
    for cost models that must count the same operations (aegis' bootstrap nodes)."""
    used = bp.used_slots(params)
    lv = bp.levels(params)
    out = []
    for inverse, levels, name, lvl in ((True, bp.cts_levels, "CoeffToSlot", lv["cts"]),
                                       (False, bp.stc_levels, "SlotToCoeff", lv["stc"])):
        shapes = []
        for i, m in enumerate(dft_matrices(used, levels, inverse)):
            sh = bsgs_shape(sorted(tile_diagonals(m, used, params.slots)), params.slots)
            rots = tuple(sorted(set(sh.babies) | set(sh.giants(params.slots))))
            shapes.append(TransformShape(f"{name}[{i}]", lvl, len(m), len(sh.babies), len(sh.giants(params.slots)),
                                         rots))
            lvl = params.level_below(lvl)
        out.append(tuple(shapes))
    return tuple(out)


def subsum_steps(used: int, slots: int) -> list[int]:
    """Rotations that fold a ciphertext onto the subring of ``used``-slot packing."""
    return [used << i for i in range(int(math.log2(slots // used)))]


class Bootstrapper:
    """Server-side bootstrapping with evaluation keys only.

    Args:
        evaluator: an :class:`Evaluator` whose keys include ``bp.key_request(params)``.
        bp: the bootstrapping shape.
        precompute: encode every DFT diagonal now (memory: :attr:`plaintext_bytes`) rather
            than at each bootstrap.
    """

    def __init__(self, evaluator: Evaluator, bp: BootstrapParameters | None = None, precompute: bool = True) -> None:
        self.ev = evaluator
        self.bp = bp = bp or BootstrapParameters()
        p = self.params = evaluator.params
        self.used = bp.used_slots(p)
        self.lv = bp.levels(p)
        q0 = float(p.q_primes[0])
        self.input_scale = p.scale_at(0)
        gap = p.slots // self.used                        # SubSum multiplies kept coefficients by N / 2n
        cts_total = 1.0 / (2.0 * bp.evalmod.bound * gap)
        stc_total = q0 / (2 * math.pi * self.input_scale)
        self.cts = self._transforms(True, bp.cts_levels, cts_total, "CoeffToSlot")
        self.stc = self._transforms(False, bp.stc_levels, stc_total, "SlotToCoeff")
        self.plaintext_bytes = 0
        #: seconds per phase of the last :meth:`bootstrap` call (empty before the first)
        self.phase_seconds: dict[str, float] = {}
        if precompute:
            scale = q0
            lvl = self.lv["cts"]
            for t in self.cts:
                self.plaintext_bytes += t.prepare(lvl, scale)
                lvl = p.level_below(lvl)
                scale = p.scale_at(lvl)
            lvl = self.lv["stc"]
            for t in self.stc:
                self.plaintext_bytes += t.prepare(lvl, p.scale_at(lvl))
                lvl = p.level_below(lvl)

    def _transforms(self, inverse: bool, levels: int, total: float, name: str) -> list[DiagonalTransform]:
        """The merged factors with the constant ``total`` folded where it costs least precision:
        a shrinking constant into the last factor, a growing one into the first (noise a
        transform adds is absolute, so the message should be large when it is added)."""
        mats = dft_matrices(self.used, levels, inverse)
        at = len(mats) - 1 if total < 1 else 0
        mats[at] = scale_diagonals(mats[at], total)
        return [DiagonalTransform(self.ev, tile_diagonals(m, self.used, self.params.slots), f"{name}[{i}]")
                for i, m in enumerate(mats)]

    # ---- phases --------------------------------------------------------------------------
    def mod_raise(self, ct: Ciphertext) -> Ciphertext:
        """Level-0 ciphertext -> top level, decrypting to ``t = D m + e + q_0 I`` at declared scale q_0."""
        ev, p, ring = self.ev, self.params, self.ev.ring
        enc = ev.keys.encapsulation
        if enc is None:
            raise BootstrapError("the evaluation keys hold no encapsulation keys; the client must generate them "
                                 "(KeyGenerator.evaluation_keys(**BootstrapParameters().key_request(params)))")
        if enc.hamming_weight != self.bp.hamming_weight:
            raise BootstrapError(f"the encapsulation keys use a weight-{enc.hamming_weight} sparse secret, the "
                                 f"bootstrapping parameters ask for {self.bp.hamming_weight}; generate the keys "
                                 "with BootstrapParameters.key_request(params)")
        if ct.level > 0:
            ct = ev.adjust_level(ct, 0)
        elif abs(ct.scale - self.input_scale) > 1e-9 * self.input_scale:
            raise BootstrapError(f"a level-0 input must carry the level-0 scale {self.input_scale:.6g}, "
                                 f"not {ct.scale:.6g}; bring it down with adjust_level from a higher level")
        if len(ct.parts) != 2:
            raise BootstrapError("relinearise before bootstrapping")
        c0, c1 = ct.parts
        k0, k1 = ks.gadget_key_switch(ring, p, c1, enc.to_sparse)               # s -> sparse s'
        c0 = ring.add(c0, k0, (0,))
        top = p.max_level
        raised = [self._lift(x, top) for x in (c0, k1)]
        k0, k1 = ks.key_switch(ring, p, raised[1], enc.to_dense, top)          # s' -> s
        idx = p.q_indices(top)
        return Ciphertext([ring.add(raised[0], k0, idx), k1], top, float(p.q_primes[0]))

    def _lift(self, x0, top: int):
        """Centred lift of an NTT-form q_0 limb to every limb of Q_top (NTT form)."""
        ring, p = self.ev.ring, self.params
        xp = ring.xp
        q0 = p.q_primes[0]
        c = ring.intt(x0, (0,)).astype(xp.int64)[0]
        c = xp.where(c > q0 // 2, c - q0, c)
        idx = p.q_indices(top)
        q = xp.asarray(np.array([p.primes[i] for i in idx], dtype=np.int64).reshape(-1, 1))
        return ring.ntt(xp.mod(c[None, :], q).astype(xp.uint64), idx)

    def subsum(self, ct: Ciphertext) -> Ciphertext:
        """Sparse packing: sum the Galois conjugates that fix the used subring (identity when full)."""
        for step in subsum_steps(self.used, self.params.slots):
            ct = self.ev.add(ct, self.ev.rotate(ct, step))
        return ct

    def coeff_to_slot(self, ct: Ciphertext) -> tuple[Ciphertext, Ciphertext]:
        """Raised ciphertext -> (real, imaginary) ciphertexts with slots ``y_k / B`` (bit-reversed)."""
        out: tuple[Ciphertext, ...] = (ct,)
        for stage in range(len(self.cts)):
            out = self.coeff_to_slot_stage(out[0], stage)
        return out[0], out[1]

    def coeff_to_slot_stage(self, ct: Ciphertext, stage: int) -> tuple[Ciphertext, ...]:
        """CoeffToSlot factor ``stage`` alone: one ciphertext, or (real, imaginary) after the last factor."""
        t = self.cts[stage]
        if stage < len(self.cts) - 1:
            return (t.apply(ct),)
        ct = t.apply(ct, rescale=False)             # conjugate before the rescale: its key-switch noise
        conj = self.ev.conjugate(ct)                # is then 2^-50 of the message instead of 2^-35
        ev = self.ev
        return t.finish(ev.add(ct, conj)), t.finish(ev.mul_i(ev.sub(conj, ct)))

    def eval_mod(self, ct: Ciphertext) -> Ciphertext:
        """``sin(2 pi y)`` slot-wise (see :func:`fhe.circuits.evalmod.eval_mod`)."""
        return eval_mod(self.ev, ct, self.bp.evalmod)

    def slot_to_coeff(self, re: Ciphertext, im: Ciphertext) -> Ciphertext:
        """Recombine the halves and return to the coefficient encoding: the refreshed message."""
        ct = self.join_halves(re, im)
        for stage in range(len(self.stc)):
            ct = self.slot_to_coeff_stage(ct, stage)
        return ct

    def join_halves(self, re: Ciphertext, im: Ciphertext) -> Ciphertext:
        """``re + i im``: the input of SlotToCoeff."""
        return self.ev.add(re, self.ev.mul_i(im))

    def slot_to_coeff_stage(self, ct: Ciphertext, stage: int) -> Ciphertext:
        """SlotToCoeff factor ``stage`` alone."""
        return self.stc[stage].apply(ct)

    def bootstrap(self, ct: Ciphertext) -> Ciphertext:
        """A fresh ciphertext of the same message at level ``levels_after``.

        :attr:`phase_seconds` then holds the wall time of each phase of this call (device-synchronised):
        ``mod_raise``, ``subsum``, ``coeff_to_slot``, ``eval_mod`` (both halves), ``slot_to_coeff``.
        """
        sync = self.ev.ctx.backend.synchronize
        times: dict[str, float] = {}
        t0 = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal t0
            sync()
            now = time.perf_counter()
            times[name] = times.get(name, 0.0) + now - t0
            t0 = now

        raised = self.mod_raise(ct)
        lap("mod_raise")
        raised = self.subsum(raised)
        lap("subsum")
        re, im = self.coeff_to_slot(raised)
        lap("coeff_to_slot")
        re, im = self.eval_mod(re), self.eval_mod(im)
        lap("eval_mod")
        out = self.slot_to_coeff(re, im)
        lap("slot_to_coeff")
        self.phase_seconds = times
        return out

    @property
    def levels_after(self) -> int:
        """Level of a bootstrapped ciphertext: the multiplications left for the application."""
        return self.lv["output"]


def bitrev_indices(n: int) -> np.ndarray:
    """``i -> bit-reversed i`` on log2(n) bits (the slot order CoeffToSlot leaves coefficients in)."""
    bits = n.bit_length() - 1
    i = np.arange(n)
    r = np.zeros(n, dtype=np.int64)
    for b in range(bits):
        r |= ((i >> b) & 1) << (bits - 1 - b)
    return r


__all__ = ["BootstrapParameters", "Bootstrapper", "BootstrapError", "TransformShape", "bitrev_indices",
           "subsum_steps", "transform_shapes"]
