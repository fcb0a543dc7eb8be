"""`aegis check`: the simulator's prediction against the executor's measurement, for the same plans.

Input: run directories written by ``aegis run`` (``result.json``, ``ops_measured.csv``,
``ops_predicted.csv``).  For every run:

* communication bytes must be equal (measured == predicted, per phase);
* end-to-end latency error = (predicted - measured) / measured, where *measured* is the run replayed
  on each op's CPU time when the run carries it (``cpu``: MPI runs; other load on the machine does not
  change it, and it is compared with a prediction for a core per device), else the wall latency;
* per op kind: the same error on the summed busy time of that kind (kinds the simulator gives
  no time -- the client's encryption of the input and client-aided refreshes -- are listed
  apart with their measured time, not as errors);
* across runs of one (model, sequence, devices) the ranking of strategies by latency,
  predicted against measured (Kendall tau); where the simulator predicts one latency for all
  of them (on one device every strategy runs the same plan) there is no ranking to compare.

It fails (exit status 1) when the median absolute end-to-end error exceeds
``max_median`` (default 10 %), its 95th percentile exceeds ``max_p95`` (25 %), or any
communication count differs.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aegis.safeio import atomic_write

from .metrics import kendall_tau


@dataclass
class CheckResult:
    rows: list[dict[str, Any]]           # one per run
    kinds: list[dict[str, Any]]          # one per (run, op kind)
    median_abs_error: float
    p95_abs_error: float
    comm_mismatches: int
    kendall: dict[str, float | None]     # None: the predicted latencies are all equal
    passed: bool
    thresholds: dict[str, float]
    unmodelled: dict[str, float]         # op kind -> measured seconds over all runs, where the prediction is 0


def _busy_by_kind(path: Path, cpu: bool = False) -> dict[str, float]:
    """Seconds per op kind: wall (end - start), or the rows' ``cpu_s`` with ``cpu``."""
    out: dict[str, float] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            t = float(r["cpu_s"]) if cpu else float(r["end"]) - float(r["start"])
            out[r["kind"]] = out.get(r["kind"], 0.0) + t
    return out


def gate_time(measured: dict[str, Any]) -> tuple[str, float]:
    """Which measured latency the gate compares, and its value: ``cpu`` -- the run replayed on each op's CPU
    time (:mod:`exec.replay`; MPI runs carry it), which other load on the machine does not change -- else
    ``wall``, the end-to-end latency."""
    if isinstance(measured.get("cpu_latency_s"), (int, float)) and measured["cpu_latency_s"] > 0:
        return "cpu", float(measured["cpu_latency_s"])
    return "wall", float(measured["latency_s"])


#: what `check` reads from each result.json: dotted path -> type
RESULT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "measured.latency_s": (int, float), "measured.comm_bytes.total": (int, float), "predicted": (dict, type(None)),
    "plan.model": str, "plan.seq_len": int, "plan.devices": int, "plan.strategy": str, "comm_bytes_match": bool,
}


def read_result(path: Path) -> dict[str, Any]:
    """A run's result.json, checked for the fields :func:`check` reads (errors name the file and field)."""
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a result.json of `aegis run` (invalid JSON: {exc})") from None
    fields = dict(RESULT_FIELDS)
    if isinstance(doc, dict) and isinstance(doc.get("predicted"), dict):
        fields |= {"predicted.latency_s": (int, float), "predicted.comm_bytes.total": (int, float)}
    for dotted, kind in fields.items():
        cur: Any = doc
        for part in dotted.split("."):
            cur = cur.get(part, KeyError) if isinstance(cur, dict) else KeyError
        if cur is KeyError:
            raise ValueError(f"{path}: not a result.json of `aegis run`: missing field {dotted}")
        if not isinstance(cur, kind) or (dotted == "measured.latency_s" and not cur > 0):
            raise ValueError(f"{path}: field {dotted} is {cur!r}, expected "
                             + ("a positive number" if dotted.endswith("latency_s") else f"a {kind}"))
    return doc


