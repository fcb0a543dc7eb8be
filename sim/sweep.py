"""Sweeps: many (model, sequence, devices, strategy, hardware) configurations, simulated in parallel.

The store of record is a SQLite file (:mod:`sim.store`) beside the output: ``--out sweep.csv``
keeps its rows in ``sweep.csv.sqlite`` (an output ending in ``.sqlite`` is the store itself, with
no table).  Only the parent process writes, one transaction per row as each configuration
finishes, under an exclusive writer lock (:mod:`sim.lock`): a second writer of the same output
is refused with the holder's pid, host and start time, or waits with ``wait=True``.  The CSV (or
Parquet, with pyarrow) table is an export of every valid row in the store, rewritten atomically
(:mod:`sim.table`) at the start, every :data:`EXPORT_EVERY_S` seconds while rows land, and at
the end.  Running the same sweep again checks every stored row and computes only the
configurations without a valid "ok" row (failed ones are retried); rows of other grids in the
same store are kept.  An existing output that is not a sweep table of this schema is refused and
left untouched; an old-style sweep CSV (from before the store) is imported row by row.  A
configuration that does not fit device memory is simulated with the limit lifted and marked
``fits = False``.

``FIELDS`` and ``KEY_FIELDS`` are the schema; ``KINDS`` says how the store checks a column (a
column without a kind may hold any scalar).  A store written with other columns is refused.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aegis.program import PHASES
from aegis.workloads import DEFAULT_WORKLOAD_PRESET

from . import table
from .executors import LOCAL, Runner, open_runner
from .lock import exclusive
from .store import Schema, SweepStore, read_store, sort_key

KEY_FIELDS = ("model", "seq", "devices", "strategy", "hardware", "params", "schedule", "overlap", "jitter")
FIELDS = KEY_FIELDS + ("status", "error", "latency_s", "comm_total_bytes") + tuple(f"comm_{p}_bytes" for p in PHASES) + (
    "peak_max_bytes", "peak_per_device", "capacity_bytes", "fits", "utilisation_mean", "utilisation_min",
    "critical_compute_s", "critical_comm_s", "critical_sync_s", "comm_critical_fraction", "nodes", "comm_ops",
    "plan_s", "sim_s", "attention")
#: strategies of the study (tensor-cerium: the published mapping, idle devices and all)
STRATEGIES = ["single", "limb", "tensor", "token", "aegis"]
#: how the store checks each column (see :data:`sim.store.VALUE_KINDS`); a column not named here may hold any scalar
KINDS: dict[str, str] = {
    **{f: "text" for f in ("model", "strategy", "hardware", "params", "schedule", "overlap", "status", "error",
                           "attention")},
    **{f: "int" for f in ("seq", "devices", "nodes", "comm_ops")},
    **{f: "number" for f in ("jitter", "latency_s", "comm_total_bytes", "peak_max_bytes", "capacity_bytes",
                             "utilisation_mean", "utilisation_min", "critical_compute_s", "critical_comm_s",
                             "critical_sync_s", "comm_critical_fraction", "plan_s", "sim_s",
                             *(f"comm_{p}_bytes" for p in PHASES))},
    "fits": "bool", "peak_per_device": "json"}
SCHEMA = Schema(FIELDS, KEY_FIELDS, {k: v for k, v in KINDS.items() if k in FIELDS})
#: seconds between table exports while rows land (at least ten times the last export's duration)
EXPORT_EVERY_S = 5.0
SUFFIXES = (".csv", ".parquet", ".sqlite")


@dataclass
class SweepSpec:
    """Lists to take the product of; ``single`` runs on one device only, and one device runs only ``single``
    (every strategy places everything on it)."""

    models: list[str] = field(default_factory=lambda: ["bert-base"])
    seqs: list[int] = field(default_factory=lambda: [512, 2048, 8192])
    devices: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    strategies: list[str] = field(default_factory=lambda: ["single", "limb", "tensor", "token", "aegis"])
    hardware: list[str] = field(default_factory=lambda: ["h100-sxm"])
    #: CKKS presets (a swept axis: the level budget and key sizes are a choice); a single name is accepted
    params: list[str] = field(default_factory=lambda: [DEFAULT_WORKLOAD_PRESET])
    #: ``default`` (the strategy's own), ``program`` or ``priority`` (:mod:`aegis.schedule`)
    schedules: list[str] = field(default_factory=lambda: ["default"])
    overlaps: list[str] = field(default_factory=lambda: ["on"])
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.params, str):
            self.params = [self.params]

    def configs(self) -> list[dict[str, Any]]:
        from aegis.hardware import load_hardware
        from aegis.placement import get_strategy
        from aegis.workloads import get_model
        from fhe.params import preset_names

        for m in self.models:
            get_model(m)
        secure = preset_names(include_toy=False)
        for p in self.params:
            if p not in secure:
                raise ValueError(f"CKKS preset {p!r}: a sweep runs 128-bit-secure presets only; valid: {', '.join(secure)}")
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
                for p in self.params:
                    for hw in self.hardware:
                        for g in self.devices:
                            for s in self.strategies:
                                if (s == "single") != (g == 1):   # one device: every strategy is single
                                    continue
                                for sc in self.schedules:
                                    for ov in self.overlaps:
                                        out.append({"model": m, "seq": int(seq), "devices": int(g), "strategy": s,
                                                    "hardware": hw, "params": p, "schedule": sc,
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
                k = SCHEMA.key_of(c)
                if k not in seen:
                    seen.add(k)
                    out.append(c)
        return out


def named_grid(name: str, params: str | list[str] = DEFAULT_WORKLOAD_PRESET) -> SweepGrid:
    """``default``: the regimes of the study in a few minutes on 2 cores -- BERT-base at 512, 2048 and 8192
    tokens on 1-8 h100-sxm (every strategy), 16384 tokens on 8 (single, token, aegis), 2048 tokens on
    a100-40gb, pcie-gen5 (4 and 8 devices) and 2x4-h100-ib (8), 8192 tokens on 4 a100-40gb (the memory-bound
    regime), GPT-2 small (causal) at 2048 tokens on 1 and 4; every strategy at 2048 x 4 h100-sxm also with
    overlap off and the program / priority schedules.
    ``full``: every profile (h100-sxm, h200-sxm, a100-sxm, a100-40gb, pcie-gen5, 2x4-h100-ib) at 2048 and 8192
    tokens on 1, 2, 4 and 8 devices, every strategy (tensor-cerium too), plus the default grid.
    ``params``: the CKKS preset(s); every configuration of the grid runs on each."""
    all_s = STRATEGIES + (["tensor-cerium"] if _has_strategy("tensor-cerium") else [])
    p = [params] if isinstance(params, str) else list(params)
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


_PROGRAMS: dict[tuple, Any] = {}


def run_one(cfg: dict[str, Any]) -> dict[str, Any]:
    """Plan and simulate one configuration (memory limit lifted, ``fits`` recorded)."""
    from aegis.plan import build_plan
    from aegis.program import attention_for, lower
    from aegis.workloads import Workload, get_model

    from .engine import simulate

    row: dict[str, Any] = dict(cfg)
    try:
        wl = attention_for(Workload(get_model(cfg["model"]), cfg["seq"], params_name=cfg["params"]), cfg["strategy"])
        pk = (cfg["model"], cfg["seq"], cfg["params"], wl.attention)
        program = _PROGRAMS.get(pk)         # one program kept per process (a Dask worker may run threads)
        if program is None:
            program = lower(wl)
            _PROGRAMS.clear()
            _PROGRAMS[pk] = program
        t0 = time.perf_counter()
        sched = None if cfg.get("schedule", "default") == "default" else cfg["schedule"]
        plan = build_plan(wl, cfg["strategy"], cfg["devices"], cfg["hardware"], program=program,
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
                   comm_ops=len(plan.comm), plan_s=t1 - t0, sim_s=t2 - t1, attention=plan.workload.attention)
        row.update({f"comm_{p}_bytes": s["comm_bytes"]["by_phase"].get(p, 0) for p in PHASES})
    except Exception as exc:  # a failed configuration is a row, not the end of the sweep
        row.update(status="error", error=f"{type(exc).__name__}: {exc}", attention="")
    return row


def cost(rows: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """What the "ok" rows cost to compute, to size a cluster: ``total_s`` (plan + simulate seconds over all of
    them), ``count`` and ``costliest`` (the row with the most plan + simulate seconds); None without ok rows.
    Lowering the program (once per model x length in each worker process) is not in these seconds."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return None
    def seconds(r: dict[str, Any]) -> float:
        return float(r["plan_s"]) + float(r["sim_s"])

    return {"total_s": sum(map(seconds, ok)), "count": len(ok), "costliest": max(ok, key=seconds)}


