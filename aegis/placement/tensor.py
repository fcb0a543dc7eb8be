"""``tensor``: ciphertext-level tensor parallelism, Cerium's BERT mapping generalised to G devices with
balanced load (BASELINES.md, "Faithful and strongest, both"; the published mapping is ``tensor-cerium``).

The column and row splits are Cerium's; what is dealt over the devices are finer *work units*, so
every device gets an equal share of every stage of a layer:

* **attention units** ``(head tile, query block, key chunk)``: QKᵀ, the score bootstraps, exp and
  AV of one chunk of keys; the chunk-0 unit also holds the query block's Q, K and V projection
  tiles (column split: the hidden state is sent to every device that projects a tile of its
  block, which rotates it itself), row sums and normalisation.  K and V of a head go to the other
  devices that hold query blocks of that head (Q and the chunk partials, where one query block's
  chunks land on two devices);
* **FFN units** ``(output group, token block)``: FFN-up output tiles (column split, hidden state
  sent) and GELU with its bootstraps; FFN-down is split by rows over the devices that hold the
  block's intermediate tiles (partial sums, reduce-scattered and gathered to the block's owner);
* **token blocks**: the hidden state of a block -- output projection (the context tiles gathered),
  residual, LayerNorm and the hidden state's bootstraps -- lives on the block's *owner*.

Units of one stage and layer are listed head-major (group-major for the FFN; block order for the
owners) and cut into contiguous runs of equal predicted work (:func:`~.base.contiguous_split` over
:func:`~.base.op_seconds`, a roofline of :mod:`fhe.costs`), so a head's K and V or an FFN group's
weights touch as few devices as the balance allows; moves and swaps of single units then lower the
busiest device's work where units differ (:func:`~.aegis.rebalance`; causal attention).
"""
from __future__ import annotations

from collections import defaultdict

from ..program import Program, tile_groups
from .aegis import rebalance
from .base import Placement, PlacementContext, contiguous_split, op_seconds
from .tensor_cerium import ATTENTION_KINDS, babies_follow_consumers, tensor_comm

Unit = tuple  # ("attn", layer, head tile, block, chunk) | ("ffn", layer, group, block) | ("block", block)
#              | ("boot", layer, tile, block) | ("dattn", layer, giant chunk, block, key block) | ("dkv", layer, group, block)


def work_units(prog: Program, devices: int) -> list[Unit | None]:
    """Work unit of every op that belongs to one (baby steps and FFN-down: None, placed by their inputs
    and consumers).  With fewer token blocks than devices, the hidden state's bootstraps are units of their
    own (per layer and tile) instead of running on their block's owner."""
    ng = len(tile_groups(prog.packing.channel_tiles(prog.workload.model.d_model)))
    unit: list[Unit | None] = [None] * len(prog.ops)
    few_blocks = prog.packing.token_blocks < devices
    for op in prog.ops:
        k, w = op.kind, op.args.get("weight", "")
        b = max(op.block, 0)
        if k == "lin_baby" or (k == "lin_out" and w.endswith(".w2")):
            u = None
        elif k == "lin_out" and w.endswith(".wqkv"):
            u = ("attn", op.layer, op.tile % ng, b, 0)
        elif op.args.get("form") == "diagonal":      # head-major attention: its own stages
            u = ("dkv", op.layer, op.tile, b) if k == "attn_kbaby" else \
                ("dattn", op.layer, max(op.tile, 0), b, op.args.get("chunk", 0))
        elif k in ATTENTION_KINDS:
            u = ("attn", op.layer, op.tile, b, op.args.get("chunk", 0))
        elif (k == "lin_out" and w.endswith(".w1")) or k == "gelu":
            u = ("ffn", op.layer, op.tile, b)
        elif op.phase == "bootstrap":
            # refreshed where the tile is; the hidden state's tiles dealt as units of their own (one token
            # block's bootstraps on its owner alone would serialise them when blocks are few)
            src = unit[op.inputs[0]]
            u = src if src is not None and src[0] != "block" else \
                ("boot", op.layer, max(op.tile, 0), b) if few_blocks else ("block", b)
        else:
            u = ("block", b)
        unit[op.id] = u
    return unit


def deal_units(units: dict[Unit, float], devices: int) -> tuple[dict[Unit, int], dict[str, list[float]]]:
    """Device of every unit: per stage and layer (per stage for token-block owners), units in
    head / group / block order split into contiguous runs of equal work, then single moves and swaps
    that lower the busiest device's work (unequal units: causal attention).  Also the work per
    device of each stage (seconds, summed over layers)."""
    stages: dict[tuple, list[Unit]] = defaultdict(list)
    for u in sorted(units):
        stages[(u[0], u[1]) if u[0] != "block" else ("block",)].append(u)
    dev: dict[Unit, int] = {}
    load: dict[str, list[float]] = defaultdict(lambda: [0.0] * devices)
    for key, us in stages.items():
        w = [units[u] for u in us]
        for u, d in zip(us, rebalance(contiguous_split(w, devices), w, devices)):
            dev[u] = d
            load[key[0]][d] += units[u]
    return dev, dict(load)


def place(ctx: PlacementContext) -> Placement:
    prog, G = ctx.program, ctx.devices
    ops = prog.ops
    t = op_seconds(ctx)
    unit = work_units(prog, G)
    work: dict[Unit, float] = defaultdict(float)
    for op in ops:
        if unit[op.id] is not None:
            work[unit[op.id]] += t[op.id]
    dev, load = deal_units(dict(work), G)
    assign: list[tuple[int, ...]] = [(dev[u],) if u is not None else () for u in unit]
    mode = ["whole"] * len(ops)
    babies = [op.id for op in ops if op.kind == "lin_baby"]
    for op in ops:                        # FFN-down: row split over the holders of its input tiles
        if op.kind == "lin_out" and op.args.get("weight", "").endswith(".w2"):
            holders = {d for s in op.inputs if ops[s].kind != "lin_baby" for d in assign[s]}
            assign[op.id], mode[op.id] = tuple(sorted(holders)), "partial"
    babies_follow_consumers(prog, assign, mode, babies)
    comm = tensor_comm(prog, assign, mode)
    notes = [_describe(load, work, G)]
    return Placement("tensor", G, assign, mode, comm, None, notes)


def _describe(load: dict[str, list[float]], work: dict[Unit, float], G: int) -> str:
    """One note: units per stage and the predicted load balance (max / mean) of each."""
    names = {"attn": "(head tile, query block, key chunk) attention units", "ffn": "(FFN group, token block) units",
             "block": "token blocks (output projection, residual, LayerNorm, hidden-state bootstraps)"}
    counts: dict[str, int] = defaultdict(int)
    layers: dict[str, set] = defaultdict(set)
    for u in work:
        counts[u[0]] += 1
        if u[0] != "block":
            layers[u[0]].add(u[1])
    parts = []
    for s in ("attn", "ffn", "block"):
        if s not in load:
            continue
        ld = load[s]
        mean = sum(ld) / G
        per = counts[s] // max(1, len(layers[s])) if s != "block" else counts[s]
        busy = sum(1 for x in ld if x > 0)
        parts.append(f"{per} {names[s]}{' per layer' if s != 'block' else ''} on {busy} of {G} devices, "
                     f"work max/mean {max(ld) / mean if mean else 1:.3f}")
    return "balanced tensor parallelism: " + "; ".join(parts)
