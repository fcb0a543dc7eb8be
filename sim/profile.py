"""Hardware profiles for the simulator: devices, topology as a graph, collective parameters.

A profile is ``data/hardware/<name>.json`` (the file :mod:`aegis.hardware` also reads for
the capacity).  Fields (units in the names):

``device``    ``memory_bytes``, ``hbm_bytes_per_s``, ``mod_ops_per_s`` (modular operations),
              ``launch_overhead_s``, ``memory_efficiency`` and ``compute_efficiency`` (fraction
              of peak a CKKS kernel reaches), ``kernel_efficiency`` {prim: factor} (optional).
              ``copy_hbm_bytes_per_byte`` (optional, default 0): HBM bytes a transfer's copy
              engines read or write per byte sent or received on this device, taken from the
              kernels running there (:mod:`sim.engine`).  ``kernels`` (optional) ``unfused`` (default:
              one launch per step, our rings) or ``fused`` (a fused GPU library's launches and HBM
              traffic, :class:`fhe.costs.FusedCosts`); ``word_bits`` 64 (default) or 32 (with fused
              kernels only) and ``prime_bits`` (bits per prime of a 32-bit library, default 30).
``topology``  ``kind`` = switch | ring | mesh | pcie | nodes | custom, ``link_bytes_per_s`` and
              ``link_latency_s`` per direction, ``collective_algorithm`` = ring | direct | tree |
              hierarchical | auto (:mod:`sim.network`), ``protocols`` {name: {base_latency_s,
              step_latency_s, bandwidth_fraction}} (optional; NCCL's LL / LL128 / Simple),
              ``collective_efficiency`` (measured NCCL bus bandwidth / link bandwidth),
              ``link_overrides`` [{src, dst, bytes_per_s?, latency_s?}] for uneven links,
              ``links`` [{src, dst, bytes_per_s, latency_s}] for ``custom``; ``pcie`` also
              ``devices_per_switch`` and ``uplink_bytes_per_s``; ``nodes`` (several machines:
              NVLink through a switch inside a node, one NIC per device to a network switch
              between nodes) also ``devices_per_node``, ``inter_node_bytes_per_s`` and
              ``inter_node_latency_s``.
``kernel_table`` (optional) calibrated seconds per primitive, ``{"log_n": .., "prims": {prim:
              {"fixed_s": a, "per_limb_s": b}}, "samples": {prim: [[limbs, s], ...]},
              "limb": {G: {"prims": .., "samples": ..}}, "executor_factor": f,
              "executor_factor_by_kind": {op kind: f}, "executor_factor_limb": {G: f},
              "provenance": {...}}`` (all but ``log_n`` and ``prims`` optional; the factors are
              positive; see :mod:`sim.compute`); without it kernel time is a roofline on
              :mod:`fhe.costs` bytes and modular operations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from aegis.estimate import KERNEL_STYLES
from aegis.hardware import HardwareError, read_profile

TOPOLOGIES = ("switch", "ring", "mesh", "pcie", "nodes", "custom")
ALGORITHMS = ("ring", "direct", "tree", "hierarchical", "auto")
PROTOCOL_FIELDS = ("base_latency_s", "step_latency_s", "bandwidth_fraction")


class ProfileError(ValueError):
    """A profile file with a missing or bad field; the message names the field."""


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator (all rates per second, sizes in bytes)."""

    model: str
    memory_bytes: int
    hbm_bytes_per_s: float
    mod_ops_per_s: float
    launch_overhead_s: float
    memory_efficiency: float = 0.7
    compute_efficiency: float = 0.5
    kernel_efficiency: dict[str, float] = field(default_factory=dict)
    copy_hbm_bytes_per_byte: float = 0.0
    kernels: str = "unfused"
    word_bits: int = 64
    prime_bits: int = 0


