"""Plots (matplotlib, PNG and SVG): one style for the whole project.

Every function writes ``<out>.png`` and ``<out>.svg`` and returns the two paths.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from aegis.safeio import atomic_path  # noqa: E402

from .metrics import main_regime, memory_table, phase_bytes, presets, with_speedup  # noqa: E402

STRATEGY_STYLE = {
    "single": {"color": "#7f7f7f", "marker": "o"},
    "limb": {"color": "#d62728", "marker": "s"},
    "tensor": {"color": "#ff7f0e", "marker": "^"},
    "tensor-cerium": {"color": "#bcbd22", "marker": "<"},
    "token": {"color": "#1f77b4", "marker": "v"},
    "aegis": {"color": "#2ca02c", "marker": "D"},
}
PHASE_COLORS = {"attention": "#1f77b4", "softmax": "#aec7e8", "layernorm": "#9467bd", "ffn": "#ff7f0e",
                "gelu": "#ffbb78", "bootstrap": "#8c564b", "input": "#c7c7c7"}
GIB = 2 ** 30


def _save(fig: Any, out: str | Path) -> list[Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".png"), out.with_suffix(".svg")]
    for p in paths:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, dpi=130, bbox_inches="tight", format=p.suffix[1:])
    plt.close(fig)
    return paths


def _style(s: str) -> dict[str, Any]:
    return STRATEGY_STYLE.get(s, {"color": "black", "marker": "x"})


#: curves closer than this (relative) coincide on a plot; closer than SAME_REL they are the same values
COINCIDE_REL, SAME_REL = 5e-3, 1e-5


def _same_curve(curves: dict[str, tuple[list, list]], x: list, y: list) -> tuple[str, str] | None:
    """The drawn curve these (x, y) points would hide under, and ``"="`` (equal values) or ``"≈"``
    (within :data:`COINCIDE_REL`); None when no drawn curve coincides.  The closest one is named."""
    best: tuple[float, str] | None = None
    for name, (cx, cy) in curves.items():
        if cx != x:
            continue
        diff = max(abs(a - b) / max(abs(a), abs(b), 1e-12) for a, b in zip(cy, y))
        if diff <= COINCIDE_REL and (best is None or diff < best[0]):
            best = (diff, name)
    return None if best is None else (best[1], "=" if best[0] <= SAME_REL else "≈")


def _preset_note(d: pd.DataFrame) -> str:
    """The CKKS preset of a one-preset frame, for titles ('' without the column)."""
    return f", {d['params'].iloc[0]}" if "params" in d and len(d) else ""


def scaling(df: pd.DataFrame, out: str | Path, params: str | None = None) -> list[Path]:
    """Speedup and scaling efficiency against device count, per strategy, one column per sequence length
    (one CKKS preset: ``params``, see :func:`analysis.metrics.main_regime`).

    Strategies are drawn in :data:`STRATEGY_STYLE` order (``aegis`` last, on top); a curve identical to
    one already drawn (e.g. ``aegis`` placing like ``token``) is dashed with hollow markers and labelled
    ``aegis (= token)`` (``≈``: within 0.5 %, where the plot cannot tell them apart), so that neither
    hides the other."""
    d = with_speedup(main_regime(df, params=params))
    seqs = sorted(d["seq"].unique())
    fig, axes = plt.subplots(2, len(seqs), figsize=(4.2 * len(seqs), 7), squeeze=False, sharex=True)
    for c, seq in enumerate(seqs):
        sub = d[d["seq"] == seq]
        drawn: dict[str, tuple[list, list]] = {}
        order = [s for s in STRATEGY_STYLE if s in set(sub["strategy"])] + \
            sorted(set(sub["strategy"]) - set(STRATEGY_STYLE))
        for s in order:
            if s == "single":
                continue
            g = sub[sub["strategy"] == s].sort_values("devices")
            x = [1] + [int(v) for v in g["devices"]]     # one device runs `single` for every strategy
            sp = [1.0] + [float(v) for v in g["speedup"]]
            same = _same_curve(drawn, x, sp)
            drawn[s] = (x, sp)
            style = _style(s) | ({"ls": "--", "markerfacecolor": "none", "markersize": 9} if same else {})
            label = f"{s} ({same[1]} {same[0]})" if same else s
            axes[0][c].plot(x, sp, label=label, **style)
            axes[1][c].plot(x, [100.0] + list(100 * g["efficiency"]), label=label, **style)
        devs = sorted(sub["devices"].unique())
        axes[0][c].plot(devs, devs, ls=":", color="black", lw=0.8, label="ideal")
        lifted = bool(sub["baseline_lifted"].any())
        axes[0][c].set_title(f"{sub['model'].iloc[0]}, {seq} tokens" + ("\n(1 GPU: memory limit lifted)" if lifted else ""))
        axes[0][c].set_ylabel("speedup over 1 device (x)")
        axes[1][c].set_ylabel("scaling efficiency (%)")
        axes[1][c].set_xlabel("devices")
        axes[1][c].set_ylim(0, 105)
        for ax in (axes[0][c], axes[1][c]):
            ax.set_xticks(devs)
            ax.grid(alpha=0.3)
        axes[0][c].legend(loc="upper left", fontsize=7)       # per column: which curves coincide may differ
    fig.suptitle(f"Predicted scaling on {d['hardware'].iloc[0]}{_preset_note(d)}")
    return _save(fig, out)


def comm_by_phase(df: pd.DataFrame, seq: int, devices: int, out: str | Path, params: str | None = None) -> list[Path]:
    """Stacked bars: communication bytes per phase for each strategy (log scale: limb is orders larger)."""
    d = phase_bytes(main_regime(df, params=params))
    sub = d[(d["seq"] == seq) & (d["devices"] == devices)]
    phases = [p for p in PHASE_COLORS if f"comm_{p}_bytes" in sub and sub[f"comm_{p}_bytes"].sum() > 0]
    strategies = [s for s in STRATEGY_STYLE if s in set(sub["strategy"])]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    bottom = [0.0] * len(strategies)
    for p in phases:
        vals = [float(sub[sub["strategy"] == s][f"comm_{p}_bytes"].iloc[0]) / GIB for s in strategies]
        ax.bar(strategies, vals, bottom=bottom, color=PHASE_COLORS[p], label=p)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylabel("communication (GiB, symlog scale)")
    ax.set_title(f"Communication by phase, {sub['model'].iloc[0]} {seq} tokens on {devices} devices{_preset_note(sub)}")
    if phases:
        ax.legend(fontsize=8, ncol=3)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out)


def memory_vs_seq(df: pd.DataFrame, devices: int, out: str | Path, params: str | None = None) -> list[Path]:
    """Largest per-device peak memory against sequence length, with the device capacity line."""
    d = memory_table(main_regime(df, params=params))
    sub = d[(d["devices"] == devices) | ((d["strategy"] == "single") & (d["devices"] == 1))]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for s, g in sub.groupby("strategy"):
        g = g.sort_values("seq")
        ax.plot(g["seq"], g["peak_max_bytes"] / GIB, label=s if s != "single" else "single (1 device)", **_style(s))
    cap = float(sub["capacity_bytes"].iloc[0]) / GIB
    ax.axhline(cap, color="black", ls="--", lw=1, label=f"capacity {cap:.0f} GiB")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel("peak memory per device (GiB)")
    ax.set_title(f"Per-device peak memory on {devices} devices ({sub['hardware'].iloc[0]}{_preset_note(sub)})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def timeline(sim_rows: list[tuple], exec_rows: list[tuple], out: str | Path, title: str = "") -> list[Path]:
    """Gantt charts of op rows (op, kind, phase, layer, device, start, end, ...): simulated beside measured,
    on one time axis (so that the two lengths compare at a glance), the title above the panel titles."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=True, sharex=True, layout="constrained")
    for ax, rows, name in ((axes[0], sim_rows, "simulated"), (axes[1], exec_rows, "measured")):
        for r in rows:
            ax.barh(int(r[4]), float(r[6]) - float(r[5]), left=float(r[5]), height=0.6,
                    color=PHASE_COLORS.get(r[2], "#999999"), edgecolor="none")
        ax.set_title(name)
        ax.set_xlabel("time (s)")
        ax.grid(axis="x", alpha=0.3)
    end = max((float(r[6]) for r in list(sim_rows) + list(exec_rows)), default=1.0)
    axes[0].set_xlim(0, 1.02 * end)
    axes[0].set_ylabel("device")
    devs = sorted({int(r[4]) for r in list(sim_rows) + list(exec_rows)})
    axes[0].set_yticks(devs)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in PHASE_COLORS.values()]
    fig.legend(handles, list(PHASE_COLORS), fontsize=7, loc="outside right center")
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def _label_heights(ys: list[float], gap: float) -> list[float]:
    """Heights (axes fraction) for labels of points at heights ``ys``: each as close to its point as it
    can be while at least ``gap`` above the label below it, so that no two labels overlap."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    out = [0.0] * len(ys)
    last = -1.0
    for i in order:
        last = max(ys[i], last + gap)
        out[i] = last
    shift = max(0.0, last - 0.97)                      # keep the top label inside the axes
    return [h - shift for h in out]


def predicted_vs_measured(pred: list[float], meas: list[float], labels: list[str], out: str | Path,
                          title: str = "") -> list[Path]:
    """Scatter of predicted against measured seconds with y = x and +-10 % / +-25 % bands.

    One legend entry per strategy (a label's part before ``-``); only runs off by more than 10 %
    are annotated with their label, so that a cluster of agreeing runs stays readable."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    lo = min(min(pred), min(meas)) * 0.8
    hi = max(max(pred), max(meas)) * 1.25
    xs = [lo, hi]
    ax.plot(xs, xs, color="black", lw=1, label="y = x")
    for f, a in ((0.10, 0.25), (0.25, 0.12)):
        ax.fill_between(xs, [x * (1 - f) for x in xs], [x * (1 + f) for x in xs], color="gray", alpha=a,
                        label=f"+-{int(100 * f)} %")
    seen: set[str] = set()
    for p, m, lab in zip(pred, meas, labels):
        s = lab.split("-")[0]
        ax.scatter([m], [p], **{k: v for k, v in _style(s).items()}, label=None if s in seen else s)
        seen.add(s)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    # label the runs off by more than 10 %, staggered in height (a label's text never overlaps another's),
    # each beside its point with a thin leader line
    off = [(p, m, lab) for p, m, lab in zip(pred, meas, labels) if abs(p - m) > 0.10 * m]
    span = math.log(hi / lo)
    fx = [math.log(m / lo) / span for _, m, _ in off]
    heights = _label_heights([math.log(p / lo) / span for p, _, _ in off], gap=0.045)
    for (p, m, lab), x, h in zip(off, fx, heights):
        ax.annotate(lab, (m, p), xytext=(min(x + 0.04, 0.8), h), textcoords="axes fraction", fontsize=7,
                    va="center", arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.4"})
    ax.set_xlabel("measured (s)")
    ax.set_ylabel("predicted (s)")
    ax.set_title(title or "Simulator against executor, end-to-end latency")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, out)


def preset_comparison(df: pd.DataFrame, out: str | Path, strategy: str = "aegis") -> list[Path]:
    """The level budget as a choice: per sequence length (columns), latency (top) and largest per-device peak
    memory (bottom, with the capacity line) against device count, one line per CKKS preset, for ``strategy``
    (``single`` on one device; another strategy where the sweep lacks it)."""
    d = with_speedup(pd.concat([main_regime(df, params=p) for p in presets(df)]))
    if strategy not in set(d["strategy"]):
        strategy = next(s for s in list(STRATEGY_STYLE)[::-1] + sorted(set(d["strategy"])) if s in set(d["strategy"]))
    seqs = sorted(d["seq"].unique())
    fig, axes = plt.subplots(2, len(seqs), figsize=(4.2 * len(seqs), 7), squeeze=False, sharex=True)
    styles = ["-", "--", ":", "-."]
    for c, seq in enumerate(seqs):
        sub = d[(d["seq"] == seq) & ((d["strategy"] == strategy) | ((d["strategy"] == "single") & (d["devices"] == 1)))]
        for k, p in enumerate(presets(sub)):
            g = sub[sub["params"].astype(str) == p].sort_values("devices")
            kw = {"ls": styles[k % len(styles)], "marker": "os^Dv<"[k % 6], "label": p}
            axes[0][c].plot(g["devices"], g["latency_s"], **kw)
            axes[1][c].plot(g["devices"], g["peak_max_bytes"] / GIB, **kw)
        if len(sub):
            cap = float(sub["capacity_bytes"].iloc[0]) / GIB
            axes[1][c].axhline(cap, color="black", ls="--", lw=1, label=f"capacity {cap:.0f} GiB")
        axes[0][c].set_title(f"{sub['model'].iloc[0] if len(sub) else ''}, {seq} tokens")
        axes[0][c].set_ylabel("predicted latency (s)")
        axes[1][c].set_ylabel("peak memory per device (GiB)")
        axes[1][c].set_xlabel("devices")
        devs = sorted(sub["devices"].unique())
        for ax in (axes[0][c], axes[1][c]):
            ax.set_xticks(devs)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"CKKS presets: {strategy} (single on 1 device) on {d['hardware'].iloc[0]}")
    return _save(fig, out)


