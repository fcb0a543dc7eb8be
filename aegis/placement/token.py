"""``token``: data parallelism over token blocks.

Token block i (and every op whose output belongs to it, including attention for query
block i) runs on device ``floor(i * G / blocks)`` -- contiguous ranges of tokens.  Weights
and evaluation keys are replicated on every device.  Attention needs every key block's K
and V: they are all-gathered once per layer (one collective that starts when every device
has produced its K and V, as data-parallel Transformer inference does), nothing else
crosses devices.
"""
from __future__ import annotations

from .base import PlacementError, Placement, PlacementContext, edge_comm

KV_CONSUMERS = ("attn_qk", "attn_av")


def block_owner(block: int, blocks: int, devices: int) -> int:
    """Device of a token block: contiguous ranges, as even as the block count allows."""
    return block * devices // blocks


def group_kv_collectives(ctx: PlacementContext, comm: list) -> None:
    """Turn the K/V sends of each layer into one all-gather collective (same bytes, one start)."""
    ops = ctx.program.ops
    groups: dict[int, list] = {}
    for c in comm:
        if c.kind == "send" and any(ops[b].kind in KV_CONSUMERS for b in c.before):
            groups.setdefault(ops[c.before[0]].layer, []).append(c)
    for layer, cs in groups.items():
        producers = tuple(sorted({a for c in cs for a in c.after}))
        for c in cs:
            c.after = producers
            c.args = {**c.args, "collective": "all_gather", "group": f"L{layer}.kv"}


def place(ctx: PlacementContext) -> Placement:
    prog = ctx.program
    if prog.packing.head_major:
        raise PlacementError("token parallelism splits the tile attention's token blocks; a plan with "
                             "--attention diagonal needs --strategy single, limb, tensor or aegis (or --attention tile)")
    nb = prog.packing.token_blocks
    G = ctx.devices
    assign = [(block_owner(max(op.block, 0), nb, G),) for op in prog.ops]
    mode = ["whole"] * len(prog.ops)
    comm = edge_comm(prog, assign, mode)
    group_kv_collectives(ctx, comm)
    notes = [f"{nb} token blocks over {G} devices"]
    if nb < G:
        notes.append(f"only {nb} token blocks: {G - nb} devices idle")
    return Placement("token", G, assign, mode, comm, None, notes)
