"""The ciphertext dependency graph (networkx) and its polynomial-level expansion.

:func:`build_graph` turns a :class:`~aegis.program.Program` into a ``networkx.DiGraph``
whose nodes are the program's ops (attributes: kind, phase, layer, token block, tile,
level, limbs, key-switch digits and limbs per digit, bytes and modular operations from
:mod:`fhe.costs`) and whose edges carry the ciphertext bytes that flow along them.

:func:`expand_op` gives an op's polynomial-level form on explicit limb subsets (INTT,
ModUp base conversion, NTT, inner product, ModDown, automorphism, rescale, element-wise
products): what a limb-parallel placement splits and what the executor runs on each device.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import networkx as nx

from fhe.costs import Cost
from fhe.params import CKKSParameters

from .prims import Work, work_cost
from .program import Op, Program
from .safeio import atomic_path, write_text


@lru_cache(maxsize=None)
def op_cost(params: CKKSParameters, work: Work) -> Cost:
    """Single-device cost of a work list (cached: ops of one kind share their work lists)."""
    return work_cost(params, work)


def build_graph(program: Program) -> nx.DiGraph:
    """The dependency graph of ``program`` (node = op id)."""
    p = program.params
    g = nx.DiGraph(model=program.workload.model.name, seq_len=program.workload.seq_len, params=p.name)
    nodes = []
    digits = [len(p.digits(lvl)) for lvl in range(p.max_level + 1)]
    alpha, k = p.alpha, p.p_count
    for o in program.ops:
        c = op_cost(p, o.work)
        nodes.append((o.id, {
            "kind": o.kind, "phase": o.phase, "layer": o.layer, "block": o.block, "tile": o.tile,
            "level": o.level, "limbs": o.level + 1, "digits": digits[o.level], "alpha": alpha,
            "special_limbs": k, "out_bytes": o.out_bytes, "bytes_moved": c.bytes_moved,
            "mod_ops": c.mod_ops, "kernels": c.calls, "plaintexts": o.plaintexts,
        }))
    g.add_nodes_from(nodes)
    g.add_edges_from((s, o.id, {"bytes": b}) for o in program.ops for s, b in zip(o.inputs, o.in_bytes))
    return g


def export_graph(g: nx.DiGraph, path: str | Path, fmt: str) -> None:
    """Write the graph as GraphML or node-link JSON (``fmt`` = ``graphml`` | ``json``)."""
    path = Path(path)
    if fmt == "graphml":
        with atomic_path(path) as tmp:
            nx.write_graphml(g, tmp)
    elif fmt == "json":
        write_text(path, json.dumps(nx.node_link_data(g, edges="edges"), separators=(",", ":")))
    else:
        raise ValueError(f"unknown graph format {fmt!r}; valid: graphml, json")


# ---- polynomial-level expansion ------------------------------------------------------------
@dataclass(frozen=True)
class PolyOp:
    """One polynomial kernel on explicit limbs.

    Attributes:
        kernel: ``intt``, ``ntt``, ``base_convert``, ``inner_product``, ``automorphism``, ``mul``,
            ``add``, ``rescale``, ``encode``; in split form also the limb exchanges ``all_gather``
            (limbs received), ``reduce_scatter`` (``polys`` = partial polynomials received for
            the own limbs) and ``recv_limb`` (the dropped limb at rescale).
        src: prime indices read (for ``base_convert`` the source digit).
        dst: prime indices written.
        polys: polynomials it applies to.
        count: repetitions.
        prim: the primitive it belongs to.
    """

    kernel: str
    src: tuple[int, ...]
    dst: tuple[int, ...]
    polys: int
    count: int
    prim: str


def _key_switch(p: CKKSParameters, level: int, count: int, prim: str, modup: bool, moddown: bool,
                out: list[PolyOp]) -> None:
    q = p.q_indices(level)
    P = p.p_indices
    if modup:
        out.append(PolyOp("intt", q, q, 1, count, prim))
        for d in p.digits(level):
            rest = tuple(i for i in q if i not in d) + P
            out.append(PolyOp("base_convert", d, rest, 1, count, prim))
            out.append(PolyOp("ntt", rest, rest, 1, count, prim))
    if moddown:
        out.append(PolyOp("inner_product", q + P, q + P, 2, count, prim))
        out.append(PolyOp("intt", P, P, 2, count, prim))
        out.append(PolyOp("base_convert", P, q, 2, count, prim))
        out.append(PolyOp("ntt", q, q, 2, count, prim))
        out.append(PolyOp("add", q, q, 2, count, prim))
        out.append(PolyOp("mul", q, q, 2, count, prim))
        out.append(PolyOp("automorphism", q, q, 2, count, prim))


def expand_work(p: CKKSParameters, work: Work) -> list[PolyOp]:
    """Polynomial kernels of a work list, on the limbs each touches (single device)."""
    out: list[PolyOp] = []
    for prim, lvl, n in work:
        q = p.q_indices(lvl)
        if prim in ("rot", "relin", "giant"):
            _key_switch(p, lvl, n, prim, True, True, out)
        elif prim == "hoist":
            _key_switch(p, lvl, n, prim, True, False, out)
        elif prim == "hrot":
            _key_switch(p, lvl, n, prim, False, True, out)
        elif prim == "tensor":
            out.append(PolyOp("mul", q, q, 4, n, prim))
        elif prim == "pmul":
            out.append(PolyOp("mul", q, q, 2, n, prim))
        elif prim == "add":
            out.append(PolyOp("add", q, q, 2, n, prim))
        elif prim == "rescale":
            top = (q[-1],)
            out.append(PolyOp("intt", top, top, 2, n, prim))
            out.append(PolyOp("rescale", q, q[:-1], 2, n, prim))
            out.append(PolyOp("ntt", q[:-1], q[:-1], 2, n, prim))
        elif prim == "encode":
            out.append(PolyOp("encode", (), q, 1, n, prim))
            out.append(PolyOp("ntt", q, q, 1, n, prim))
        elif prim == "modraise":
            full = p.q_indices(p.max_level)
            out.append(PolyOp("intt", q, q, 2, n, prim))
            out.append(PolyOp("base_convert", q, full, 2, n, prim))
            out.append(PolyOp("ntt", full, full, 2, n, prim))
    return out


def split_limbs(indices: tuple[int, ...], devices: int, d: int) -> tuple[int, ...]:
    """The limbs of ``indices`` device ``d`` owns under round-robin limb placement (limb i on i mod G)."""
    return tuple(i for i in indices if i % devices == d)


def expand_op_split(p: CKKSParameters, op: Op, devices: int, d: int) -> list[PolyOp]:
    """Kernels device ``d`` runs for ``op`` under limb parallelism (BASELINES.md, input broadcast).

    Q limbs are split round robin, special primes P are replicated.  Before every ModUp the
    device all-gathers the other devices' limbs of the input (an ``all_gather`` PolyOp whose
    ``src`` are the limbs it receives), then converts every digit onto its own Q limbs and all
    of P; element-wise kernels run on its own limbs only.
    """
    P = p.p_indices
    out: list[PolyOp] = []
    for prim, lvl, n in op.work:       # communication that is not a kernel: aggregation and rescale
        q = p.q_indices(lvl)
        if prim == "gout":             # output aggregation: partials of my limbs from every other device
            own = split_limbs(q, devices, d)
            out.append(PolyOp("reduce_scatter", own, own, 2 * (devices - 1), n, prim))
        elif prim == "rescale" and q[-1] % devices != d:
            out.append(PolyOp("recv_limb", (q[-1],), (q[-1],), 2, n, prim))
        elif prim == "modraise":
            recv = tuple(i for i in q if i % devices != d)
            if recv:
                out.append(PolyOp("all_gather", recv, recv, 2, n, prim))
    for k in expand_work(p, op.work):
        own_src = split_limbs(tuple(i for i in k.src if i not in P), devices, d) + tuple(i for i in k.src if i in P)
        own_dst = split_limbs(tuple(i for i in k.dst if i not in P), devices, d) + tuple(i for i in k.dst if i in P)
        if k.kernel == "intt" and k.prim in ("rot", "relin", "hoist") and k.polys == 1:
            received = tuple(i for i in k.src if i % devices != d)
            out.append(PolyOp("all_gather", received, received, 1, k.count, k.prim))
            out.append(PolyOp("intt", own_src, own_src, 1, k.count, k.prim))
        elif k.kernel == "base_convert" and k.src and k.src[0] not in P:
            out.append(PolyOp("base_convert", k.src, own_dst, k.polys, k.count, k.prim))   # whole digit in
        else:
            out.append(PolyOp(k.kernel, own_src, own_dst, k.polys, k.count, k.prim))
    return out
