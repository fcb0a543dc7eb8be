"""Communication ops: what crosses devices, between which devices, and how many bytes.

A :class:`CommOp` names a collective or point-to-point transfer with its participants and
payload; :func:`pair_bytes` expands it into exact bytes per (source, destination) device
pair.  The simulator and the executor both use :func:`pair_bytes`, so their byte counts
agree by construction and tests check it against the closed forms of BASELINES.md.

Limb ownership is round robin over the participants: limb i of a polynomial lives on
``participants[i % G]`` (BASELINES.md, limb parallelism).

Kinds (payload entries are ``(limbs, polys, count)``; ``lb`` = bytes of one limb):

==================  ==========================================================================
``all_gather``      every participant receives every other participant's limbs
``reduce_scatter``  every participant receives, from each other one, partial sums of its own limbs
``limb_bcast``      the owner of limb ``limbs-1`` (the one a rescale drops) sends it to the others
``scatter``         ``root`` sends each participant the limbs it owns
``gather``          each participant sends ``root`` the limbs it owns
``all_reduce``      every participant ends with the sum: a reduce-scatter then an all-gather
``all_to_all``      every participant sends every other one ``nbytes``
``send``            ``root`` sends whole ciphertexts (``nbytes`` each) to every other participant
                    (a broadcast when there are several)
``shard_send``      limb shards from one limb group to another of the same size: participants are
                    the source group then the destination group, and the k-th source device sends
                    the limbs it owns to the k-th destination device (which owns the same limbs)
==================  ==========================================================================
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .prims import own_limbs

KINDS = ("all_gather", "reduce_scatter", "all_reduce", "all_to_all", "limb_bcast", "scatter", "gather", "send",
         "shard_send")


@dataclass(slots=True, eq=False)
class CommOp:
    """One communication op.

    Attributes:
        id: index in the plan's comm list.
        kind: one of :data:`KINDS`.
        phase: phase of the computation that needs it (the consumer's phase).
        layer: layer of that computation.
        participants: devices taking part (order defines limb ownership).
        root: source (send/scatter) or destination (gather) device; -1 for collectives.
        payload: ``(limbs, polys, count)`` entries (limb-granular kinds).
        nbytes: bytes per destination for ``send``.
        after: ops that must finish before it starts (its producers, or the op it sits inside).
        before: ops that wait for it.
        internal: True when it is part of a limb-split op's own key switches/rescales
            (it serialises with that op's compute rather than running beside it).
        count: collective calls it stands for (latency is paid per call).
        total_bytes: bytes over all pairs.
    """

    id: int
    kind: str
    phase: str
    layer: int
    participants: tuple[int, ...]
    root: int = -1
    payload: tuple[tuple[int, int, int], ...] = ()
    nbytes: int = 0
    after: tuple[int, ...] = ()
    before: tuple[int, ...] = ()
    internal: bool = False
    count: int = 1
    total_bytes: int = 0
    args: dict[str, Any] = field(default_factory=dict)


def _limbs_of(participants: tuple[int, ...], limbs: int) -> dict[int, int]:
    g = len(participants)
    return {d: own_limbs(limbs, g, k) for k, d in enumerate(participants)}


def pair_bytes(c: CommOp, limb_bytes: int) -> dict[tuple[int, int], int]:
    """Exact bytes per (source device, destination device) of ``c``."""
    return dict(_pair_bytes(c.kind, c.participants, c.root, c.payload, c.nbytes, limb_bytes))


@lru_cache(maxsize=65536)
def _pair_bytes(kind: str, participants: tuple[int, ...], root: int, payload: tuple, nbytes: int,
                limb_bytes: int) -> tuple[tuple[tuple[int, int], int], ...]:
    c = CommOp(0, kind, "", 0, participants, root=root, payload=payload, nbytes=nbytes)
    out: dict[tuple[int, int], int] = {}

    def put(s: int, d: int, b: int) -> None:
        if b and s != d:
            out[(s, d)] = out.get((s, d), 0) + b

    P = c.participants
    if c.kind == "send":
        for d in P:
            put(c.root, d, c.nbytes)
        return tuple(out.items())
    if c.kind == "all_to_all":
        for d in P:
            for e in P:
                put(e, d, c.nbytes)
        return tuple(out.items())
    if c.kind == "shard_send":
        h = len(P) // 2
        for limbs, polys, count in c.payload:
            for k in range(h):
                put(P[k], P[h + k], own_limbs(limbs, h, k) * polys * count * limb_bytes)
        return tuple(out.items())
    for limbs, polys, count in c.payload:
        own = _limbs_of(P, limbs)
        unit = polys * count * limb_bytes
        if c.kind == "all_gather":
            for d in P:
                for e in P:
                    put(e, d, own[e] * unit)
        elif c.kind == "reduce_scatter":
            for d in P:
                for e in P:
                    put(e, d, own[d] * unit)
        elif c.kind == "all_reduce":
            for d in P:
                for e in P:
                    put(e, d, (own[d] + own[e]) * unit)
        elif c.kind == "limb_bcast":
            owner = P[(limbs - 1) % len(P)]
            for d in P:
                put(owner, d, unit)
        elif c.kind == "scatter":
            for d in P:
                put(c.root, d, own[d] * unit)
        elif c.kind == "gather":
            for e in P:
                put(e, c.root, own[e] * unit)
        else:
            raise ValueError(f"unknown comm kind {c.kind!r}; valid: {', '.join(KINDS)}")
    return tuple(out.items())


def pair_bytes_by_phase(comms: list[CommOp], limb_bytes: int) -> dict[tuple[int, int, str], int]:
    """Exact bytes per (source, destination, phase) over ``comms``: what sim predicts and exec must count."""
    out: dict[tuple[int, int, str], int] = {}
    for c in comms:
        for (s, d), b in pair_bytes(c, limb_bytes).items():
            out[(s, d, c.phase)] = out.get((s, d, c.phase), 0) + b
    return out


def total_bytes(c: CommOp, limb_bytes: int) -> int:
    """Bytes over all pairs (closed forms; equal to ``sum(pair_bytes(c).values())``)."""
    P = c.participants
    g = len(P)
    if c.kind == "send":
        return c.nbytes * sum(1 for d in P if d != c.root)
    if c.kind == "all_to_all":
        return c.nbytes * g * (g - 1)
    if c.kind == "shard_send":
        h = g // 2
        return sum(own_limbs(limbs, h, k) * polys * count * limb_bytes for limbs, polys, count in c.payload
                   for k in range(h) if P[k] != P[h + k])
    t = 0
    for limbs, polys, count in c.payload:
        unit = polys * count * limb_bytes
        if c.kind in ("all_gather", "reduce_scatter"):
            t += (g - 1) * limbs * unit
        elif c.kind == "all_reduce":
            t += 2 * (g - 1) * limbs * unit
        elif c.kind == "limb_bcast":
            t += (g - 1) * unit
        elif c.kind == "scatter":
            t += (limbs - own_limbs(limbs, g, P.index(c.root))) * unit if c.root in P else limbs * unit
        elif c.kind == "gather":
            t += (limbs - own_limbs(limbs, g, P.index(c.root))) * unit if c.root in P else limbs * unit
        else:
            raise ValueError(f"unknown comm kind {c.kind!r}; valid: {', '.join(KINDS)}")
    return t


def comm_to_dict(c: CommOp) -> dict[str, Any]:
    return {"id": c.id, "kind": c.kind, "phase": c.phase, "layer": c.layer, "participants": list(c.participants),
            "root": c.root, "payload": [list(x) for x in c.payload], "nbytes": c.nbytes, "after": list(c.after),
            "before": list(c.before), "internal": c.internal, "count": c.count, "total_bytes": c.total_bytes,
            "args": c.args}


def comm_from_dict(d: dict[str, Any]) -> CommOp:
    return CommOp(id=d["id"], kind=d["kind"], phase=d["phase"], layer=d["layer"],
                  participants=tuple(d["participants"]), root=d["root"],
                  payload=tuple(tuple(x) for x in d["payload"]), nbytes=d["nbytes"], after=tuple(d["after"]),
                  before=tuple(d["before"]), internal=d["internal"], count=d["count"],
                  total_bytes=d["total_bytes"], args=d.get("args", {}))
