"""Sweeps: many (model, sequence, devices, strategy, hardware) configurations, simulated in parallel.

Rows are written as they finish (CSV, or Parquet when the output ends in ``.parquet`` and
pyarrow is present), so an interrupted sweep keeps what it finished; running it again with
the same output skips the finished rows and retries the failed ones.  A configuration that
does not fit device memory is simulated with the limit lifted and marked ``fits = False``.
"""
from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from aegis.program import PHASES
from aegis.workloads import DEFAULT_WORKLOAD_PRESET

KEY_FIELDS = ("model", "seq", "devices", "strategy", "hardware", "params", "schedule", "overlap", "jitter")
FIELDS = KEY_FIELDS + ("status", "error", "latency_s", "comm_total_bytes") + tuple(f"comm_{p}_bytes" for p in PHASES) + (
    "peak_max_bytes", "peak_per_device", "capacity_bytes", "fits", "utilisation_mean", "utilisation_min",
    "critical_compute_s", "critical_comm_s", "critical_sync_s", "comm_critical_fraction", "nodes", "comm_ops",
    "plan_s", "sim_s")
#: strategies of the study (tensor-cerium: the published mapping, idle devices and all)
STRATEGIES = ["single", "limb", "tensor", "token", "aegis"]


@dataclass
class SweepSpec:
    """Lists to take the product of; ``single`` runs on one device only, and one device runs only ``single``
    (every strategy places everything on it)."""

    models: list[str] = field(default_factory=lambda: ["bert-base"])
    seqs: list[int] = field(default_factory=lambda: [512, 2048, 8192])
    devices: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    strategies: list[str] = field(default_factory=lambda: ["single", "limb", "tensor", "token", "aegis"])
    hardware: list[str] = field(default_factory=lambda: ["h100-sxm"])
    params: str = DEFAULT_WORKLOAD_PRESET
    #: ``default`` (the strategy's own), ``program`` or ``priority`` (:mod:`aegis.schedule`)
    schedules: list[str] = field(default_factory=lambda: ["default"])
    overlaps: list[str] = field(default_factory=lambda: ["on"])
    jitter: float = 0.0

    def configs(self) -> list[dict[str, Any]]:
        from aegis.hardware import load_hardware
        from aegis.placement import get_strategy
        from aegis.workloads import get_model

        for m in self.models:
            get_model(m)
        for s in self.strategies:
            get_strategy(s)
        for h in self.hardware:
            load_hardware(h)
        for sc in self.schedules:
            if sc not in ("default", "program", "priority"):
                raise ValueError(f"schedule {sc!r}: valid are default, program, priority")
        for ov in self.overlaps:
            if ov not in ("on", "off"):
                raise ValueError(f"overlap {ov!r}: valid are on, off")
        out = []
        for m in self.models:
            for seq in self.seqs:
                for hw in self.hardware:
                    for g in self.devices:
                        for s in self.strategies:
                            if (s == "single") != (g == 1):   # one device: every strategy is single
                                continue
                            for sc in self.schedules:
                                for ov in self.overlaps:
                                    out.append({"model": m, "seq": int(seq), "devices": int(g), "strategy": s,
                                                "hardware": hw, "params": self.params, "schedule": sc,
                                                "overlap": ov, "jitter": float(self.jitter)})
        return out


@dataclass
class SweepGrid:
    """A union of sweep specs (regimes that are not one product), duplicates dropped."""

    specs: list[SweepSpec]

    def configs(self) -> list[dict[str, Any]]:
        seen, out = set(), []
        for sp in self.specs:
            for c in sp.configs():
                if _key(c) not in seen:
                    seen.add(_key(c))
                    out.append(c)
        return out


def named_grid(name: str, params: str = DEFAULT_WORKLOAD_PRESET) -> SweepGrid:
    """``default``: the regimes of the study in a few minutes on 2 cores -- BERT-base at 512, 2048 and 8192
    tokens on 1-8 h100-sxm (every strategy), 16384 tokens on 8 (single, token, aegis), 2048 tokens on
    a100-40gb, pcie-gen5 (4 and 8 devices) and 2x4-h100-ib (8), 8192 tokens on 4 a100-40gb (the memory-bound
    regime), GPT-2 small (causal) at 2048 tokens on 1 and 4; every strategy at 2048 x 4 h100-sxm also with
    overlap off and the program / priority schedules.
    ``full``: every profile (h100-sxm, h200-sxm, a100-sxm, a100-40gb, pcie-gen5, 2x4-h100-ib) at 2048 and 8192
    tokens on 1, 2, 4 and 8 devices, every strategy (tensor-cerium too), plus the default grid."""
    all_s = STRATEGIES + (["tensor-cerium"] if _has_strategy("tensor-cerium") else [])
    p = params
    default = [
        SweepSpec(["bert-base"], [512, 2048, 8192], [1, 2, 4, 8], all_s, ["h100-sxm"], p),
        SweepSpec(["bert-base"], [16384], [1, 8], ["single", "token", "aegis"], ["h100-sxm"], p),
        SweepSpec(["bert-base"], [2048], [1, 4, 8], all_s, ["a100-40gb", "pcie-gen5"], p),
        SweepSpec(["bert-base"], [2048], [1, 8], all_s, ["2x4-h100-ib"], p),
        SweepSpec(["bert-base"], [8192], [1, 4], all_s, ["a100-40gb"], p),
        SweepSpec(["gpt2-small"], [2048], [1, 4], all_s, ["h100-sxm"], p),
        SweepSpec(["bert-base"], [2048], [1, 4], all_s, ["h100-sxm"], p, schedules=["default", "program", "priority"],
                  overlaps=["on", "off"]),
        SweepSpec(["bert-base"], [2048], [1, 8], all_s, ["2x4-h100-ib"], p, schedules=["default", "program", "priority"],
                  overlaps=["on", "off"]),
    ]
    if name == "default":
        return SweepGrid(default)
    if name == "full":
        hw = ["h100-sxm", "h200-sxm", "a100-sxm", "a100-40gb", "pcie-gen5", "2x4-h100-ib"]
        return SweepGrid([SweepSpec(["bert-base"], [2048, 8192], [1, 2, 4, 8], all_s, hw, p)] + default)
    raise ValueError(f"unknown grid {name!r}; valid: default, full, custom")


