"""Limb-parallel CKKS: one ciphertext's Q limbs spread over devices (BASELINES.md, limb parallelism).

Device ``pos`` of a group of G holds limbs ``k`` with ``k % G == pos`` of every ciphertext
(:class:`LimbCiphertext`); the special primes P are computed on every device.  The
participants' worker threads run the same op together; :class:`LimbGroup` lets them
exchange rows (a barrier-synchronised mailbox), and every row that crosses devices is
counted by the communicator:

* key switching with *input broadcast*: INTT of the own limbs, one all-gather of the
  coefficient rows, ModUp of every digit onto the own limbs and P, inner product, ModDown
  -- bit-identical to the single-device result;
* hoisted rotations: one all-gather and one ModUp for the group;
* giant steps with *output aggregation* (:meth:`LimbEvaluator.rotate_sum`): each device
  converts only its own limbs of each digit (the others zero: fast base conversion is a
  sum over source limbs), accumulates the key products of all giant steps over all limbs,
  runs one ModDown and the partial results are reduce-scattered (sum mod q);
* rescale: the owner of the dropped limb shares it in coefficient form.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fhe.ckks.context import Ciphertext, Plaintext
from fhe.ckks.evaluator import LevelError
from fhe.rlwe.keys import galois_element

if TYPE_CHECKING:                     # the counter only: exec.comm imports this module's shards, not the reverse
    from .comm import Communicator


def own_limb_indices(level: int, group: int, pos: int) -> tuple[int, ...]:
    """Q limb indices device ``pos`` of ``group`` holds at ``level``."""
    return tuple(k for k in range(level + 1) if k % group == pos)


@dataclass
class LimbCiphertext:
    """The own limbs of a ciphertext: ``parts[i]`` has shape ``(len(own), N)`` (NTT form)."""

    parts: list[Any]
    level: int
    scale: float
    own: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(sum(p.nbytes for p in self.parts))


def shard(ct: Ciphertext, group: int, pos: int) -> LimbCiphertext:
    """The limbs of a whole ciphertext that device ``pos`` of ``group`` owns."""
    own = own_limb_indices(ct.level, group, pos)
    return LimbCiphertext([p[list(own)].copy() for p in ct.parts], ct.level, ct.scale, own)


def assemble(shards: list[LimbCiphertext], n: int, xp: Any = np) -> Ciphertext:
    """A whole ciphertext from the shards of every participant."""
    lvl = shards[0].level
    parts = []
    for i in range(len(shards[0].parts)):
        full = xp.zeros((lvl + 1, n), dtype=xp.uint64)
        for s in shards:
            if s.own:
                full[list(s.own)] = s.parts[i]
        parts.append(full)
    return Ciphertext(parts, lvl, shards[0].scale)


def payload_bytes(value: Any) -> int:
    """Bytes of the arrays in ``value`` (an array, or a list/tuple of arrays and ``None``)."""
    if value is None:
        return 0
    if isinstance(value, (list, tuple)):
        return sum(payload_bytes(v) for v in value)
    return int(getattr(value, "nbytes", 0))


class LimbGroup:
    """Participants of limb-split ops (threads of one process): a mailbox where each posts a value and reads
    everyone's.

    The collectives a :class:`LimbEvaluator` calls -- :meth:`allgather`, :meth:`alltoall`, :meth:`bcast` --
    count every array that crosses devices at its sender, per (source, destination, phase), in the
    communicator's counter.  ``exec.mpi_group.MPILimbGroup`` implements the same calls between processes.
    """

    def __init__(self, devices: tuple[int, ...], comm: Communicator) -> None:
        self.devices = devices
        self.comm = comm
        self._barrier = threading.Barrier(len(devices))
        self._box: dict[int, Any] = {}

    def exchange(self, pos: int, value: Any) -> list[Any]:
        """Every participant's ``value`` (not counted: client traffic and calibration use it)."""
        self._box[pos] = value
        self._barrier.wait()
        out = [self._box[p] for p in range(len(self.devices))]
        self._barrier.wait()
        return out

    def _count(self, src_pos: int, dst_pos: int, phase: str, value: Any) -> None:
        self.comm._count(self.devices[src_pos], self.devices[dst_pos], phase, payload_bytes(value))

    def allgather(self, pos: int, value: Any, phase: str) -> list[Any]:
        """Every participant's ``value``; this one's is sent to every other participant."""
        for q in range(len(self.devices)):
            if q != pos:
                self._count(pos, q, phase, value)
        return self.exchange(pos, value)

    def alltoall(self, pos: int, pieces: list[Any], phase: str) -> list[Any]:
        """``pieces[q]`` goes to participant q; returns what every participant sent this one."""
        for q, v in enumerate(pieces):
            if q != pos:
                self._count(pos, q, phase, v)
        got = self.exchange(pos, pieces)
        return [g[pos] for g in got]

    def bcast(self, pos: int, root: int, value: Any, phase: str) -> Any:
        """Participant ``root``'s ``value`` on every participant."""
        if pos == root:
            for q in range(len(self.devices)):
                if q != pos:
                    self._count(pos, q, phase, value)
        return self.exchange(pos, value if pos == root else None)[root]

    def abort(self) -> None:
        self._barrier.abort()


