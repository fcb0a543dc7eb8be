"""The Plan: everything the simulator and the executor need, versioned and JSON-serialisable.

``build_plan`` runs the pipeline: workload -> HE program -> dependency graph -> placement
-> schedule -> memory; the Plan holds the placed ops (with device, mode, level, limbs,
work), the communication ops with exact bytes, the per-device op orders and the memory
report.  ``Plan.save``/``Plan.load`` write and read it; loading a plan written with another
schema version fails with a message naming both versions.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .bootstrap_model import BootstrapConfig
from .comm import CommOp, comm_from_dict, comm_to_dict
from .graph import build_graph
from .hardware import HardwareProfile, load_hardware
from .keystore import KeyPlan, KeyPolicy, plan_keys, with_key_expansion
from .memory import MemoryReport, memory_report
from .placement import PlacementContext, get_strategy
from .placement.aegis import SEARCH_SLACK
from .program import PHASES, Op, Program, lower, work_totals
from .safeio import write_text
from .schedule import device_orders
from .workloads import Workload

PLAN_SCHEMA = "aegis-plan/2"   # 2: bootstrap config follows fhe.circuits.bootstrapping (k_bound, hamming_weight)


class PlanVersionError(ValueError):
    """A plan file written with another schema version."""


@dataclass
class Plan:
    """A placed and scheduled HE program.

    Attributes:
        workload: what was lowered.
        bootstrap: bootstrapping configuration.
        strategy: placement strategy name.
        devices: device count.
        hardware: hardware profile name.
        capacity_bytes: memory of one device (bytes).
        ops: the program's ops (ids index ``assign``/``mode``).
        outputs: op ids holding the final hidden state.
        assign: devices of every op.
        mode: ``whole`` | ``limb`` | ``partial`` of every op.
        comm: communication ops.
        orders: op order per device.
        memory: per-device memory report.
        notes: what the strategy decided.
        packing: tile geometry (dict).
        timings: seconds spent in each pipeline stage.
    """

    workload: Workload
    bootstrap: BootstrapConfig
    strategy: str
    devices: int
    hardware: str
    capacity_bytes: int
    ops: list[Op]
    outputs: list[int]
    assign: list[tuple[int, ...]]
    mode: list[str]
    comm: list[CommOp]
    orders: list[list[int]]
    memory: MemoryReport
    notes: list[str] = field(default_factory=list)
    packing: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    #: how it was built and is to be run: ``schedule`` (program | priority | unset), ``overlap`` (on | off),
    #: and the strategy's own options (``kv``, ``imbalance``)
    options: dict[str, Any] = field(default_factory=dict)
    #: where evaluation keys live when not replicated on every device (:mod:`aegis.keystore`); None: replicated
    keys: KeyPlan | None = None
    #: the candidates a searching strategy scored (``aegis plan --explain``)
    search: list[dict[str, Any]] = field(default_factory=list)

    # ---- summary ---------------------------------------------------------------------------
    @property
    def params(self):
        """The CKKS parameters (:class:`fhe.params.CKKSParameters`)."""
        return self.workload.params()

    @property
    def fits(self) -> bool:
        return all(p <= self.capacity_bytes for p in self.memory.peak)

    def comm_bytes_by_phase(self) -> dict[str, int]:
        out = {ph: 0 for ph in PHASES}
        for c in self.comm:
            out[c.phase] = out.get(c.phase, 0) + c.total_bytes
        return out

    def summary(self) -> dict[str, Any]:
        """The fields ``aegis plan --json`` writes."""
        by_phase = self.comm_bytes_by_phase()
        return {
            "schema": PLAN_SCHEMA,
            "model": self.workload.model.name, "seq_len": self.workload.seq_len,
            "params": self.workload.params_name, "strategy": self.strategy, "devices": self.devices,
            "hardware": self.hardware, "nodes": len(self.ops), "comm_ops": len(self.comm),
            "comm_bytes": {"total": sum(by_phase.values()), "by_phase": by_phase},
            "peak_memory_bytes": self.memory.peak, "memory": self.memory.to_dict(),
            "capacity_bytes": self.capacity_bytes, "fits": self.fits, "notes": self.notes,
            "weights": self.workload.weights, "bootstrap": self.bootstrap.mode, "packing": self.packing,
            "timings_s": self.timings, "options": self.options,
            "keys": self.keys.policy.label if self.keys else "replicated",
            "work": work_totals(self.ops),
            **({"search": self.search} if self.search else {}),
        }

    def format_summary(self) -> str:
        s = self.summary()
        gib = 2 ** 30
        lines = [f"{s['model']} x {s['seq_len']} tokens, {s['params']}, {self.packing.get('describe', '')}",
                 f"strategy {self.strategy} on {self.devices} x {self.hardware}: {s['nodes']} ops, "
                 f"{s['comm_ops']} communication ops"]
        lines += [f"  note: {n}" for n in self.notes]
        w = s["work"]
        lines.append(f"work: {w['key_switches']:,} key switches, {w['plaintext_mults']:,} plaintext and "
                     f"{w['ciphertext_mults']:,} ciphertext multiplies, {w['bootstraps']:,} bootstraps "
                     f"({len(w['per_layer'])} layers)")
        lines.append(f"communication: {s['comm_bytes']['total'] / gib:.2f} GiB")
        for ph, b in s["comm_bytes"]["by_phase"].items():
            if b:
                lines.append(f"  {ph:10} {b / gib:10.2f} GiB")
        lines.append(f"per-device peak memory (capacity {self.capacity_bytes / gib:.1f} GiB):")
        m = self.memory
        for d in range(self.devices):
            flag = "" if m.peak[d] <= self.capacity_bytes else "  OVER CAPACITY"
            lines.append(f"  device {d}: {m.peak[d] / gib:8.2f} GiB (keys {m.keys[d] / gib:.2f} [{m.key_count[d]}], "
                         f"weights {m.weights[d] / gib:.2f}, ciphertexts {m.live_peak[d] / gib:.2f}){flag}")
        lines.append("fits" if self.fits else "DOES NOT FIT: needs more devices, --weights on_the_fly, or bigger GPUs")
        return "\n".join(lines)

    def format_search(self) -> str:
        """The search's candidates as a table (``--explain``)."""
        if not self.search:
            return f"strategy {self.strategy} does not search: nothing to explain"
        gib = 2 ** 30
        lines = [f"{'mesh':5} {'keys':34} {'estimate s':>11} {'peak GiB':>9} {'comm GiB':>9} {'key GiB':>8}  verdict"]
        for r in self.search:
            t = f"{r['time_s']:11.5g}" if r.get("time_s") is not None else f"{'':11}"
            pk = f"{r['peak_bytes'] / gib:9.2f}" if r.get("peak_bytes") is not None else f"{'-':>9}"
            cb = f"{r['comm_bytes'] / gib:9.2f}" if r.get("comm_bytes") is not None else f"{'-':>9}"
            kb = f"{r.get('key_bytes', 0) / gib:8.2f}" if r.get("peak_bytes") is not None else f"{'-':>8}"
            lines.append(f"{r['mesh']:5} {str(r.get('keys') or '-'):34} {t} {pk} {cb} {kb}  {r.get('verdict', '')}")
        lines.append("rule: the fastest estimate that fits; of those within "
                     f"{100 * SEARCH_SLACK:.1f} % of it, the least peak memory")
        return "\n".join(lines)

    # ---- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        ops = []
        for o in self.ops:
            d = {f: getattr(o, f) for f in Op.__slots__ if f not in ("work", "reads")}
            d["work"] = [list(w) for w in o.work]
            d["reads"] = [list(r) for r in o.reads]
            d["devices"] = list(self.assign[o.id])
            d["mode"] = self.mode[o.id]
            ops.append(d)
        return {
            "schema": PLAN_SCHEMA, "summary": self.summary(), "workload": self.workload.to_dict(),
            "bootstrap": asdict(self.bootstrap), "strategy": self.strategy, "devices": self.devices,
            "hardware": self.hardware, "capacity_bytes": self.capacity_bytes, "packing": self.packing,
            "outputs": self.outputs, "ops": ops, "comm": [comm_to_dict(c) for c in self.comm],
            "orders": self.orders, "memory": self.memory.to_dict(), "notes": self.notes, "timings": self.timings,
            "options": self.options, "keys": self.keys.to_dict() if self.keys else None, "search": self.search,
        }

    def save(self, path: str | Path) -> None:
        write_text(path, json.dumps(self.to_dict(), separators=(",", ":")))

    @classmethod
    def from_dict(cls, d: dict[str, Any], allow_insecure: bool = False, source: str = "plan") -> "Plan":
        """The plan ``d`` describes, validated (:mod:`aegis.plan_check`); the file's ``insecure`` is ignored:
        only ``allow_insecure`` (the caller's ``--insecure``) grants an insecure parameter set."""
        from dataclasses import replace

        from .plan_check import check_plan, check_plan_dict

        ver = d.get("schema")
        if ver != PLAN_SCHEMA:
            raise PlanVersionError(f"plan schema {ver!r} is not supported; this version of aegis reads "
                                   f"{PLAN_SCHEMA!r} -- rebuild the plan with `aegis plan --out`")
        check_plan_dict(d, source)
        ops = []
        for od in d["ops"]:
            kw = {k: od[k] for k in Op.__slots__ if k in od}
            kw["inputs"] = tuple(kw["inputs"])
            kw["in_bytes"] = tuple(kw["in_bytes"])
            kw["rotations"] = tuple(kw["rotations"])
            kw["work"] = tuple(tuple(w) for w in od["work"])
            kw["reads"] = tuple(tuple(r) for r in od["reads"])
            ops.append(Op(**kw))
        m = d["memory"]
        plan = cls(
            workload=replace(Workload.from_dict(d["workload"]), insecure=bool(allow_insecure)),
            bootstrap=BootstrapConfig(**d["bootstrap"]),
            strategy=d["strategy"], devices=d["devices"], hardware=d["hardware"],
            capacity_bytes=d["capacity_bytes"], ops=ops, outputs=d["outputs"],
            assign=[tuple(od["devices"]) for od in d["ops"]], mode=[od["mode"] for od in d["ops"]],
            comm=[comm_from_dict(c) for c in d["comm"]], orders=d["orders"],
            memory=MemoryReport(m["keys"], m["weights"], m["live_peak"], m["peak"], m["key_count"]),
            notes=d["notes"], packing=d["packing"], timings=d.get("timings", {}),
            options=d.get("options", {}))
        plan.search = list(d.get("search") or [])
        if d.get("keys"):
            plan.keys = KeyPlan.from_dict(d["keys"], [c for c in plan.comm if "key" in c.args])
        check_plan(plan, source)
        return plan

    @classmethod
    def load(cls, path: str | Path, allow_insecure: bool = False) -> "Plan":
        """Read and validate a plan file; an insecure parameter set needs ``allow_insecure`` (``--insecure``)."""
        try:
            d = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a plan file (invalid JSON: {exc})") from exc
        if not isinstance(d, dict) or "schema" not in d:
            raise PlanVersionError(f"{path}: no 'schema' field; not an aegis plan")
        return cls.from_dict(d, allow_insecure, source=f"plan {path}")


