"""Per-device memory of a placed, scheduled program (bytes).

Three parts, each per device:

* **evaluation keys** -- (when the placement carries an :class:`aegis.keystore.KeyPlan`: the keys it
  stores on the device, the expansion scratch of seed-compressed keys, and fetched copies as live
  data from their fetch to their last use; otherwise) one switching key per rotation step (and relinearisation,
  conjugation) used by the device's ops, kept at the highest level it is used at:
  ``2 x digits(l) x (limbs + K)`` limb polynomials, where limbs are the device's own Q
  limbs under limb splitting (the special primes P are always whole);
* **weights** -- encoded diagonal plaintexts at the level they are used (``encoded``), or
  the raw float64 weights the device encodes from (``on_the_fly``), once per slice;
* **live ciphertexts** -- walking the device's op order: an op's output is allocated when
  it runs and freed after its last local reader; received tiles from their first to last
  local reader; the running op adds its scratch (extended digits, working ciphertexts; a
  limb-split op also the gathered input polynomial).  Program outputs stay to the end.

Peak = keys + weights + the maximum of live + scratch over the order.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .comm import pair_bytes
from .placement.base import Placement
from .prims import KEY_PRIMS, Work, limb_bytes, own_limbs
from .program import Program


@dataclass
class MemoryReport:
    """Bytes per device (lists indexed by device)."""

    keys: list[int]
    weights: list[int]
    live_peak: list[int]
    peak: list[int]
    key_count: list[int]
    #: per device, bytes in use (keys + weights + live + scratch) while each op of its order runs
    timeline: list[np.ndarray] | None = None

    def to_dict(self) -> dict[str, list[int]]:
        return {"keys": self.keys, "weights": self.weights, "live_peak": self.live_peak, "peak": self.peak,
                "key_count": self.key_count}


def _share(mode: str, devs: tuple[int, ...], d: int, limbs: int) -> float:
    if mode != "limb" or len(devs) == 1:
        return 1.0
    return own_limbs(limbs, len(devs), devs.index(d)) / limbs


def memory_report(program: Program, placement: Placement, orders: list[list[int]]) -> MemoryReport:
    p = program.params
    lb = limb_bytes(p)
    K = p.p_count
    G = placement.devices
    ops = program.ops
    assign, mode = placement.assign, placement.mode
    encoded = program.workload.weights == "encoded"
    outputs = set(program.outputs)
    edges = _edges(program)
    recv: list[list[tuple[tuple[int, ...], int]]] = [[] for _ in range(G)]    # (consumers, bytes) per device
    for c in placement.comm:
        if c.internal:
            continue
        for (_, dst), b in pair_bytes(c, lb).items():
            recv[dst].append((c.before, b))

    kplan = getattr(placement, "keys", None)          # an aegis.keystore.KeyPlan, when keys are not per device
    keys, key_count, weights, live_peak = [0] * G, [0] * G, [0] * G, [0] * G
    in_use: list[np.ndarray] = [np.zeros(0) for _ in range(G)]
    cache: dict[int, dict] = {}
    for d in range(G):
        order = orders[d]
        n = len(order)
        if not n:
            if kplan is not None:
                keys[d] = kplan.stored[d]
                key_count[d] = kplan.counts[d]
            continue
        sig = hash((n, tuple(order[:: max(1, n // 64)])))
        st = cache.get(sig)
        if st is None or st["order"] != order:
            st = _order_stats(program, placement, order, edges, outputs)
            cache[sig] = st
        # per-device shares: limb-split ops hold their own limbs only
        idx = np.array([assign[i].index(d) if mode[i] == "limb" else 0 for i in order]) if st["any_limb"] else None
        if idx is not None:
            gs = st["group"]
            own = np.where(st["is_limb"], np.maximum(0, (st["limbs"] - idx + gs - 1) // gs), st["limbs"])
            share = own / st["limbs"]
        else:
            share = np.ones(n)
        delta = np.zeros(n + 1)
        out = st["out"] * share
        np.add.at(delta, np.arange(n), out)
        np.add.at(delta, st["free_at"], -np.where(st["freed"], out, 0.0))
        for cons, b in recv[d]:
            ps = [st["pos"][c] for c in cons if c in st["pos"]]
            if ps:
                delta[min(ps)] += b
                delta[max(ps) + 1] -= b
        if kplan is not None:                          # fetched key copies, from their fetch to their last use
            for after, until, b in kplan.runs[d]:
                delta[st["pos"][after] + 1 if after >= 0 else 0] += b
                delta[st["pos"][until] + 1] -= b
        live = np.cumsum(delta[:n])
        scratch = st["scratch"] * share + st["gathered"]
        in_use[d] = live + scratch
        live_peak[d] = int(np.max(in_use[d]))
        # keys: highest level each key is used at, own limbs at that level
        need: dict[object, tuple[int, int]] = {}
        for k, (name, kl, i) in st["keys"].items():
            if kplan is not None and not (mode[i] == "limb" and len(assign[i]) > 1):
                continue                               # whole ops' keys: the key plan's
            own_k = own_limbs(kl + 1, len(assign[i]), assign[i].index(d)) if mode[i] == "limb" else kl + 1
            need[k] = (kl, own_k)
        keys[d] = sum(2 * len(p.digits(lvl)) * (ok + K) * lb for lvl, ok in need.values())
        key_count[d] = len(need)
        if kplan is not None:
            keys[d] += kplan.stored[d] + kplan.expand[d]
            key_count[d] += kplan.counts[d]
        wsl: dict[str, int] = {}
        for wname, i in st["weights"]:
            o = ops[i]
            if encoded and o.plaintexts:
                frac = 1.0 / len(assign[i]) if mode[i] == "partial" else _share(mode[i], assign[i], d, o.level + 1)
                b = int(o.plaintexts * (o.level + 1) * lb * frac)
            else:
                b = o.weight_raw_bytes
            wsl[wname] = max(wsl.get(wname, 0), b)
        weights[d] = sum(wsl.values())
    peak = [keys[d] + weights[d] + live_peak[d] for d in range(G)]
    for d in range(G):
        in_use[d] = in_use[d] + keys[d] + weights[d]
    return MemoryReport(keys, weights, live_peak, peak, key_count, in_use)


def _edges(program: Program) -> tuple[np.ndarray, np.ndarray]:
    """(producer, reader) op ids of every dependency edge, as two arrays."""
    src = [s for o in program.ops for s in o.inputs]
    dst = [o.id for o in program.ops for _ in o.inputs]
    return np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64)


@lru_cache(maxsize=4096)
def _key_info(work: Work) -> tuple[int, bool]:
    """(highest key-switching level or -1, whether it relinearises) of a work list (shared by many ops)."""
    kl = max((lvl for p, lvl, _ in work if p in KEY_PRIMS or p == "hoist"), default=-1)
    return kl, any(p == "relin" for p, _, _ in work)


def _order_stats(program: Program, placement: Placement, order: list[int], edges: tuple[np.ndarray, np.ndarray],
                 outputs: set[int]) -> dict:
    """What the memory walk needs from one op order (shared by devices with the same order)."""
    ops = program.ops
    assign, mode = placement.assign, placement.mode
    lb = limb_bytes(program.params)
    slots = program.params.slots
    n = len(order)
    pos = {op: k for k, op in enumerate(order)}
    out = np.empty(n)
    limbs = np.empty(n, dtype=np.int64)
    group = np.ones(n, dtype=np.int64)
    is_limb = np.zeros(n, dtype=bool)
    freed = np.ones(n, dtype=bool)
    scratch = np.empty(n)
    gathered = np.zeros(n)
    keys: dict[object, tuple[object, int, int]] = {}
    wts: list[tuple[str, int]] = []
    for k, i in enumerate(order):
        o = ops[i]
        out[k] = o.out_bytes
        limbs[k] = o.level + 1
        kl, relin = _key_info(o.work)
        if mode[i] == "limb" and len(assign[i]) > 1:
            is_limb[k] = True
            group[k] = len(assign[i])
            if kl >= 0:
                gathered[k] = (o.level + 1) * lb          # the all-gathered input polynomial
        scratch[k] = o.scratch_bytes
        if kl >= 0:
            names = sorted({r % slots for r in o.rotations})     # r and r - slots: one Galois key
            if relin:
                names.append("relin")
            for nm in names:
                if nm not in keys or keys[nm][1] < kl:
                    keys[nm] = (nm, kl, i)
        if o.weight:
            wts.append((o.weight, i))
    # an output is freed after its last local reader (the op's own slot when none reads it here)
    at = np.full(len(ops), -1, dtype=np.int64)
    at[np.asarray(order, dtype=np.int64)] = np.arange(n)
    src, dst = edges
    local = (at[src] >= 0) & (at[dst] >= 0)
    last = np.arange(n)
    np.maximum.at(last, at[src[local]], at[dst[local]])
    free_at = last + 1
    outs = [pos[i] for i in outputs if i in pos]
    freed[outs] = False
    free_at[outs] = n
    return {"order": order, "pos": pos, "out": out, "limbs": limbs, "group": group, "is_limb": is_limb,
            "any_limb": bool(is_limb.any()), "free_at": free_at, "freed": freed, "scratch": scratch,
            "gathered": gathered, "keys": keys, "weights": wts}
