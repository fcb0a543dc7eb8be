"""`aegis reproduce`: the main job -- a small end-to-end study on this machine.

1. calibrate the ``cpu`` profile (kernel table and copy bandwidth of this machine);
2. simulate the default sweep (BERT-base x single/limb/tensor/token/aegis x 1/2/4/8 GPUs x
   512/2048/8192 tokens on ``h100-sxm``);
3. run the ``tiny`` model with real CKKS on 1, 2 and 4 virtual devices under every strategy
   (numpy backend; ``--gpu``: CuPy), each beside its prediction on the calibrated profile;
4. check simulator against executor for those runs;
5. draw every plot and write ``report.md`` with the tables and the published AEGIS figures.

``quick`` shrinks every stage (for the test suite).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from aegis.hardware import HARDWARE_DIR

from . import plots
from .check import check, format_check, write_check
from .metrics import comm_change, memory_table, with_speedup

CLAIMS = Path(HARDWARE_DIR).parent / "reference" / "aegis_claims.json"
STRATEGIES = ["single", "limb", "tensor", "token", "aegis"]


def _stage(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def run_tiny(out: Path, profile: Path, strategies: list[str], devices: list[int], backend: str,
             repeats: int = 1) -> list[Path]:
    """Execute the tiny model under each (strategy, devices) ``repeats`` times and keep each one's fastest run.

    The repeats are interleaved rounds over all configurations (as the calibration's are), so that a
    burst of load from elsewhere spoils one round of a configuration rather than all of its runs.
    Every run is checked (communication equal to the plan's, decrypted output within the promised
    precision); each run directory has result.json with every run's latency in ``measured_runs_s``.
    """
    from aegis.bootstrap_model import BootstrapConfig
    from aegis.plan import build_plan
    from aegis.workloads import Workload, get_model
    from exec.model import TINY_APPROX
    from exec.runner import ExecutionError, Executor, promised_precision, write_run
    from sim.engine import simulate
    from sim.profile import load_spec

    wl = Workload(get_model("tiny", layers=1), 64, params_name="toy-n11-deep", insecure=True, approx=TINY_APPROX)
    spec = load_spec(str(profile))
    configs = [(s, g) for g in devices for s in strategies if not (s == "single" and g > 1)]
    plans = {c: build_plan(wl, c[0], c[1], str(profile), bootstrap=BootstrapConfig(mode="client_aided"))
             for c in configs}
    best: dict[tuple[str, int], Any] = {}
    times: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    for r in range(max(repeats, 1)):
        for s, g in configs:
            plan = plans[(s, g)]
            print(f"-- tiny x 64 tokens, {s} on {g} virtual device(s)"
                  + (f", round {r + 1}/{repeats}" if repeats > 1 else ""), flush=True)
            res = Executor(plan, backend=backend).run(progress=True)
            m = res.result.summary
            if not m["comm_bytes_match"]:
                raise ExecutionError(f"{s} on {g}: measured communication differs from the plan's")
            if res.max_abs_error > promised_precision(plan.params):
                raise ExecutionError(f"{s} on {g}: decrypted output off by {res.max_abs_error:.2e}")
            times[(s, g)].append(m["latency_s"])
            if (s, g) not in best or m["latency_s"] < best[(s, g)][0].result.summary["latency_s"]:
                # the machine's load after the run (1-minute average, this run's own threads included):
                # other processes competing for the cores slow the measurement, which the simulator does not predict
                best[(s, g)] = (res, os.getloadavg()[0])
    dirs = []
    for s, g in configs:
        res, load = best[(s, g)]
        d = out / f"{s}-{g}"
        write_run(res, plans[(s, g)], simulate(plans[(s, g)], spec), str(d),
                  extra={"load_avg_1min": load, "cpu_count": os.cpu_count(), "measured_runs_s": times[(s, g)]})
        dirs.append(d)
    return dirs


def _calibration_load(out: Path) -> str:
    f = out / "profile-cpu-calibrated.json"
    load = json.loads(f.read_text())["kernel_table"]["provenance"].get("load_avg_1min") if f.exists() else None
    return "-" if load is None else f"{load:.1f}"


def _md_table(df: pd.DataFrame, cols: list[str], fmt: dict[str, str]) -> str:
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = ""
    for _, r in df.iterrows():
        body += "| " + " | ".join(format(r[c], fmt.get(c, "")) if c in fmt else str(r[c]) for c in cols) + " |\n"
    return head + body


def write_report(out: Path, sweep: pd.DataFrame, chk: Any, runs: list[Path], timings: dict[str, float],
                 quick: bool, backend: str, repeats: int = 1) -> Path:
    claims = json.loads(CLAIMS.read_text())
    sp = with_speedup(sweep)
    sp["latency_h"] = sp["latency_s"] / 3600
    sp["comm_GiB"] = sp["comm_total_bytes"] / 2 ** 30
    sp["peak_GiB"] = sp["peak_max_bytes"] / 2 ** 30
    sp = sp.sort_values(["seq", "devices", "strategy"])
    lines = ["# AEGIS reproduction report", "",
             f"Generated by `aegis reproduce{' --quick' if quick else ''}` on this machine ({backend} backend). "
             f"Stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ".", "",
             "## 1. Simulated sweep (BERT-base, h100-sxm profile, roofline kernel model)", "",
             "Speedup and efficiency are against one device running `single` (memory limit lifted where one "
             "device does not fit, marked `lifted`).", ""]
    cols = ["seq", "devices", "strategy", "latency_h", "speedup", "efficiency", "comm_GiB", "peak_GiB", "fits",
            "baseline_lifted"]
    lines.append(_md_table(sp, cols, {"latency_h": ".2f", "speedup": ".2f", "efficiency": ".3f", "comm_GiB": ",.1f",
                                      "peak_GiB": ".1f"}))
    cc = comm_change(sweep)
    if not cc.empty:
        lines += ["", "### Communication of `aegis` against the best prior design (limb or tensor), per phase group", ""]
        lines.append(_md_table(cc, [c for c in cc.columns if c != "hardware"],
                               {"attention_change_pct": "+.1f", "ffn_change_pct": "+.1f"}))
    mem = memory_table(sweep)
    w = claims["workload"]
    sel = sp[(sp["seq"] == w["seq_len"]) & (sp["devices"] == w["devices"])]
    lines += ["", f"## 2. Side by side with the published AEGIS figures ({w['seq_len']} tokens, {w['devices']} GPUs)", ""]
    if not sel.empty:
        ours = sel[sel["strategy"] == "aegis"].iloc[0]
        m = mem[(mem["seq"] == w["seq_len"]) & (mem["devices"] == w["devices"]) & (mem["strategy"] == "aegis")]
        c = cc[(cc["seq"] == w["seq_len"]) & (cc["devices"] == w["devices"])]
        rows = [("self-attention communication vs best prior", f"{claims['comm_reduction_pct']['attention']:+.1f} %",
                 f"{c['attention_change_pct'].iloc[0]:+.1f} % (vs {c['attention_best_baseline'].iloc[0]})" if not c.empty else "-"),
                ("FFN communication vs best prior", f"{claims['comm_reduction_pct']['ffn']:+.1f} %",
                 f"{c['ffn_change_pct'].iloc[0]:+.1f} % (vs {c['ffn_best_baseline'].iloc[0]})" if not c.empty else "-"),
                ("scaling efficiency", f"{claims['scaling_efficiency_pct']:.2f} %", f"{100 * ours['efficiency']:.2f} %"),
                ("speedup over one GPU", f"{claims['speedup']:.2f}x", f"{ours['speedup']:.2f}x"),
                ("per-device memory vs one GPU", f"{claims['memory_reduction_pct']:+.1f} %",
                 f"{m['memory_change_pct'].iloc[0]:+.1f} %" if not m.empty else "-")]
        lines += ["| figure | published AEGIS | this reproduction (simulated) |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c_} |" for a, b, c_ in rows]
        lines += ["", "Our figures are predictions of the simulator on a roofline kernel model (no H100 "
                  "calibration); the published ones are measurements."]
    lines += ["", "## 3. Real CKKS runs of the tiny model (numpy virtual devices) against the simulator", "",
              "Calibrated `cpu` profile; insecure toy parameters (`toy-n11-deep`, named so), client-aided refresh "
              "instead of bootstrapping. Measured: " + (f"the fastest of {repeats} runs per configuration, in "
              "interleaved rounds over all configurations" if repeats > 1 else "one run per configuration") +
              " (the calibrated table holds best-of-rounds times too); predicted: the simulator on the calibrated "
              "table, scaled by the in-situ factors (per op kind on one device, per limb group, two busy devices).", "", "```",
              format_check(chk),
              "```", ""]
    accs = []
    for d in runs:
        doc = json.loads((d / "result.json").read_text())
        load = doc.get("load_avg_1min")
        accs.append(f"| {d.name} | {doc['max_abs_error']:.2e} | {doc['max_abs_error_vs_exact']:.2e} | "
                    f"{doc['cosine_vs_exact']:.8f} | {doc['measured']['comm_bytes']['total']:,} | "
                    f"{'yes' if doc['comm_bytes_match'] else 'NO'} | {'-' if load is None else f'{load:.1f}'} |")
    lines += ["| run | max abs error vs plaintext program | vs exact model | cosine vs exact | bytes moved | "
              f"equal to plan | load (1 min, {os.cpu_count()} cores) |", "|---|---|---|---|---|---|---|"] + accs
    lines += ["", f"Load is the machine's 1-minute load average after each run, the run's own threads included "
              f"(during calibration: {_calibration_load(out)}). Where it exceeds the cores, "
              "other processes competed for them and the measured latency rises; the simulator predicts the "
              "machine as calibrated."]
    lines += ["", "## 4. Plots", ""]
    for name, title in (("scaling", "Scaling"), ("memory_4", "Memory on 4 devices"), ("comm_2048_4", "Communication"),
                        ("predicted_vs_measured", "Predicted vs measured"), ("timeline", "Timeline")):
        if (out / "plots" / f"{name}.png").exists():
            lines += [f"### {title}", "", f"![{title}](plots/{name}.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def reproduce(out_dir: str | Path, quick: bool = False, gpu: bool = False, repeats: int | None = None) -> int:
    """The main job; ``repeats`` measured runs per (strategy, devices), the fastest kept (default 2, quick 1)."""
    from exec.calibrate import calibrate, write_profile
    from sim.sweep import SweepSpec, read_rows, run_sweep

    if gpu:                                    # refuse before any work or output
        from fhe.backend import BackendUnavailable, cupy_available

        ok, why = cupy_available()
        if not ok:
            raise BackendUnavailable(f"reproduce --gpu needs CuPy and a CUDA GPU, and none is usable here: {why}. "
                                     "Run `aegis reproduce` without --gpu for the numpy backend on this CPU")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    backend = "cupy" if gpu else "numpy"
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    _stage("1/5 calibrating this machine")
    strategies = ["single", "aegis", "tensor"] if quick else STRATEGIES
    devices = [1, 2] if quick else [1, 2, 4]
    prof = calibrate("toy-n11-deep", backend=backend, insecure=True, repeats=1 if quick else 5,
                     limb_groups=[g for g in devices if g > 1])
    calibrate_load = os.getloadavg()[0]
    prof["kernel_table"]["provenance"]["load_avg_1min"] = calibrate_load
    profile = out / "profile-cpu-calibrated.json"
    write_profile(prof, profile)
    t["calibrate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _stage("2/5 simulating the default sweep")
    spec = SweepSpec(seqs=[512], devices=[1, 2]) if quick else SweepSpec()
    run_sweep(spec, out / "sweep.csv", progress=True)
    sweep = pd.DataFrame(read_rows(out / "sweep.csv"))
    sweep = sweep[sweep["status"] == "ok"]
    t["sweep"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _stage("3/5 running the tiny model with real CKKS")
    repeats = (1 if quick else 2) if repeats is None else repeats
    runs = run_tiny(out / "runs", profile, strategies, devices, backend, repeats)
    t["runs"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _stage("4/5 checking the simulator against the executor")
    chk = check(runs)
    write_check(chk, out / "check.csv")
    print(format_check(chk))
    t["check"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _stage("5/5 plots and report")
    plots.sweep_plots(out / "sweep.csv", out / "plots")
    plots.predicted_vs_measured([r["predicted_s"] for r in chk.rows], [r["measured_s"] for r in chk.rows],
                                [r["run"] for r in chk.rows], out / "plots" / "predicted_vs_measured")
    pick = next((d for d in runs if d.name.startswith("aegis-2")), runs[-1])
    import csv

    def rows(f: Path) -> list[tuple]:
        with open(f, newline="") as fh:
            return [tuple(r.values()) for r in csv.DictReader(fh)]
    plots.timeline(rows(pick / "ops_predicted.csv"), rows(pick / "ops_measured.csv"), out / "plots" / "timeline",
                   f"tiny, {pick.name}: simulated (left) and measured (right)")
    t["report"] = time.perf_counter() - t0
    report = write_report(out, sweep, chk, runs, t, quick, backend, repeats)
    print(f"\nreport: {report} ({sum(t.values()):.0f} s)")
    return 0