def build_plan(workload: Workload, strategy: str, devices: int, hardware: str | HardwareProfile = "h100-sxm",
               bootstrap: BootstrapConfig | None = None, options: dict[str, Any] | None = None,
               program: Program | None = None) -> Plan:
    """Lower, build the graph, place, schedule and account memory.

    Args:
        workload: the model, sequence length and CKKS preset.
        strategy: ``single`` | ``limb`` | ``tensor`` | ``token`` | ``aegis``.
        devices: device count (>= 1).
        hardware: profile name or object (only the memory capacity is used here).
        bootstrap: bootstrapping configuration (default: CKKS bootstrapping).
        options: ``schedule`` (``program`` | ``priority``, :mod:`aegis.schedule`; default: the strategy's
            own), ``overlap`` (``on`` | ``off``: recorded for the simulator), and strategy options
            (``kv``: ``stream`` | ``gather``; ``imbalance``).
        program: a program already lowered from ``workload`` (to reuse across strategies).
    """
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    place = get_strategy(strategy)
    hw = hardware if isinstance(hardware, HardwareProfile) else load_hardware(hardware)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    if program is None and workload.attention == "auto":
        from .estimate import DeviceRates
        from .program import choose_attention

        program = choose_attention(workload, bootstrap, DeviceRates.from_raw(hw.raw.get("device", {})), strategy)
    prog = program or lower(workload, bootstrap)
    workload = prog.workload                       # the attention form "auto" chose
    t["lower"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph = build_graph(prog)
    t["graph"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ctx = PlacementContext(prog, graph, devices, hw.memory_bytes, hw, dict(options or {}))
    placement = place(ctx)
    t["place"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    opts = dict(options or {})
    schedule = opts.get("schedule")
    if opts.get("overlap", "on") not in ("on", "off"):
        raise ValueError(f"overlap must be on or off, got {opts['overlap']!r}")
    orders = placement.orders if placement.orders and schedule is None else device_orders(prog, placement, schedule)
    t["schedule"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mem = placement.memory if placement.memory and orders is placement.orders else memory_report(prog, placement, orders)
    t["memory"] = time.perf_counter() - t0
    ops = prog.ops
    policy = key_policy(opts) or (placement.keys.policy if placement.keys else None)
    if policy is not None and not policy.plain:
        t0 = time.perf_counter()
        if placement.keys is None or orders is not placement.orders or placement.keys.policy != policy:
            comm = [c for c in placement.comm if "key" not in c.args]
            placement.keys = plan_keys(prog, placement.assign, placement.mode, orders, policy, len(comm))
            placement.comm = comm + placement.keys.fetches
            mem = memory_report(prog, placement, orders)
        if policy.seeded:
            from dataclasses import replace

            ops = [replace(o, work=with_key_expansion(o.work)) if o.key_level >= 0 else o for o in prog.ops]
        t["keys"] = time.perf_counter() - t0
    else:
        placement.keys = None
    pk = prog.packing
    packing = {"slots": pk.slots, "token_block": pk.token_block, "channel_block": pk.channel_block,
               "head_dim": pk.head_dim, "token_blocks": pk.token_blocks, "key_chunks": len(prog.key_chunks),
               "describe": pk.describe()}
    return Plan(workload, prog.bootstrap, strategy, devices, hw.source or hw.name, hw.memory_bytes, ops, prog.outputs,
                placement.assign, placement.mode, placement.comm, orders, mem, placement.notes, packing, t,
                {k: v for k, v in opts.items() if v is not None}, placement.keys, list(placement.search))


#: ``--keys`` values: where evaluation keys live (:class:`aegis.keystore.KeyPolicy`)
KEY_CHOICES = ("replicated", "seeded", "sharded", "sharded+seeded")


def key_policy(options: dict[str, Any]) -> KeyPolicy | None:
    """The key policy ``options["keys"]`` (and ``options["key_buffer"]``) ask for, or None (the strategy's)."""
    v = options.get("keys")
    if v is None:
        return None
    if v not in KEY_CHOICES:
        raise ValueError(f"keys must be one of {', '.join(KEY_CHOICES)}, got {v!r}")
    return KeyPolicy("sharded" if v.startswith("sharded") else "replicated", v.endswith("seeded"),
                     float(options.get("key_buffer") or 2.0))