def check(dirs: list[str | Path], max_median: float = 0.10, max_p95: float = 0.25) -> CheckResult:
    if not dirs:
        raise ValueError("no run directories to check; give the --out directories of `aegis run`")
    rows, kinds = [], []
    unmodelled: dict[str, float] = {}
    for d in map(Path, dirs):
        f = d / "result.json"
        if not f.exists():
            raise ValueError(f"{d}: no result.json (write one with `aegis run --out {d}`)")
        doc = read_result(f)
        m, p = doc["measured"], doc["predicted"]
        if p is None:
            raise ValueError(f"{d}: result.json has no predicted summary")
        plan = doc["plan"]
        which, measured_s = gate_time(m)
        err = (p["latency_s"] - measured_s) / measured_s
        comm_ok = bool(doc["comm_bytes_match"]) and m["comm_bytes"] == p["comm_bytes"]
        rows.append({"run": d.name, "model": plan["model"], "seq": plan["seq_len"], "devices": plan["devices"],
                     "strategy": plan["strategy"], "time": which, "measured_s": measured_s,
                     "wall_s": m["latency_s"], "predicted_s": p["latency_s"],
                     "error": err, "comm_bytes_measured": m["comm_bytes"]["total"],
                     "comm_bytes_predicted": p["comm_bytes"]["total"], "comm_equal": comm_ok})
        if (d / "ops_measured.csv").exists() and (d / "ops_predicted.csv").exists():
            bm, bp = _busy_by_kind(d / "ops_measured.csv", which == "cpu"), _busy_by_kind(d / "ops_predicted.csv")
            for k in sorted(set(bm) | set(bp)):
                if bm.get(k, 0) > 0 and bp.get(k, 0.0) == 0:
                    unmodelled[k] = unmodelled.get(k, 0.0) + bm[k]
                elif bm.get(k, 0) > 0:
                    kinds.append({"run": d.name, "kind": k, "measured_s": bm.get(k, 0.0), "predicted_s": bp.get(k, 0.0),
                                  "error": (bp.get(k, 0.0) - bm[k]) / bm[k]})
    errs = np.abs([r["error"] for r in rows]) if rows else np.array([0.0])
    med, p95 = float(np.median(errs)), float(np.percentile(errs, 95))
    mism = sum(1 for r in rows if not r["comm_equal"])
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(f"{r['model']}-{r['seq']}x{r['devices']}", []).append(r)
    tau: dict[str, float | None] = {}
    for g, rs in groups.items():
        if len(rs) > 1:
            pred = [r["predicted_s"] for r in rs]
            tied = max(pred) - min(pred) <= 1e-9 * max(abs(x) for x in pred)
            tau[g] = None if tied else kendall_tau(pred, [r["measured_s"] for r in rs])
    passed = med <= max_median and p95 <= max_p95 and mism == 0
    return CheckResult(rows, kinds, med, p95, mism, tau, passed, {"max_median": max_median, "max_p95": max_p95},
                       unmodelled)


def format_check(res: CheckResult) -> str:
    lines = [f"{'run':22} {'time':>4} {'measured s':>11} {'wall s':>8} {'predicted s':>12} {'error':>8}  comm"]
    for r in res.rows:
        lines.append(f"{r['run']:22} {r.get('time', 'wall'):>4} {r['measured_s']:11.3f} {r.get('wall_s', r['measured_s']):8.3f} "
                     f"{r['predicted_s']:12.3f} {100 * r['error']:7.1f}%  {'equal' if r['comm_equal'] else 'DIFFERENT'}")
    by_kind: dict[str, list[float]] = {}
    for k in res.kinds:
        by_kind.setdefault(k["kind"], []).append(abs(k["error"]))
    if by_kind:
        lines.append(f"{'op kind':14} {'median |err|':>13} {'p95 |err|':>10}")
        for k, v in sorted(by_kind.items()):
            lines.append(f"{k:14} {100 * float(np.median(v)):12.1f}% {100 * float(np.percentile(v, 95)):9.1f}%")
    if res.unmodelled:
        lines.append("not predicted (client side, no server time in the simulator): " +
                     ", ".join(f"{k} {v:.3f} s measured" for k, v in sorted(res.unmodelled.items())))
    for g, t in res.kendall.items():
        lines.append(f"strategy ranking {g}: " + ("predicted latencies all equal (one plan), no ranking"
                                                   if t is None else f"Kendall tau {t:+.2f}"))
    lines.append(f"end-to-end |error|: median {100 * res.median_abs_error:.1f}% (limit {100 * res.thresholds['max_median']:.0f}%), "
                 f"p95 {100 * res.p95_abs_error:.1f}% (limit {100 * res.thresholds['max_p95']:.0f}%); "
                 f"communication mismatches: {res.comm_mismatches}")
    lines.append(verdict(res))
    return "\n".join(lines)


def _runs_over(res: CheckResult, limit: float) -> str:
    """The runs whose |end-to-end error| exceeds ``limit``, worst first, with their errors."""
    over = sorted((r for r in res.rows if abs(r["error"]) > limit), key=lambda r: -abs(r["error"]))
    return ", ".join(f"{r['run']} {100 * r['error']:+.0f} %" for r in over) or "none"


def verdict(res: CheckResult) -> str:
    """One line: ``PASS`` or ``FAIL``, then why -- each limit exceeded and the runs beyond it."""
    lim_med, lim_p95 = res.thresholds["max_median"], res.thresholds["max_p95"]
    if res.passed:
        return (f"PASS: median |error| {100 * res.median_abs_error:.1f} % <= {100 * lim_med:.0f} %, "
                f"p95 {100 * res.p95_abs_error:.1f} % <= {100 * lim_p95:.0f} %, communication equal in all "
                f"{len(res.rows)} runs")
    why = []
    if res.median_abs_error > lim_med:
        why.append(f"median |error| {100 * res.median_abs_error:.1f} % exceeds the {100 * lim_med:.0f} % limit "
                   f"(runs beyond it: {_runs_over(res, lim_med)})")
    if res.p95_abs_error > lim_p95:
        why.append(f"p95 |error| {100 * res.p95_abs_error:.1f} % exceeds the {100 * lim_p95:.0f} % limit "
                   f"(runs beyond it: {_runs_over(res, lim_p95)})")
    if res.comm_mismatches:
        bad = ", ".join(r["run"] for r in res.rows if not r["comm_equal"])
        why.append(f"communication differs from the plan in {res.comm_mismatches} runs ({bad})")
    return "FAIL: " + "; ".join(why)


def write_check(res: CheckResult, path: str | Path) -> None:
    with atomic_write(path, newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(res.rows[0].keys()) if res.rows else ["run"])
        w.writeheader()
        w.writerows(res.rows)