def _has_strategy(name: str) -> bool:
    from aegis.placement import STRATEGIES as registered

    return name in registered


def _key(row: dict[str, Any]) -> tuple:
    return tuple(str(row[k]) for k in KEY_FIELDS)


_PROGRAMS: dict[tuple, Any] = {}


def run_one(cfg: dict[str, Any]) -> dict[str, Any]:
    """Plan and simulate one configuration (memory limit lifted, ``fits`` recorded)."""
    from aegis.plan import build_plan
    from aegis.program import lower
    from aegis.workloads import Workload, get_model

    from .engine import simulate

    row: dict[str, Any] = dict(cfg)
    try:
        wl = Workload(get_model(cfg["model"]), cfg["seq"], params_name=cfg["params"])
        pk = (cfg["model"], cfg["seq"], cfg["params"])
        if pk not in _PROGRAMS:
            _PROGRAMS.clear()
            _PROGRAMS[pk] = lower(wl)
        t0 = time.perf_counter()
        sched = None if cfg.get("schedule", "default") == "default" else cfg["schedule"]
        plan = build_plan(wl, cfg["strategy"], cfg["devices"], cfg["hardware"], program=_PROGRAMS[pk],
                          options={"schedule": sched, "overlap": cfg.get("overlap", "on")})
        t1 = time.perf_counter()
        res = simulate(plan, lift_memory_limit=True, jitter=float(cfg.get("jitter", 0.0)))
        t2 = time.perf_counter()
        s = res.summary
        row.update(status="ok", error="", latency_s=s["latency_s"], comm_total_bytes=s["comm_bytes"]["total"],
                   peak_max_bytes=max(s["peak_memory_bytes"]), peak_per_device=json.dumps(s["peak_memory_bytes"]),
                   capacity_bytes=s["capacity_bytes"], fits=s["fits"],
                   utilisation_mean=sum(s["utilisation"]) / len(s["utilisation"]),
                   utilisation_min=min(s["utilisation"]), critical_compute_s=s["critical_path"]["compute_s"],
                   critical_comm_s=s["critical_path"]["comm_s"], critical_sync_s=s["critical_path"]["sync_s"],
                   comm_critical_fraction=s["comm_critical_fraction"], nodes=len(plan.ops),
                   comm_ops=len(plan.comm), plan_s=t1 - t0, sim_s=t2 - t1)
        row.update({f"comm_{p}_bytes": s["comm_bytes"]["by_phase"].get(p, 0) for p in PHASES})
    except Exception as exc:  # a failed configuration is a row, not the end of the sweep
        row.update(status="error", error=f"{type(exc).__name__}: {exc}")
    return row


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows already in a sweep file (CSV or Parquet); [] when it does not exist."""
    if not path.exists():
        return []
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {f: [str(r.get(f, "")) if f in ("error", "peak_per_device") else r.get(f) for r in rows] for f in FIELDS}
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.table(cols), tmp)
    os.replace(tmp, path)


def run_sweep(spec: SweepSpec, out: str | Path, workers: int | None = None, progress: bool = True) -> list[dict]:
    """Run every configuration not already finished in ``out``; return all rows."""
    out = Path(out)
    if out.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise ValueError(f"{out}: Parquet output needs pyarrow; use a .csv name or pip install pyarrow") from exc
    elif out.suffix != ".csv":
        raise ValueError(f"{out}: the sweep output must end in .csv or .parquet")
    configs = spec.configs()
    old = read_rows(out)
    finished = {_key(r): r for r in old if r.get("status") == "ok"}
    todo = [c for c in configs if _key(c) not in finished]
    todo.sort(key=lambda c: (-c["seq"], -c["devices"]))     # longest first: better packing on the workers
    rows = list(finished.values())
    if out.suffix == ".csv":
        f = open(out, "w", newline="")
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
        f.flush()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(configs), initial=len(configs) - len(todo), unit="config", desc="sweep")
    workers = workers or os.cpu_count() or 1
    try:
        results: Iterable[dict[str, Any]]
        if workers > 1 and len(todo) > 1:
            pool = get_context("spawn").Pool(min(workers, len(todo)))
            results = pool.imap_unordered(run_one, todo)
        else:
            pool = None
            results = map(run_one, todo)
        for row in results:
            rows.append(row)
            if out.suffix == ".csv":
                w.writerow({k: row.get(k, "") for k in FIELDS})
                f.flush()
            else:
                _write_parquet(out, rows)
            if bar is not None:
                bar.set_postfix_str(f"{row['strategy']} {row['seq']}x{row['devices']} {row['status']}")
                bar.update(1)
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        if bar is not None:
            bar.close()
        if out.suffix == ".csv":
            f.close()
    return rows
