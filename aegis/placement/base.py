"""The placement interface and the communication every placement derives from its assignment.

A strategy maps every op of the program to the devices that run it and a *mode*:

* ``whole``   -- the op runs entirely on each listed device (more than one: replicated);
* ``limb``    -- the op's limbs are split round robin over the listed devices (limb
  parallelism); its key switches and rescales exchange limbs (internal comm);
* ``partial`` -- the op's work is split over the listed devices by input tiles; each
  device holds a partial sum that a reduction completes (row-split matmul).

From that, :func:`edge_comm` inserts a communication op wherever an edge crosses devices,
with exact bytes, and :func:`limb_internal_comm` the exchanges inside limb-split ops.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from ..comm import CommOp, total_bytes
from ..hardware import HardwareProfile
from ..prims import MODUP_PRIMS, limb_bytes
from ..program import Program

MODES = ("whole", "limb", "partial")


@dataclass
class PlacementContext:
    """What a strategy may look at."""

    program: Program
    graph: nx.DiGraph
    devices: int
    capacity_bytes: int
    hardware: HardwareProfile | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Placement:
    """Devices and mode of every op, the communication ops, and the priority order for scheduling.

    Attributes:
        assign: per op, the devices that run it.
        mode: per op, one of :data:`MODES`.
        comm: communication ops (edge transfers and limb exchanges).
        priority: per op, a sort key for the scheduler (lower runs earlier among ready ops);
            None keeps program order.
        notes: what the strategy decided and why (shown in the plan summary).
    """

    strategy: str
    devices: int
    assign: list[tuple[int, ...]]
    mode: list[str]
    comm: list[CommOp]
    priority: list[tuple] | None = None
    notes: list[str] = field(default_factory=list)
    orders: list[list[int]] | None = None       # set when the strategy already scheduled (reused)
    memory: Any = None                          # set when the strategy already accounted memory
    keys: Any = None                            # an aegis.keystore.KeyPlan when keys are not replicated per device
    search: list[dict] = field(default_factory=list)   # candidates a searching strategy scored (``--explain``)


class PlacementError(ValueError):
    """A strategy that cannot place this program on these devices."""


def op_seconds(ctx: PlacementContext) -> list[float]:
    """Predicted seconds of every op on one device: the roofline of its :mod:`fhe.costs` bytes moved and
    modular operations (graph node attributes) on the hardware profile's HBM bandwidth and modular-op
    rate (bytes only, at 1 byte/s, without a profile).  Independent of the simulator."""
    g = ctx.graph
    hw = ctx.hardware.raw["device"] if ctx.hardware else {}
    bw = float(hw.get("hbm_bytes_per_s", 1.0))
    thr = float(hw.get("mod_ops_per_s", 1e30))
    return [max(g.nodes[o.id]["bytes_moved"] / bw, g.nodes[o.id]["mod_ops"] / thr) for o in ctx.program.ops]


def contiguous_split(weights: list[float], parts: int) -> list[int]:
    """Part of every unit: units in the given order cut into ``parts`` contiguous runs of nearly equal
    cumulative weight (each part within one unit's weight of ``sum / parts``)."""
    total = sum(weights)
    if total <= 0:
        return [k * parts // max(1, len(weights)) for k in range(len(weights))]
    out, acc = [], 0.0
    for w in weights:
        out.append(min(parts - 1, int((acc + w / 2) * parts / total)))
        acc += w
    return out


def normalise_modes(assign: list[tuple[int, ...]], mode: list[str]) -> None:
    """An op split over one device is a whole op (no limb exchange, no partial sums)."""
    for i, devs in enumerate(assign):
        if len(devs) == 1 and mode[i] != "whole":
            mode[i] = "whole"


def _polys(nbytes: int, level: int, lb: int) -> int:
    return nbytes // ((level + 1) * lb)


def edge_comm(program: Program, assign: list[tuple[int, ...]], mode: list[str], start: int = 0) -> list[CommOp]:
    """Communication ops for every edge whose data is not where its consumer runs.

    Data a device already received for one consumer is not sent again for another: transfers
    are grouped per (producer, destination) over the distinct tiles the consumers read.  A
    transfer counts in the phase of the computation that needs it (the first consumer);
    the reduction or gather that completes a split producer counts in the producer's phase.
    """
    lb = limb_bytes(program.params)
    ops = program.ops
    # (producer, destination device) -> {tile name: (level, bytes)} and consumers
    need: dict[tuple[int, int], dict[str, tuple[int, int]]] = {}
    users: dict[tuple[int, int], list[int]] = {}
    limb_need: dict[tuple[int, tuple[int, ...]], dict[str, tuple[int, int]]] = {}
    limb_users: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    for v in ops:
        dv, mv = assign[v.id], mode[v.id]
        for src, name, lvl, b in v.reads:
            du, mu = assign[src], mode[src]
            if du == dv and mu == mv:
                continue
            if mv == "partial":
                if not set(du) & set(dv):
                    raise PlacementError(f"op {v.id} ({v.kind}) is split by inputs but reads op {src} "
                                         f"({ops[src].kind}) held on none of its devices")
                continue      # each device reads the input tiles it holds
            if mv == "limb":
                if mu == "limb" and du == dv:
                    continue
                limb_need.setdefault((src, dv), {})[name] = (lvl, b)
                limb_users.setdefault((src, dv), []).append(v.id)
                continue
            for d in dv:
                if mu == "whole" and d in du:
                    continue
                need.setdefault((src, d), {})[name] = (lvl, b)
                users.setdefault((src, d), []).append(v.id)
    out: list[CommOp] = []

    def add(c: CommOp) -> None:
        c.id = start + len(out)
        c.total_bytes = total_bytes(c, lb)
        if c.total_bytes or c.kind != "send":     # a gather of limbs the root owns still turns shards whole
            out.append(c)

    # whole consumers: group destinations of one producer that need the same tiles
    by_src: dict[tuple[int, tuple], list[int]] = {}
    for (src, d), parts in need.items():
        by_src.setdefault((src, tuple(sorted(parts.items()))), []).append(d)
    for (src, parts_t), dsts in sorted(by_src.items()):
        u = ops[src]
        du, mu = assign[src], mode[src]
        consumers = sorted({c for d in dsts for c in users[(src, d)]})
        first = ops[consumers[0]]
        nbytes = sum(b for _, (_, b) in parts_t)
        if mu == "whole":
            add(CommOp(0, "send", first.phase, first.layer, (du[0],) + tuple(sorted(dsts)), root=du[0],
                       nbytes=nbytes, after=(src,), before=tuple(consumers), args={"producer": src}))
            continue
        # a split producer's result is completed by its own collective: count it in the producer's phase
        payload = tuple((lvl + 1, _polys(b, lvl, lb), 1) for _, (lvl, b) in parts_t)
        if mu == "partial":      # reduce-scatter the partial sums, then gather to each destination
            add(CommOp(0, "reduce_scatter", u.phase, u.layer, du, payload=payload, after=(src,),
                       before=tuple(consumers), args={"reduces": u.kind}))
        for d in sorted(dsts):
            cons = tuple(sorted(users[(src, d)]))
            add(CommOp(0, "gather", u.phase, u.layer, du, root=d, payload=payload, after=(src,), before=cons))
    # limb-split consumers: scatter each device its limbs
    for (src, dv), parts in sorted(limb_need.items()):
        du, mu = assign[src], mode[src]
        cons = tuple(sorted(limb_users[(src, dv)]))
        first = ops[cons[0]]
        payload = tuple((lvl + 1, _polys(b, lvl, lb), 1) for lvl, b in parts.values())
        if mu == "whole":
            add(CommOp(0, "scatter", first.phase, first.layer, dv, root=du[0], payload=payload,
                       after=(src,), before=cons))
        elif mu == "partial":
            add(CommOp(0, "reduce_scatter", ops[src].phase, ops[src].layer, dv, payload=payload, after=(src,),
                       before=cons, args={"reduces": ops[src].kind}))
        elif len(du) == len(dv) and not set(du) & set(dv):     # another limb group of the same size
            add(CommOp(0, "shard_send", first.phase, first.layer, du + dv, payload=payload, after=(src,),
                       before=cons, args={"producer": src}))
        else:
            raise PlacementError(f"limb-split op {src} feeds op {cons[0]} split over other devices {dv}")
    return out


def limb_internal_comm(program: Program, op_id: int, participants: tuple[int, ...], start: int) -> list[CommOp]:
    """Limb exchanges inside one limb-split op (BASELINES.md formulas).

    * ``rot``/``relin``/``hoist``: input broadcast -- an all-gather of the polynomial being switched;
    * ``gout``: output aggregation -- a reduce-scatter of the two output polynomials;
    * ``rescale``: the dropped limb of both polynomials from its owner;
    * ``modraise``: an all-gather of both polynomials.
    """
    if len(participants) < 2:
        return []
    lb = limb_bytes(program.params)
    op = program.ops[op_id]
    groups: dict[str, list[tuple[int, int, int]]] = {}
    for prim, lvl, n in op.work:
        if prim in MODUP_PRIMS:
            groups.setdefault("all_gather", []).append((lvl + 1, 1, n))
        elif prim == "modraise":
            groups.setdefault("all_gather", []).append((lvl + 1, 2, n))
        elif prim == "gout":
            groups.setdefault("reduce_scatter", []).append((lvl + 1, 2, n))
        elif prim == "rescale":
            groups.setdefault("limb_bcast", []).append((lvl + 1, 2, n))
    out = []
    for kind, payload in groups.items():
        c = CommOp(start + len(out), kind, op.phase, op.layer, participants, payload=tuple(payload),
                   after=(op_id,), before=(op_id,), internal=True, count=sum(n for _, _, n in payload))
        c.total_bytes = total_bytes(c, lb)
        out.append(c)
    return out
