"""Collectives and transfers as step sequences over the topology (alpha-beta per step).

A communication op becomes one or more *calls*; a call is a sequence of *steps*; a step is
a set of concurrent transfers ``(src, dst, bytes)``, each routed on the shortest path.
A step takes the largest path latency plus, for the most loaded link, the bytes it carries
divided by its bandwidth (links shared inside a step share their bandwidth):

    t_step = max_transfer(latency of its path) + max_link(bytes on link / (bandwidth x eff))

``eff`` is the profile's ``collective_efficiency`` (measured NCCL bus bandwidth / link
bandwidth), so a ring all-gather of G equal chunks on an NVSwitch takes
``(G-1) (2 alpha + chunk / busbw)``: the nccl-tests bus-bandwidth convention.

Ring algorithms (``collective_algorithm = ring``): all-gather and reduce-scatter in G-1
steps, each participant sending one chunk to its successor; all-reduce is the two in turn
(2 (G-1) steps).  ``direct``: one step in which
every pair exchanges its chunk.  Point-to-point kinds (send, scatter, gather, limb
broadcast) and all-to-all are one step of direct transfers.
"""
from __future__ import annotations

from collections import defaultdict
from functools import lru_cache

import networkx as nx

from aegis.comm import CommOp
from aegis.prims import own_limbs

from .profile import HardwareSpec

Link = tuple[object, object]
Transfer = tuple[int, int, float]


class Network:
    """Routes and times transfers on one hardware profile with ``devices`` devices."""

    def __init__(self, spec: HardwareSpec, devices: int) -> None:
        self.spec = spec
        self.g = spec.graph(devices)
        self.eff = spec.collective_efficiency
        self.algorithm = spec.algorithm
        self._paths: dict[tuple[int, int], tuple[Link, ...]] = {}
        self.call_time = lru_cache(maxsize=None)(self._call_time)

    def path(self, a: int, b: int) -> tuple[Link, ...]:
        """Links of the route a -> b (fewest hops, then lowest latency)."""
        key = (a, b)
        if key not in self._paths:
            nodes = nx.shortest_path(self.g, a, b, weight=lambda u, v, e: 1.0 + e["latency_s"])
            self._paths[key] = tuple(zip(nodes, nodes[1:]))
        return self._paths[key]

    def step_time(self, transfers: list[Transfer]) -> float:
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
        return lat + max(b / (self.g.edges[e]["bytes_per_s"] * self.eff) for e, b in load.items())

    def links_of(self, steps: list[list[Transfer]]) -> frozenset:
        return frozenset(e for st in steps for s, d, b in st if b > 0 and s != d for e in self.path(s, d))

    # ---- one call of a comm op --------------------------------------------------------------
    def steps(self, kind: str, parts: tuple[int, ...], root: int, limbs: int, unit: float,
              nbytes: float) -> list[list[Transfer]]:
        """Steps of one call.  ``unit`` = bytes of one limb of all polynomials in the payload."""
        G = len(parts)
        own = [own_limbs(limbs, G, k) * unit for k in range(G)]
        if kind == "send":
            return [[(root, d, nbytes) for d in parts if d != root]]
        if kind == "all_to_all":
            return [[(e, d, nbytes) for d in parts for e in parts if e != d]]
        if kind == "all_reduce":
            return self.steps("reduce_scatter", parts, root, limbs, unit, nbytes) + \
                self.steps("all_gather", parts, root, limbs, unit, nbytes)
        if kind == "scatter":
            return [[(root, d, own[k]) for k, d in enumerate(parts) if d != root]]
        if kind == "gather":
            return [[(e, root, own[k]) for k, e in enumerate(parts) if e != root]]
        if kind == "limb_bcast":
            owner = parts[(limbs - 1) % G]
            return [[(owner, d, unit) for d in parts if d != owner]]
        if kind in ("all_gather", "reduce_scatter"):
            if G < 2:
                return []
            if self.algorithm == "direct":
                if kind == "all_gather":
                    return [[(parts[m], parts[k], own[m]) for k in range(G) for m in range(G) if m != k]]
                return [[(parts[m], parts[k], own[k]) for k in range(G) for m in range(G) if m != k]]
            shift = 1 if kind == "all_gather" else 0
            return [[(parts[k], parts[(k + 1) % G], own[(k - s + shift) % G]) for k in range(G)]
                    for s in range(1, G)]
        raise ValueError(f"unknown comm kind {kind!r}")

    def _call_time(self, kind: str, parts: tuple[int, ...], root: int, limbs: int, unit: float,
                   nbytes: float) -> tuple[float, frozenset]:
        st = self.steps(kind, parts, root, limbs, unit, nbytes)
        return sum(self.step_time(s) for s in st), self.links_of(st)

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