def sweep_plots(sweep_file: str | Path, out_dir: str | Path) -> list[Path]:
    """Every sweep plot for a sweep file (CSV or Parquet).  A sweep over several CKKS presets gets each plot
    once per preset (``<name>_<preset>``) and :func:`preset_comparison` (``presets``): rows of different
    presets are never drawn as one curve."""
    from sim.sweep import read_rows

    df = pd.DataFrame(read_rows(Path(sweep_file)))
    if df.empty:
        raise ValueError(f"{sweep_file}: no rows to plot")
    df = df[df["status"] == "ok"]
    out_dir = Path(out_dir)
    names = presets(df)
    paths: list[Path] = []
    for p in names or [None]:
        sfx = f"_{p}" if len(names) > 1 else ""
        paths += scaling(df, out_dir / f"scaling{sfx}", params=p)
        d = phase_bytes(main_regime(df, params=p))
        d = d[d["devices"] > 1]
        for seq, g in sorted({(int(a), int(b)) for a, b in zip(d["seq"], d["devices"])}):   # only pairs the grid holds
            paths += comm_by_phase(df, seq, g, out_dir / f"comm_{seq}_{g}{sfx}", params=p)
        for g in sorted({int(x) for x in d["devices"]}):
            paths += memory_vs_seq(df, g, out_dir / f"memory_{g}{sfx}", params=p)
    if len(names) > 1:
        paths += preset_comparison(df, out_dir / "presets")
    return paths