@dataclass(frozen=True)
class HardwareSpec:
    """A hardware profile: device, topology and collective parameters, optional kernel table."""

    name: str
    device: DeviceSpec
    topology: dict[str, Any]
    kernel_table: dict[str, Any] | None
    raw: dict[str, Any]

    @property
    def algorithm(self) -> str:
        return self.topology.get("collective_algorithm", "ring")

    @property
    def collective_efficiency(self) -> float:
        return float(self.topology.get("collective_efficiency", 1.0))

    @property
    def protocols(self) -> dict[str, dict[str, float]]:
        """NCCL-like protocols {name: {base_latency_s, step_latency_s, bandwidth_fraction}} ({} = plain alpha-beta)."""
        return {str(k): {f: float(v[f]) for f in PROTOCOL_FIELDS} for k, v in (self.topology.get("protocols") or {}).items()}

    @property
    def devices_per_node(self) -> int | None:
        """Devices per machine on a multi-node topology (None on one machine)."""
        return int(self.topology["devices_per_node"]) if self.topology.get("kind") == "nodes" else None

    def graph(self, devices: int) -> nx.DiGraph:
        """Directed link graph for ``devices`` devices (nodes ``0..G-1`` and switch names).

        Every edge has ``bytes_per_s`` and ``latency_s``; ``link_overrides`` change single links.
        """
        t = self.topology
        bw, lat = float(t["link_bytes_per_s"]), float(t["link_latency_s"])
        g = nx.DiGraph()
        g.add_nodes_from(range(devices))

        def link(a: Any, b: Any, b_s: float = bw, l_s: float = lat) -> None:
            g.add_edge(a, b, bytes_per_s=b_s, latency_s=l_s)
            g.add_edge(b, a, bytes_per_s=b_s, latency_s=l_s)

        kind = t["kind"]
        if kind == "switch":
            for d in range(devices):
                link(d, "switch")
        elif kind == "ring":
            for d in range(devices):
                if devices > 1:
                    link(d, (d + 1) % devices)
        elif kind == "mesh":
            for a in range(devices):
                for b in range(a + 1, devices):
                    link(a, b)
        elif kind == "pcie":
            per = int(t.get("devices_per_switch", 4))
            up = float(t.get("uplink_bytes_per_s", bw))
            switches = -(-devices // per)
            for d in range(devices):
                link(d, f"pcie{d // per}")
            if switches > 1:
                for s in range(switches):
                    link(f"pcie{s}", "root", up, lat)
        elif kind == "nodes":
            per = int(t["devices_per_node"])
            nic, nic_lat = float(t["inter_node_bytes_per_s"]), float(t["inter_node_latency_s"])
            for d in range(devices):
                link(d, f"node{d // per}")
                if devices > per:
                    link(d, "net", nic, nic_lat)
        elif kind == "custom":
            for i, e in enumerate(t.get("links", [])):
                try:
                    g.add_edge(_node(e["src"]), _node(e["dst"]), bytes_per_s=float(e["bytes_per_s"]),
                               latency_s=float(e["latency_s"]))
                except KeyError as exc:
                    raise ProfileError(f"{self.name}: topology.links[{i}] misses field {exc}") from exc
        for i, o in enumerate(t.get("link_overrides", [])):
            a, b = _node(o.get("src")), _node(o.get("dst"))
            if not g.has_edge(a, b):
                raise ProfileError(f"{self.name}: topology.link_overrides[{i}]: no link {a!r} -> {b!r} in a "
                                   f"{kind} topology of {devices} devices")
            for f in ("bytes_per_s", "latency_s"):
                if f in o:
                    g.edges[a, b][f] = float(o[f])
        for d in range(devices):
            for e in range(devices):
                if d != e and not nx.has_path(g, d, e):
                    raise ProfileError(f"{self.name}: device {e} is unreachable from device {d} in the topology")
        return g


def _node(x: Any) -> Any:
    return int(x) if isinstance(x, (int, float)) or (isinstance(x, str) and x.isdigit()) else x


def _req(d: dict[str, Any], path: str, name: str, kind: type = float, positive: bool = True) -> Any:
    cur: Any = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise ProfileError(f"{name}: missing field {path}")
        cur = cur[part]
    try:
        v = kind(cur)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{name}: field {path} must be a {kind.__name__}, got {cur!r}") from exc
    if isinstance(v, (int, float)) and (v <= 0 if positive else v < 0):
        raise ProfileError(f"{name}: field {path} must be {'> 0' if positive else '>= 0'}, got {v!r}")
    return v


def _int_field(device: dict[str, Any], key: str, default: int, name: str) -> int:
    v = device.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProfileError(f"{name}: field device.{key} must be an integer, got {v!r}")
    return v


def parse_spec(raw: dict[str, Any], name: str = "profile") -> HardwareSpec:
    """Validate a profile dict (errors name the field)."""
    dev = DeviceSpec(
        model=str(raw.get("device", {}).get("model", name)),
        memory_bytes=int(_req(raw, "device.memory_bytes", name)),
        hbm_bytes_per_s=_req(raw, "device.hbm_bytes_per_s", name),
        mod_ops_per_s=_req(raw, "device.mod_ops_per_s", name),
        launch_overhead_s=_req(raw, "device.launch_overhead_s", name, positive=False),
        memory_efficiency=float(raw["device"].get("memory_efficiency", 0.7)),
        compute_efficiency=float(raw["device"].get("compute_efficiency", 0.5)),
        kernel_efficiency=dict(raw["device"].get("kernel_efficiency", {})),
        copy_hbm_bytes_per_byte=float(raw["device"].get("copy_hbm_bytes_per_byte", 0.0)),
        kernels=str(raw["device"].get("kernels", "unfused")),
        word_bits=_int_field(raw["device"], "word_bits", 64, name),
        prime_bits=_int_field(raw["device"], "prime_bits", 30 if raw["device"].get("word_bits") == 32 else 0, name),
    )
    if dev.kernels not in KERNEL_STYLES:
        raise ProfileError(f"{name}: field device.kernels is {dev.kernels!r}; valid: {', '.join(KERNEL_STYLES)}")
    if dev.word_bits not in (32, 64):
        raise ProfileError(f"{name}: field device.word_bits must be 32 or 64, got {dev.word_bits}")
    if dev.word_bits == 32 and dev.kernels != "fused":
        raise ProfileError(f"{name}: field device.word_bits 32 needs device.kernels 'fused' "
                           "(the unfused model is our 64-bit rings')")
    if dev.word_bits == 32 and not 20 <= dev.prime_bits <= 31:
        raise ProfileError(f"{name}: field device.prime_bits must be in 20..31 for 32-bit words, got {dev.prime_bits}")
    if dev.copy_hbm_bytes_per_byte < 0:
        raise ProfileError(f"{name}: field device.copy_hbm_bytes_per_byte must be >= 0, got {dev.copy_hbm_bytes_per_byte}")
    for f in ("memory_efficiency", "compute_efficiency"):
        v = getattr(dev, f)
        if not 0 < v <= 1:
            raise ProfileError(f"{name}: field device.{f} must be in (0, 1], got {v}")
    topo = raw.get("topology")
    if not isinstance(topo, dict):
        raise ProfileError(f"{name}: missing field topology")
    kind = topo.get("kind")
    if kind not in TOPOLOGIES:
        raise ProfileError(f"{name}: field topology.kind is {kind!r}; valid: {', '.join(TOPOLOGIES)}")
    if kind != "custom":
        _req(raw, "topology.link_bytes_per_s", name)
        _req(raw, "topology.link_latency_s", name, positive=False)
    alg = topo.get("collective_algorithm", "ring")
    if alg not in ALGORITHMS:
        raise ProfileError(f"{name}: field topology.collective_algorithm is {alg!r}; valid: {', '.join(ALGORITHMS)}")
    if kind == "nodes":
        _req(raw, "topology.devices_per_node", name, int)
        _req(raw, "topology.inter_node_bytes_per_s", name)
        _req(raw, "topology.inter_node_latency_s", name, positive=False)
    protos = topo.get("protocols") or {}
    if not isinstance(protos, dict):
        raise ProfileError(f"{name}: field topology.protocols must map protocol names to {{{', '.join(PROTOCOL_FIELDS)}}}")
    for pn, pv in protos.items():
        for f in PROTOCOL_FIELDS:
            v = _req(raw, f"topology.protocols.{pn}.{f}", name, positive=False)
            if v < 0 or (f == "bandwidth_fraction" and not 0 < v <= 1):
                raise ProfileError(f"{name}: field topology.protocols.{pn}.{f} must be "
                                   f"{'in (0, 1]' if f == 'bandwidth_fraction' else '>= 0'}, got {v}")
    eff = float(topo.get("collective_efficiency", 1.0))
    if not 0 < eff <= 1:
        raise ProfileError(f"{name}: field topology.collective_efficiency must be in (0, 1], got {eff}")
    table = raw.get("kernel_table")
    if table is not None:
        if "prims" not in table or "log_n" not in table:
            raise ProfileError(f"{name}: field kernel_table needs 'log_n' and 'prims'")
        for g, e in (table.get("limb") or {}).items():
            if not str(g).isdigit() or int(g) < 2 or not isinstance(e, dict) or "prims" not in e:
                raise ProfileError(f"{name}: field kernel_table.limb.{g} needs a group size >= 2 and 'prims'")
        _check_kernel_seconds(table, name)
        factors = {"executor_factor": table.get("executor_factor", 1.0)}
        factors |= {f"executor_factor_by_kind.{k}": v for k, v in (table.get("executor_factor_by_kind") or {}).items()}
        factors |= {f"executor_factor_limb.{g}": v for g, v in (table.get("executor_factor_limb") or {}).items()}
        for field_name, v in factors.items():
            if not isinstance(v, (int, float)) or not v > 0:
                raise ProfileError(f"{name}: field kernel_table.{field_name} must be a positive number "
                                   f"(measured over predicted seconds), got {v!r}")
    return HardwareSpec(str(raw.get("name", name)), dev, topo, table, raw)


def _seconds_ok(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _check_kernel_seconds(table: dict[str, Any], name: str) -> None:
    """Every fitted ``fixed_s``/``per_limb_s`` and every ``samples`` [[limbs, seconds], ...] of the kernel table
    (and of its limb groups) is a finite number >= 0: a negative time would silently shorten predictions."""
    groups = {"": table} | {f"limb.{g}.": e for g, e in (table.get("limb") or {}).items()}
    for pre, e in groups.items():
        prims = e.get("prims")
        if not isinstance(prims, dict):
            raise ProfileError(f"{name}: field kernel_table.{pre}prims must map primitives to {{fixed_s, per_limb_s}}")
        for prim, fit in prims.items():
            for f in ("fixed_s", "per_limb_s"):
                v = fit.get(f) if isinstance(fit, dict) else None
                if not _seconds_ok(v):
                    raise ProfileError(f"{name}: field kernel_table.{pre}prims.{prim}.{f} must be a finite number "
                                       f">= 0 (seconds), got {v!r}")
        for prim, pts in (e.get("samples") or {}).items():
            ok = isinstance(pts, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 and _seconds_ok(p[0])
                                               and _seconds_ok(p[1]) for p in pts)
            if not ok:
                raise ProfileError(f"{name}: field kernel_table.{pre}samples.{prim} must be [[limbs, seconds], ...] "
                                   f"with finite numbers >= 0, got {pts!r}"[:300])


def load_spec(name_or_path: str) -> HardwareSpec:
    """Load a profile by name (``h100-sxm``) or path."""
    try:
        path, raw = read_profile(name_or_path)
    except HardwareError as exc:
        raise ProfileError(str(exc)) from exc
    return parse_spec(raw, str(path.stem))
