"""Collectives and transfers as step sequences over the topology (NCCL-like alpha-beta model).

A communication op becomes one or more *calls*; a call runs one *algorithm* (a sequence of
*steps*; a step is a set of concurrent transfers ``(src, dst, bytes)``, each routed on the
shortest path) under one *protocol*.  With protocol ``p`` a call takes

    t_call = base_latency[p] + sum over steps of
             (step_latency[p] + max_transfer(path latency) + max_link(bytes / (bw x eff x bw_fraction[p])))

``eff`` is the profile's ``collective_efficiency`` (measured NCCL bus bandwidth / link
bandwidth), so a ring all-gather of G equal chunks on an NVSwitch takes
``(G-1) (2 alpha + chunk / busbw)`` plus the protocol's latencies: the nccl-tests
bus-bandwidth convention.  The protocols (``topology.protocols``: NCCL's LL, LL128 and
Simple, with the base and per-step latencies and bandwidth fractions of NCCL's own tuning
model, ``src/graph/tuning.cc``) make small messages latency bound and large ones bandwidth
bound; without them a call is the plain alpha-beta sum.

Algorithms (``topology.collective_algorithm``):

* ``ring`` -- all-gather and reduce-scatter in G-1 steps, each participant sending one chunk
  to its successor; all-reduce is the two in turn (2 (G-1) steps);
* ``direct`` -- one step in which every pair exchanges its chunk;
* ``tree`` -- all-reduce only: a reduction up a binary tree and a broadcast down it
  (2 ceil(log2 G) steps, each carrying the whole message);
* ``hierarchical`` -- participants spread evenly over several nodes (``kind = nodes``):
  all-gather exchanges each device's chunk with its rail peers in the other nodes (one step
  over the inter-node NICs), then all-gathers the node-aggregated chunks inside each node
  (ring); reduce-scatter runs the same steps in reverse order; all-reduce is the two in turn;
* ``auto`` -- NCCL's tuner: every applicable (algorithm, protocol) pair is timed and the fastest
  is used, so the choice depends on the message size.

Point-to-point kinds (send, scatter, gather, limb broadcast) and all-to-all are one step of
direct transfers (under the fastest protocol).  Bytes *counted* never depend on the
algorithm: they are :func:`aegis.comm.pair_bytes`, the logical bytes per device pair.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache

import networkx as nx

from aegis.comm import CommOp
from aegis.prims import own_limbs

from .profile import HardwareSpec

Link = tuple[object, object]
Transfer = tuple[int, int, float]

#: algorithms that apply to each collective kind under ``auto``
AUTO_ALGORITHMS = {
    "all_gather": ("ring", "direct", "hierarchical"),
    "reduce_scatter": ("ring", "direct", "hierarchical"),
    "all_reduce": ("ring", "tree", "hierarchical"),
}


@dataclass(frozen=True)
class Protocol:
    """One NCCL protocol: latency per call and per step (seconds), fraction of link bandwidth."""

    name: str
    base_latency_s: float = 0.0
    step_latency_s: float = 0.0
    bandwidth_fraction: float = 1.0


PLAIN = Protocol("plain")


class Network:
    """Routes and times transfers on one hardware profile with ``devices`` devices."""

    def __init__(self, spec: HardwareSpec, devices: int) -> None:
        self.spec = spec
        self.g = spec.graph(devices)
        self.eff = spec.collective_efficiency
        self.algorithm = spec.algorithm
        self.protocols = tuple(Protocol(n, **p) for n, p in spec.protocols.items()) or (PLAIN,)
        self.per_node = spec.devices_per_node
        self._paths: dict[tuple[int, int], tuple[Link, ...]] = {}
        self.call_time = lru_cache(maxsize=None)(self._call_time)

    def path(self, a: int, b: int) -> tuple[Link, ...]:
        """Links of the route a -> b (fewest hops, then lowest latency)."""
        key = (a, b)
        if key not in self._paths:
            nodes = nx.shortest_path(self.g, a, b, weight=lambda u, v, e: 1.0 + e["latency_s"])
            self._paths[key] = tuple(zip(nodes, nodes[1:]))
        return self._paths[key]

    def step_time(self, transfers: list[Transfer], proto: Protocol = PLAIN) -> float:
        """Seconds of one step: slowest path latency + the most loaded link's bytes over its bandwidth."""
        load: dict[Link, float] = defaultdict(float)
        lat = 0.0
        for s, d, b in transfers:
            if b <= 0 or s == d:
                continue
            p = self.path(s, d)
            lat = max(lat, sum(self.g.edges[e]["latency_s"] for e in p))
            for e in p:
                load[e] += b
        if not load:
            return 0.0
        bw = self.eff * proto.bandwidth_fraction
        return proto.step_latency_s + lat + max(b / (self.g.edges[e]["bytes_per_s"] * bw) for e, b in load.items())

    def links_of(self, steps: list[list[Transfer]]) -> frozenset:
        return frozenset(e for st in steps for s, d, b in st if b > 0 and s != d for e in self.path(s, d))

    # ---- algorithms -------------------------------------------------------------------------
    def _nodes_of(self, parts: tuple[int, ...]) -> list[list[int]] | None:
        """Participants grouped by node when they span several nodes evenly (else None)."""
        if not self.per_node:
            return None
        groups: dict[int, list[int]] = defaultdict(list)
        for k, d in enumerate(parts):
            groups[d // self.per_node].append(k)
        sizes = {len(v) for v in groups.values()}
        if len(groups) < 2 or len(sizes) != 1:
            return None
        return [groups[n] for n in sorted(groups)]

    def algorithms(self, kind: str, parts: tuple[int, ...]) -> tuple[str, ...]:
        """The algorithms a collective of ``kind`` may run on ``parts`` under this profile."""
        if self.algorithm != "auto":
            if self.algorithm == "hierarchical" and self._nodes_of(parts) is None:
                return ("ring",)
            if self.algorithm == "tree" and kind != "all_reduce":
                return ("ring",)
            return (self.algorithm,)
        algs = AUTO_ALGORITHMS[kind]
        return tuple(a for a in algs if a != "hierarchical" or self._nodes_of(parts) is not None)

    def collective_steps(self, kind: str, alg: str, parts: tuple[int, ...], own: list[float]) -> list[list[Transfer]]:
        """Steps of an all-gather / reduce-scatter / all-reduce (``own[k]``: bytes of participant k's chunk)."""
        G = len(parts)
        if G < 2:
            return []
        if kind == "all_reduce":
            if alg == "tree":
                total = sum(own)
                up: list[list[Transfer]] = []
                span = 1
                while span < G:           # binary tree over participant indices
                    up.append([(parts[k], parts[k - span], total) for k in range(span, G, 2 * span)])
                    span *= 2
                down = [[(b, a, x) for a, b, x in st] for st in reversed(up)]
                return up + down
            return self.collective_steps("reduce_scatter", alg, parts, own) + \
                self.collective_steps("all_gather", alg, parts, own)
        if alg == "direct":
            if kind == "all_gather":
                return [[(parts[m], parts[k], own[m]) for k in range(G) for m in range(G) if m != k]]
            return [[(parts[m], parts[k], own[k]) for k in range(G) for m in range(G) if m != k]]
        if alg == "hierarchical":
            nodes = self._nodes_of(parts)
            per = len(nodes[0])
            # inter-node: participant k exchanges with the participants at its position in every other node
            inter = [(parts[nodes[a][r]], parts[nodes[b][r]], own[nodes[a][r] if kind == "all_gather" else nodes[b][r]])
                     for r in range(per) for a in range(len(nodes)) for b in range(len(nodes)) if a != b]
            # intra-node ring over node-aggregated chunks (a chunk stands for the rail's chunks of every node)
            agg = [sum(own[nodes[n][r]] for n in range(len(nodes))) for r in range(per)]
            intra: list[list[Transfer]] = []
            shift = 1 if kind == "all_gather" else 0
            for s in range(1, per):
                intra.append([(parts[nd[r]], parts[nd[(r + 1) % per]], agg[(r - s + shift) % per])
                              for nd in nodes for r in range(per)])
            return [inter] + intra if kind == "all_gather" else intra + [inter]
        shift = 1 if kind == "all_gather" else 0          # ring
        return [[(parts[k], parts[(k + 1) % G], own[(k - s + shift) % G]) for k in range(G)]
                for s in range(1, G)]

    def steps(self, kind: str, parts: tuple[int, ...], root: int, limbs: int, unit: float,
              nbytes: float, alg: str | None = None) -> list[list[Transfer]]:
        """Steps of one call.  ``unit`` = bytes of one limb of all polynomials in the payload."""
        G = len(parts)
        own = [own_limbs(limbs, G, k) * unit for k in range(G)]
        if kind == "send":
            return [[(root, d, nbytes) for d in parts if d != root]]
        if kind == "all_to_all":
            return [[(e, d, nbytes) for d in parts for e in parts if e != d]]
        if kind == "scatter":
            return [[(root, d, own[k]) for k, d in enumerate(parts) if d != root]]
        if kind == "gather":
            return [[(e, root, own[k]) for k, e in enumerate(parts) if e != root]]
        if kind == "shard_send":             # source group -> destination group, k-th to k-th
            h = G // 2
            return [[(parts[k], parts[h + k], own_limbs(limbs, h, k) * unit) for k in range(h)
                     if parts[k] != parts[h + k]]]
        if kind == "limb_bcast":
            owner = parts[(limbs - 1) % G]
            return [[(owner, d, unit) for d in parts if d != owner]]
        if kind in AUTO_ALGORITHMS:
            return self.collective_steps(kind, alg or self.algorithms(kind, parts)[0], parts, own)
        raise ValueError(f"unknown comm kind {kind!r}")

    def _call_time(self, kind: str, parts: tuple[int, ...], root: int, limbs: int, unit: float,
                   nbytes: float) -> tuple[float, frozenset]:
        """Seconds of one call under the fastest applicable (algorithm, protocol), and its links."""
        algs = self.algorithms(kind, parts) if kind in AUTO_ALGORITHMS else (None,)
        best: tuple[float, frozenset] | None = None
        for alg in algs:
            st = self.steps(kind, parts, root, limbs, unit, nbytes, alg)
            if not st or not any(b > 0 and s != d for step in st for s, d, b in step):
                return 0.0, frozenset()
            for proto in self.protocols:
                t = proto.base_latency_s + sum(self.step_time(s, proto) for s in st)
                if best is None or t < best[0]:
                    best = (t, self.links_of(st))
        return best if best is not None else (0.0, frozenset())

    def choice(self, kind: str, parts: tuple[int, ...], limbs: int, unit: float) -> tuple[str, str, float]:
        """(algorithm, protocol, seconds) the tuner picks for one call of a collective (for reports and tests)."""
        out = []
        for alg in self.algorithms(kind, parts):
            st = self.steps(kind, parts, -1, limbs, unit, 0.0, alg)
            for proto in self.protocols:
                out.append((proto.base_latency_s + sum(self.step_time(s, proto) for s in st), alg, proto.name))
        t, alg, proto = min(out)
        return alg, proto, t

    def comm_time(self, c: CommOp, limb_bytes: int) -> tuple[float, frozenset]:
        """Seconds the comm op takes (all its calls back to back) and the links it occupies."""
        if c.kind in ("send", "all_to_all"):
            return self.call_time(c.kind, c.participants, c.root, 0, 0.0, float(c.nbytes))
        total, links = 0.0, frozenset()
        for limbs, polys, count in c.payload:
            t, ln = self.call_time(c.kind, c.participants, c.root, limbs, float(polys * limb_bytes), 0.0)
            total += t * count
            links |= ln
        return total, links