def store_path(out: str | Path) -> Path:
    """The store behind the output ``out``: ``out`` itself when it ends in .sqlite, else ``<out>.sqlite`` beside it."""
    out = Path(out)
    return out if out.suffix == ".sqlite" else out.with_name(out.name + ".sqlite")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a sweep file: a table (CSV values as text, Parquet typed) or a store (valid rows, typed); [] if absent."""
    path = Path(path)
    return read_store(path, SCHEMA) if path.suffix == ".sqlite" else table.read(path)


def _check_out(out: Path) -> None:
    if out.suffix not in SUFFIXES:
        raise ValueError(f"{out}: the sweep output must end in .csv, .parquet or .sqlite")
    if table.is_parquet(out):
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise ValueError(f"{out}: Parquet output needs pyarrow; use a .csv name or pip install pyarrow") from exc
    if not out.parent.is_dir():
        raise ValueError(f"{out}: the directory {out.parent} does not exist")


def _note(msg: str) -> None:
    print(f"sweep: {msg}", file=sys.stderr, flush=True)


def _imported(path: Path) -> list[dict[str, Any]]:
    rows, rejected = table.import_rows(path, SCHEMA)
    if rows:
        _note(f"imported {len(rows)} rows of {path} into {store_path(path)}")
    if rejected:
        _note(f"{len(rejected)} rows of {path} failed validation and were not imported (first: {rejected[0]}); "
              "they are recomputed when their configurations run")
    return rows


class _Exporter:
    """Writes the table of every valid row, at most every EXPORT_EVERY_S (and ten export times) seconds."""

    def __init__(self, path: Path | None, rows: dict[tuple, dict[str, Any]]) -> None:
        self.path, self.rows, self.next_at = path, rows, 0.0

    def __call__(self, force: bool = False) -> None:
        if self.path is None or not (force or time.monotonic() >= self.next_at):
            return
        t0 = time.monotonic()
        table.write(self.path, SCHEMA, sorted(self.rows.values(), key=sort_key(SCHEMA)))
        t1 = time.monotonic()
        self.next_at = t1 + max(EXPORT_EVERY_S, 10 * (t1 - t0))


def run_sweep(spec: SweepSpec, out: str | Path, workers: int | None = None, progress: bool = True, *,
              wait: bool = False, scheduler: str = LOCAL) -> list[dict]:
    """Run every configuration of ``spec`` without a valid "ok" row in the store of ``out``; return this grid's rows.

    ``out`` ends in .csv, .parquet (a table exported from the store ``<out>.sqlite``) or .sqlite (the
    store alone).  Raises :class:`sim.lock.LockHeld` when another process writes the same store
    (``wait``: block until it is done) and ValueError when ``out`` or its store is not a sweep of this
    schema.  Rows come back in grid order, typed (seconds, bytes).

    ``scheduler`` (:func:`sim.executors.parse_scheduler`) says where configurations run: ``local`` (a
    process pool of ``workers`` processes, default every core), ``dask-local`` (a Dask LocalCluster of
    ``workers`` processes) or ``dask://HOST:PORT`` (a running Dask cluster, reached before the output is
    touched: :class:`sim.executors.SchedulerUnreachable` when it does not answer).  Wherever they run, each
    row comes back here and is written by this process alone; a task that fails or whose workers die is a
    failed row, retried by the next run.
    """
    out = Path(out)
    _check_out(out)
    configs = spec.configs()
    db = store_path(out)
    tab = None if out == db else out
    with open_runner(scheduler, workers) as runner, exclusive(db, wait=wait, label=out):
        if tab is not None:
            table.check(tab, SCHEMA)
            table.remove_temps(tab)
        seed = (lambda: _imported(tab)) if tab is not None and tab.exists() else None    # used if the store is new
        with SweepStore.open(db, SCHEMA, seed=seed) as st:
            rows, invalid = st.read()
            grid = {SCHEMA.key_of(c): c for c in configs}
            if invalid:
                here = sum(SCHEMA.key_of(r) in grid for r, _ in invalid)
                _note(f"{len(invalid)} stored rows of {db} failed validation (first: {invalid[0][1]}); "
                      f"{here} of them are in this sweep and are recomputed, the others are kept but not exported")
            todo = [c for k, c in grid.items() if rows.get(k, {}).get("status") != "ok"]
            todo.sort(key=lambda c: (-c["seq"], -c["devices"]))     # longest first: better packing on the workers
            export = _Exporter(tab, rows)
            export(force=True)
            _compute(st, todo, len(grid), rows, export, runner, progress)
    return [rows[k] for k in grid if k in rows]


def _compute(st: SweepStore, todo: list[dict[str, Any]], total: int, rows: dict[tuple, dict[str, Any]],
             export: _Exporter, runner: Runner, progress: bool) -> None:
    """Run ``todo`` on ``runner``; this process writes each row to the store as it comes, then to the table."""
    if todo:
        _note(f"{len(todo)} of {total} configurations to compute on {runner.description}")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=total - len(todo), unit="config", desc="sweep")
    try:
        with closing(runner.results(run_one, todo)) as results:    # closed at once on Ctrl-C: workers stopped
            for cfg, out in results:
                row = _row(cfg, out)
                st.put(row)
                rows[SCHEMA.key_of(row)] = row
                export()
                if bar is not None:
                    bar.set_postfix_str(f"{row['strategy']} {row['seq']}x{row['devices']} {row['status']}")
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        export(force=True)


def _row(cfg: dict[str, Any], out: Any) -> dict[str, Any]:
    """The store row of ``cfg`` from its outcome: the row ``run_one`` returned, or a failed row (its key, status
    "error" and why) for an exception (a lost worker, a task that raised) or a result the store would not trust."""
    failed = {f: cfg.get(f) if f in KEY_FIELDS else None for f in FIELDS}
    if isinstance(out, BaseException):
        return {**failed, "status": "error", "error": " ".join(f"{type(out).__name__}: {out}".split())}
    row = {f: out.get(f) for f in FIELDS} if isinstance(out, dict) else {}
    why = SCHEMA.problem(row) if row else f"{type(out).__name__}, not a row"
    if why or SCHEMA.key_of(row) != SCHEMA.key_of(cfg):
        return {**failed, "status": "error", "error": f"invalid result: {why or 'the row of another configuration'}"}
    return row


def remove_sweep(out: str | Path) -> None:
    """Delete a sweep's table and store, under the writer lock (a table that is not a sweep's is refused)."""
    out = Path(out)
    db = store_path(out)
    with exclusive(db, label=out):
        if out != db:
            table.check(out, SCHEMA)
            table.remove_temps(out)
        for p in (out, db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            p.unlink(missing_ok=True)