class LimbEvaluator:
    """The Evaluator interface on :class:`LimbCiphertext` for device ``pos`` of ``group``."""

    def __init__(self, ctx: Any, keys: Any, group: LimbGroup, pos: int) -> None:
        from fhe.ckks.encoder import Encoder

        self.ctx, self.params, self.ring = ctx, ctx.params, ctx.ring
        self.keys = keys
        self.group, self.pos = group, pos
        self.G = len(group.devices)
        self.device = group.devices[pos]
        self.encoder = Encoder(ctx)
        self.phase = ""
        self.xp = ctx.xp

    # ---- helpers -------------------------------------------------------------------------------
    def _all_gather_rows(self, rows: Any, own: tuple[int, ...], level: int) -> Any:
        """Every device's coefficient rows -> the whole (level+1, N) matrix (counted per received row)."""
        got = self.group.allgather(self.pos, rows, self.phase)
        full = self.xp.empty((level + 1, self.params.n), dtype=self.xp.uint64)
        for p, r in enumerate(got):
            idx = own_limb_indices(level, self.G, p)
            if idx:
                full[list(idx)] = r if p == self.pos else r.copy()
        return full

    def _plain_rows(self, pt: Plaintext | Any, ct: LimbCiphertext, scale: float | None) -> tuple[Any, float]:
        if not isinstance(pt, Plaintext):
            pt = self.encoder.encode(pt, level=ct.level, scale=scale if scale is not None else ct.scale)
        if pt.level < ct.level:
            raise LevelError(f"plaintext at level {pt.level} is below the ciphertext's level {ct.level}")
        return pt.data[list(ct.own)], pt.scale

    def _consts(self, value: int, own: tuple[int, ...]) -> list[int]:
        return [value % self.params.primes[i] for i in own]

    # ---- additive --------------------------------------------------------------------------------
    def _aligned(self, a: LimbCiphertext, b: LimbCiphertext) -> tuple[LimbCiphertext, LimbCiphertext]:
        lvl = min(a.level, b.level)
        return self.adjust_level(a, lvl), self.adjust_level(b, lvl)

    def add(self, a: LimbCiphertext, b: LimbCiphertext) -> LimbCiphertext:
        a, b = self._aligned(a, b)
        parts = [self.ring.add(x, y, a.own) for x, y in zip(a.parts, b.parts)]
        longer = a.parts if len(a.parts) > len(b.parts) else b.parts
        return LimbCiphertext(parts + longer[len(parts):], a.level, a.scale, a.own)

    def neg(self, a: LimbCiphertext) -> LimbCiphertext:
        return LimbCiphertext([self.ring.neg(p, a.own) for p in a.parts], a.level, a.scale, a.own)

    def sub(self, a: LimbCiphertext, b: LimbCiphertext) -> LimbCiphertext:
        return self.add(a, self.neg(b))

    def add_plain(self, ct: LimbCiphertext, pt: Plaintext | Any) -> LimbCiphertext:
        rows, _ = self._plain_rows(pt, ct, None)
        return LimbCiphertext([self.ring.add(ct.parts[0], rows, ct.own)] + ct.parts[1:], ct.level, ct.scale, ct.own)

    def add_const(self, ct: LimbCiphertext, c: float) -> LimbCiphertext:
        v = int(round(c * ct.scale))
        consts = self.xp.asarray(np.array(self._consts(v, ct.own), dtype=np.uint64).reshape(-1, 1))
        c0 = self.ring.add(ct.parts[0], self.xp.broadcast_to(consts, ct.parts[0].shape), ct.own)
        return LimbCiphertext([c0] + ct.parts[1:], ct.level, ct.scale, ct.own)

    # ---- multiplicative ------------------------------------------------------------------------
    def mul_plain(self, ct: LimbCiphertext, pt: Plaintext | Any) -> LimbCiphertext:
        rows, s = self._plain_rows(pt, ct, self.params.scale_at(ct.level))
        return LimbCiphertext([self.ring.mul(p, rows, ct.own) for p in ct.parts], ct.level, ct.scale * s, ct.own)

    def mul_const(self, ct: LimbCiphertext, c: float) -> LimbCiphertext:
        s = self.params.scale_at(ct.level)
        v = int(round(c * s))
        return LimbCiphertext([self.ring.mul_scalar(p, [v] * len(ct.own), ct.own) for p in ct.parts], ct.level,
                              ct.scale * s, ct.own)

    def mul_int(self, ct: LimbCiphertext, k: int) -> LimbCiphertext:
        return LimbCiphertext([self.ring.mul_scalar(p, [k] * len(ct.own), ct.own) for p in ct.parts], ct.level,
                              ct.scale, ct.own)

    def mul(self, a: LimbCiphertext, b: LimbCiphertext) -> LimbCiphertext:
        a, b = self._aligned(a, b)
        r, o = self.ring, a.own
        d0 = r.mul(a.parts[0], b.parts[0], o)
        d1 = r.mac(r.mul(a.parts[0], b.parts[1], o), a.parts[1], b.parts[0], o)
        d2 = r.mul(a.parts[1], b.parts[1], o)
        return LimbCiphertext([d0, d1, d2], a.level, a.scale * b.scale, o)

    def relinearize(self, ct: LimbCiphertext) -> LimbCiphertext:
        if len(ct.parts) == 2:
            return ct
        k0, k1 = self._key_switch(ct.parts[2], ct.level, self.keys.relin, ct.own)
        return LimbCiphertext([self.ring.add(ct.parts[0], k0, ct.own), self.ring.add(ct.parts[1], k1, ct.own)],
                              ct.level, ct.scale, ct.own)

    def rescale(self, ct: LimbCiphertext) -> LimbCiphertext:
        """The owner of limb ``level`` shares it (coefficient form, both parts); everyone divides."""
        lvl = ct.level
        if lvl == 0:
            raise LevelError("cannot rescale a ciphertext at level 0")
        owner = lvl % self.G
        tails = None
        if self.pos == owner:
            k = ct.own.index(lvl)
            tails = [self.ring.rescale_tail(p[k: k + 1], lvl) for p in ct.parts]
        got = self.group.bcast(self.pos, owner, tails, self.phase)
        keep = tuple(i for i in ct.own if i != lvl)
        rows = [i for i, k in enumerate(ct.own) if k != lvl]
        parts = [self.ring.rescale_keep(p[rows], t, keep, lvl) for p, t in zip(ct.parts, got)]
        return LimbCiphertext(parts, lvl - 1, ct.scale / self.params.q_primes[lvl], keep)

    def adjust_level(self, ct: LimbCiphertext, level: int) -> LimbCiphertext:
        if level == ct.level:
            return ct
        if level > ct.level:
            raise LevelError(f"cannot raise a ciphertext from level {ct.level} to {level}")
        own = tuple(i for i in ct.own if i <= level + 1)
        rows = [i for i, k in enumerate(ct.own) if k <= level + 1]
        dropped = LimbCiphertext([p[rows] for p in ct.parts], level + 1, ct.scale, own)
        q = self.params.q_primes[level + 1]
        factor = int(round(self.params.scale_at(level) * q / ct.scale))
        parts = [self.ring.mul_scalar(p, [factor] * len(own), own) for p in dropped.parts]
        return self.rescale(LimbCiphertext(parts, level + 1, ct.scale * factor, own))

    def mul_relin_rescale(self, a: LimbCiphertext, b: LimbCiphertext) -> LimbCiphertext:
        return self.rescale(self.relinearize(self.mul(a, b)))

    def mul_plain_rescale(self, ct: LimbCiphertext, pt: Any) -> LimbCiphertext:
        return self.rescale(self.mul_plain(ct, pt))

    def mul_const_rescale(self, ct: LimbCiphertext, c: float) -> LimbCiphertext:
        return self.rescale(self.mul_const(ct, c))

    # ---- key switching ---------------------------------------------------------------------------
    def _mod_up(self, c_own: Any, level: int, own: tuple[int, ...]) -> list[tuple[Any, Any]]:
        """All-gather the coefficient rows once; extend every digit onto the own limbs and P."""
        r, p = self.ring, self.params
        full = self._all_gather_rows(r.intt(c_own, own), own, level)
        exts = []
        for d in p.digits(level):
            target = tuple(i for i in own if i not in d) + p.p_indices
            conv = r.ntt(r.base_convert(full[list(d)], d, target), target)
            q_rows = self.xp.empty((len(own), p.n), dtype=self.xp.uint64)
            for j, i in enumerate(own):
                q_rows[j] = c_own[j] if i in d else conv[target.index(i)]
            exts.append((q_rows, conv[len(target) - p.p_count:]))
        return exts

    def _inner_mod_down(self, exts: list[tuple[Any, Any]], key: Any, level: int, own: tuple[int, ...]) -> tuple[Any, Any]:
        r, p = self.ring, self.params
        P = p.p_indices
        out = []
        for kq, kp in ((key.bq, key.bp), (key.aq, key.ap)):
            acc_q = acc_p = None
            for j, (eq, ep) in enumerate(exts):
                kqj = kq[j][list(own)]
                if acc_q is None:
                    acc_q, acc_p = r.mul(eq, kqj, own), r.mul(ep, kp[j], P)
                else:
                    acc_q, acc_p = r.mac(acc_q, eq, kqj, own), r.mac(acc_p, ep, kp[j], P)
            conv = r.ntt(r.base_convert(r.intt(acc_p, P), P, own), own) if own else acc_q
            p_inv = [pow(p.p_product % p.primes[i], -1, p.primes[i]) for i in own]
            out.append(r.mul_scalar(r.sub(acc_q, conv, own), p_inv, own) if own else acc_q)
        return out[0], out[1]

    def mod_up(self, ct: LimbCiphertext) -> list[tuple[Any, Any]]:
        """The ModUp of ``ct``'s second part that a group of hoisted rotations shares (one all-gather)."""
        return self._mod_up(ct.parts[1], ct.level, ct.own)

    def _key_switch(self, c_own: Any, level: int, key: Any, own: tuple[int, ...]) -> tuple[Any, Any]:
        return self._inner_mod_down(self._mod_up(c_own, level, own), key, level, own)

    def rotate(self, ct: LimbCiphertext, steps: int) -> LimbCiphertext:
        if steps % self.params.slots == 0:
            return ct
        g = galois_element(self.params, steps)
        key = self.keys.galois_key(g, f"rotation by {steps}")
        c0 = self.ring.automorphism_ntt(ct.parts[0], g)
        c1 = self.ring.automorphism_ntt(ct.parts[1], g)
        k0, k1 = self._key_switch(c1, ct.level, key, ct.own)
        return LimbCiphertext([self.ring.add(c0, k0, ct.own), k1], ct.level, ct.scale, ct.own)

    def rotate_hoisted(self, ct: LimbCiphertext, steps: list[int]) -> dict[int, LimbCiphertext]:
        out: dict[int, LimbCiphertext] = {}
        todo = [s for s in dict.fromkeys(steps) if s % self.params.slots]
        for s in steps:
            if s % self.params.slots == 0:
                out[s] = ct
        if not todo:
            return out
        exts = self._mod_up(ct.parts[1], ct.level, ct.own)
        for s in todo:
            g = galois_element(self.params, s)
            key = self.keys.galois_key(g, f"rotation by {s}")
            perm = [(self.ring.automorphism_ntt(q, g), self.ring.automorphism_ntt(p, g)) for q, p in exts]
            k0, k1 = self._inner_mod_down(perm, key, ct.level, ct.own)
            c0 = self.ring.automorphism_ntt(ct.parts[0], g)
            out[s] = LimbCiphertext([self.ring.add(c0, k0, ct.own), k1], ct.level, ct.scale, ct.own)
        return out

    def rotate_sum(self, terms: list[tuple[LimbCiphertext, int]]) -> LimbCiphertext:
        """sum_g rot(ct_g, step_g) with output aggregation: one reduce-scatter of the two key-switched halves."""
        r, p = self.ring, self.params
        lvl = min(c.level for c, _ in terms)
        terms = [(self.adjust_level(c, lvl), s) for c, s in terms]
        own = terms[0][0].own
        Q, P = p.q_indices(lvl), p.p_indices
        xp = self.xp
        c0 = c1 = None
        acc = None                    # [(b_q, b_p), (a_q, a_p)] over all of Q_l and P
        for ct, s in terms:
            if s % p.slots == 0:
                c0 = ct.parts[0] if c0 is None else r.add(c0, ct.parts[0], own)
                c1 = ct.parts[1] if c1 is None else r.add(c1, ct.parts[1], own)
                continue
            g = galois_element(p, s)
            key = self.keys.galois_key(g, f"rotation by {s}")
            a0 = r.automorphism_ntt(ct.parts[0], g)
            c0 = a0 if c0 is None else r.add(c0, a0, own)
            a1 = r.automorphism_ntt(ct.parts[1], g)
            coeff_own = r.intt(a1, own)
            for j, d in enumerate(p.digits(lvl)):
                mine = [i for i in d if i in own]
                if not mine:
                    continue
                x = xp.zeros((len(d), p.n), dtype=xp.uint64)          # the other devices' limbs count as 0
                for i in mine:
                    x[d.index(i)] = coeff_own[own.index(i)]
                others = tuple(i for i in Q if i not in d)
                target = others + P
                conv = r.ntt(r.base_convert(x, d, target), target)
                eq = xp.zeros((lvl + 1, p.n), dtype=xp.uint64)
                for i in mine:
                    eq[i] = a1[own.index(i)]
                if others:
                    eq[list(others)] = conv[: len(others)]
                ep = conv[len(others):]
                parts = []
                for kq, kp in ((key.bq, key.bp), (key.aq, key.ap)):
                    parts.append((r.mul(eq, kq[j][: lvl + 1], Q), r.mul(ep, kp[j], P)))
                if acc is None:
                    acc = parts
                else:
                    acc = [(r.add(aq, bq, Q), r.add(ap, bp, P)) for (aq, ap), (bq, bp) in zip(acc, parts)]
        if any(s % p.slots for _, s in terms):          # every participant takes part, own limbs or not
            p_inv = [pow(p.p_product % q, -1, q) for q in p.q_primes[: lvl + 1]]
            partial = []
            for aq, ap in acc or []:
                conv = r.ntt(r.base_convert(r.intt(ap, P), P, Q), Q)
                partial.append(r.mul_scalar(r.sub(aq, conv, Q), p_inv, Q))
            if not partial:
                partial = [xp.zeros((lvl + 1, p.n), dtype=xp.uint64)] * 2
            # participant q receives the rows of its own limbs of every other participant's partial sums
            pieces = [[h[list(own_limb_indices(lvl, self.G, q))] for h in partial] for q in range(self.G)]
            got = self.group.alltoall(self.pos, pieces, self.phase)
            summed = []
            for half in range(2):
                tot = got[self.pos][half].copy()
                for q_pos, other in enumerate(got):
                    if q_pos != self.pos:
                        tot = r.add(tot, other[half], own)
                summed.append(tot)
            c0 = summed[0] if c0 is None else r.add(c0, summed[0], own)
            c1 = summed[1] if c1 is None else r.add(c1, summed[1], own)
        return LimbCiphertext([c0, c1], lvl, terms[0][0].scale, own)
