"""``aegis bench sim``: simulator speed and the scaling it predicts.

1. BERT-base, 12 layers, 2048 tokens, 8 GPUs (h100-sxm), every strategy: plan and simulate
   wall time, simulated events per second.  Target: <= 5 s per configuration.
2. The default sweep grid (:func:`sim.sweep.named_grid`: the study's regimes) from scratch on all
   cores.  Target: <= 5 minutes on 2 cores.
3. 2048 tokens on 4 GPUs: speedup and scaling efficiency of every strategy against one GPU
   (its memory limit lifted when it does not fit, and said so), beside the published AEGIS
   figures (96.62 % efficiency, 3.86x).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any


from aegis.safeio import write_text

CLAIM_EFFICIENCY = 0.9662
CLAIM_SPEEDUP = 3.86
STRATEGIES = ("single", "limb", "tensor", "tensor-cerium", "token", "aegis")


def run(json_path: str | None = None, sweep_out: str | None = None) -> int:
    from aegis.plan import build_plan
    from aegis.program import lower
    from aegis.workloads import Workload, get_model

    from .engine import simulate
    from .sweep import named_grid, remove_sweep, run_sweep

    rec: dict[str, Any] = {"one": [], "claims": {}}
    wl = Workload(get_model("bert-base"), 2048)
    t0 = time.perf_counter()
    prog = lower(wl)
    t_lower = time.perf_counter() - t0
    print(f"BERT-base 2048 tokens, 8 x h100-sxm (lowering once: {t_lower:.2f} s)")
    print(f"{'strategy':13} {'plan s':>7} {'sim s':>7} {'events/s':>9} {'latency s':>10}")
    for s in STRATEGIES[1:]:
        t0 = time.perf_counter()
        plan = build_plan(wl, s, 8, program=prog)
        t1 = time.perf_counter()
        r = simulate(plan, lift_memory_limit=True)
        t2 = time.perf_counter()
        ok = "ok" if (t2 - t1) + (t1 - t0) + t_lower <= 5 else "MISSES 5 s"
        rec["one"].append({"strategy": s, "plan_s": t1 - t0, "sim_s": t2 - t1,
                           "events_per_s": r.summary["events_per_s"], "latency_s": r.summary["latency_s"]})
        print(f"{s:13} {t1 - t0:7.2f} {t2 - t1:7.2f} {r.summary['events_per_s']:9.0f} {r.summary['latency_s']:10.1f}  {ok}")

    print("\nBERT-base, 2048 tokens, 4 x h100-sxm against 1 x h100-sxm")
    base = simulate(build_plan(wl, "single", 1, program=prog), lift_memory_limit=True)
    b = base.summary["latency_s"]
    note = "" if base.summary["fits"] else " (one GPU's memory limit lifted: it does not fit)"
    print(f"one GPU: {b:.1f} s{note}")
    print(f"{'strategy':13} {'latency s':>10} {'speedup':>8} {'efficiency':>10}  critical path in communication")
    for s in STRATEGIES[1:]:
        r = simulate(build_plan(wl, s, 4, program=prog), lift_memory_limit=True)
        sp = b / r.summary["latency_s"]
        frac = r.summary["comm_critical_fraction"]
        rec["claims"][s] = {"latency_s": r.summary["latency_s"], "speedup": sp, "efficiency": sp / 4,
                            "comm_critical_fraction": frac}
        print(f"{s:13} {r.summary['latency_s']:10.1f} {sp:8.2f} {100 * sp / 4:9.2f} %  {100 * frac:.2f} %")
    print(f"published AEGIS: {CLAIM_SPEEDUP:.2f}x, {100 * CLAIM_EFFICIENCY:.2f} % efficiency on 4 GPUs")

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(sweep_out) if sweep_out else Path(tmp) / "sweep.csv"
        remove_sweep(out)                       # from scratch: the table and its store
        t0 = time.perf_counter()
        rows = run_sweep(named_grid("default"), out, progress=True)
        dt = time.perf_counter() - t0
    ok = "ok" if dt <= 300 else "MISSES 5 min"
    print(f"\ndefault sweep: {len(rows)} configurations in {dt:.1f} s on all cores  {ok}")
    rec["sweep_s"] = dt
    if json_path:
        write_text(json_path, json.dumps(rec, indent=2))
    return 0
