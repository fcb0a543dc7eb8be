"""``tensor-cerium``: ciphertext-level tensor parallelism, Cerium's BERT mapping exactly as published
(BASELINES.md), idle devices included; ``tensor`` is its balanced generalisation.

Per layer, with the hidden state on device 0:

* QKV projection: output head groups split over devices (head group g on device g mod G);
  every device that owns a group rotates the broadcast hidden state itself (the baby-step
  op is replicated there), so the hidden state is *sent to every device* that owns a group;
* QKᵀ, softmax, AV (and their bootstraps) on the device owning the head group;
* output projection: the context ciphertexts are scattered by limbs and the matmul runs
  limb-parallel across all devices (input broadcast key switching, output aggregation);
* residual, LayerNorm and the hidden state's bootstraps on device 0 (results gathered there);
* FFN up: output groups split over devices (group g on device g mod G), hidden state sent
  to each;  GELU and its bootstraps on the group's owner;
* FFN down: each device multiplies its own intermediate tiles (row split: a *partial* op),
  the partial sums are reduce-scattered and gathered to device 0.

The program's tiles hold ``channel_block / head_dim`` heads (4 for BERT-base at the default
128 x 256 packing, where Cerium puts 2 heads per ciphertext), so attention has as many
parallel units as head tiles; pass a larger ``token_block`` for finer head groups.
"""
from __future__ import annotations

from ..comm import CommOp
from ..program import Program, tile_groups
from .base import Placement, PlacementContext, edge_comm, limb_internal_comm, normalise_modes

ATTENTION_KINDS = ("attn_qk", "attn_exp", "attn_av", "attn_rowsum", "attn_norm", "attn_kbaby")


def babies_follow_consumers(program: Program, assign: list[tuple[int, ...]], mode: list[str],
                            babies: list[int]) -> None:
    """Baby steps run where their matmul runs: replicated on every device of a whole (column-split)
    consumer -- the broadcast input is rotated there -- or split like a limb-split / row-split one."""
    consumers: dict[int, list[int]] = {}
    for op in program.ops:
        if op.kind == "lin_out":
            for s in op.inputs:
                consumers.setdefault(s, []).append(op.id)
    for b in babies:
        outs = consumers[b]
        m = mode[outs[0]]
        if m == "whole":
            assign[b] = tuple(sorted({d for o in outs for d in assign[o]}))
        else:
            assign[b], mode[b] = assign[outs[0]], m


def tensor_comm(program: Program, assign: list[tuple[int, ...]], mode: list[str]) -> list[CommOp]:
    """Edge transfers of an assignment plus the limb exchanges inside its limb-split ops."""
    normalise_modes(assign, mode)
    comm = edge_comm(program, assign, mode)
    for op in program.ops:
        if mode[op.id] == "limb":
            comm += limb_internal_comm(program, op.id, assign[op.id], len(comm))
    return comm


def place(ctx: PlacementContext) -> Placement:
    prog, G = ctx.program, ctx.devices
    ops = prog.ops
    cd = prog.packing.channel_tiles(prog.workload.model.d_model)
    cf = prog.packing.channel_tiles(prog.workload.model.d_ff)
    ng = len(tile_groups(cd))
    nf = len(tile_groups(cf))
    all_devs = tuple(range(G))
    ffn_owners = tuple(sorted({g % G for g in range(nf)}))
    assign: list[tuple[int, ...]] = [(0,)] * len(ops)
    mode = ["whole"] * len(ops)
    pending_babies: list[int] = []
    for op in ops:
        k = op.kind
        w = op.args.get("weight", "")
        if k == "lin_out":
            if w.endswith(".wqkv"):
                assign[op.id] = (op.tile % ng % G,)
            elif w.endswith(".wo"):
                assign[op.id], mode[op.id] = all_devs, "limb"
            elif w.endswith(".w1"):
                assign[op.id] = (op.tile % G,)
            elif w.endswith(".w2"):
                assign[op.id], mode[op.id] = ffn_owners, "partial"
        elif k == "lin_baby":
            pending_babies.append(op.id)      # decided by its consumers below
        elif k in ATTENTION_KINDS:
            assign[op.id] = (op.tile % G,)
        elif k == "gelu":
            assign[op.id] = (op.tile % G,)
        elif op.phase == "bootstrap":
            # on the device of what it refreshes; the hidden state's (LayerNorm path) on device 0
            src = op.inputs[0]
            assign[op.id] = assign[src] if mode[src] == "whole" and len(assign[src]) == 1 else (0,)
    babies_follow_consumers(prog, assign, mode, pending_babies)
    comm = tensor_comm(prog, assign, mode)
    notes = [f"Cerium's published mapping: attention on {min(ng, G)} of {G} devices ({ng} head tiles), FFN on {len(ffn_owners)} "
             f"({nf} output groups); LayerNorm and hidden-state bootstraps on device 0"]
    return Placement("tensor-cerium", G, assign, mode, comm, None, notes)
