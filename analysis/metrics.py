"""Metrics over sweep tables (pandas DataFrames with the columns :mod:`sim.sweep` writes).

Definitions:

* **speedup** of a configuration = latency of ``single`` on one device of the same model,
  sequence length and hardware / its latency.  When one device cannot hold the workload
  the baseline is one device with its memory limit lifted (``baseline_lifted`` says so).
* **scaling efficiency** = speedup / devices.
* **communication change** of ``aegis`` in a phase group against *each* baseline
  separately (``limb``, ``tensor``, ``tensor-cerium``, ``token``) = (aegis bytes - baseline
  bytes) / baseline bytes, in percent (negative = less communication).  Never a silent
  minimum over baselines: every figure names its baseline, and a figure of -100 % or one
  whose baseline moves nothing carries its cause (:func:`change_note`).  Phase groups:
  self-attention = attention + softmax, FFN = ffn + gelu.
* **what bounds a configuration** (:func:`bound`): memory (it does not fit), communication
  (>= 5 % of the simulated critical path), synchronisation, idle devices (imbalance),
  redundant work (devices busy but efficiency low: limb parallelism computes the special
  primes on every device), or compute (balanced, nothing exposed).
* **memory per device against capacity** = the largest per-device peak / device capacity.
* **memory change** = (largest per-device peak of a strategy - peak of one device) / peak of one device.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

PHASE_GROUPS = {"attention": ("attention", "softmax"), "ffn": ("ffn", "gelu")}
KEYS = ["model", "seq", "hardware"]
#: sweep columns that make one configuration a variant of another (compared like for like)
VARIANTS = ["params", "schedule", "overlap", "jitter"]


def _num(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c in df.columns:
        if c.endswith("_bytes") or c.endswith("_s") or c in ("devices", "seq", "utilisation_mean", "utilisation_min",
                                                               "comm_critical_fraction", "jitter"):
            df[c] = pd.to_numeric(df[c], errors="coerce")
    if "fits" in df:
        df["fits"] = df["fits"].astype(str).str.lower().isin(["true", "1"])
    return df


def _keys(df: pd.DataFrame) -> list[str]:
    """What identifies one workload in a table: model, sequence, hardware (and the CKKS preset, schedule,
    overlap and jitter where present)."""
    return KEYS + [v for v in VARIANTS if v in df]


def presets(df: pd.DataFrame) -> list[str]:
    """The CKKS presets a sweep table holds (the default workload preset first), [] without the column."""
    from aegis.workloads import DEFAULT_WORKLOAD_PRESET

    if "params" not in df or not len(df):
        return []
    return sorted(set(df["params"].astype(str)), key=lambda p: (p != DEFAULT_WORKLOAD_PRESET, p))


def main_regime(df: pd.DataFrame, model: str = "bert-base", hardware: str = "h100-sxm",
                params: str | None = None) -> pd.DataFrame:
    """The rows of one regime for the scaling plots and the main table: ``model`` on ``hardware`` (or the
    table's most common ones), one CKKS preset (``params``, else the default workload preset where the table
    has it, else its first: rows of different presets are never mixed), the strategies' default schedule,
    overlap on, no jitter."""
    d = df
    if "params" in d and len(d):
        d = d[d["params"].astype(str) == (params or presets(d)[0])]
    for col, want in (("model", model), ("hardware", hardware)):
        if col in d and len(d):
            d = d[d[col] == (want if want in set(d[col]) else d[col].mode().iloc[0])]
    for col, want in (("schedule", "default"), ("overlap", "on")):
        if col in d:
            d = d[d[col].astype(str) == want]
    if "jitter" in d:
        d = d[pd.to_numeric(d["jitter"], errors="coerce").fillna(0) == 0]
    return d


def with_speedup(df: pd.DataFrame) -> pd.DataFrame:
    """Adds ``speedup``, ``efficiency`` and ``baseline_lifted`` (see module docstring)."""
    df = _num(df[df.get("status", "ok") == "ok"] if "status" in df else df)
    keys = _keys(df)
    base = df[(df["strategy"] == "single") & (df["devices"] == 1)][keys + ["latency_s", "fits"]]
    base = base.rename(columns={"latency_s": "baseline_latency_s", "fits": "baseline_fits"})
    out = df.merge(base, on=keys, how="left")
    out["speedup"] = out["baseline_latency_s"] / out["latency_s"]
    out["efficiency"] = out["speedup"] / out["devices"]
    out["baseline_lifted"] = ~out["baseline_fits"].fillna(True).astype(bool)
    return out


def phase_bytes(df: pd.DataFrame) -> pd.DataFrame:
    """Bytes per phase group (self-attention, FFN) per row."""
    df = _num(df)
    for g, phases in PHASE_GROUPS.items():
        df[f"comm_{g}_group_bytes"] = sum(df[f"comm_{p}_bytes"] for p in phases)
    return df


BASELINES = ("limb", "tensor", "tensor-cerium", "token")
GROUP_NAMES = {"attention": "self-attention", "ffn": "FFN"}


def change_note(group: str, ours: float, base: float, baseline: str, strategy: str = "aegis") -> str:
    """Why a communication change is what it is, where the figure alone would mislead ('' otherwise)."""
    name = GROUP_NAMES.get(group, group)
    if base == 0 and ours == 0:
        return f"neither moves {name} bytes"
    if base == 0:
        return f"{baseline} moves no {name} bytes by construction; {strategy} moves {ours / 2 ** 30:.2f} GiB"
    if ours == 0:
        return (f"-100 % by construction: {strategy} keeps every {name} operand on the device of its token block "
                f"(token-coherent), so no {name} bytes cross devices; {baseline} moves {base / 2 ** 30:.2f} GiB")
    return ""


def comm_change(df: pd.DataFrame, ours: str = "aegis", baselines: tuple[str, ...] = BASELINES) -> pd.DataFrame:
    """Per (workload, devices > 1) and baseline: ``ours``'s change in % per phase group, with its cause where
    the figure is -100 % or undefined.  Columns: keys, devices, baseline, ``{g}_ours_bytes``, ``{g}_baseline_bytes``,
    ``{g}_change_pct`` (NaN where the baseline moves nothing), ``{g}_note``."""
    df = phase_bytes(df)
    rows = []
    keys = _keys(df) + ["devices"]
    for key, grp in df[df["devices"] > 1].groupby(keys):
        mine = grp[grp["strategy"] == ours]
        if mine.empty:
            continue
        for bname in baselines:
            base = grp[grp["strategy"] == bname]
            if base.empty:
                continue
            row = dict(zip(keys, key))
            row["baseline"] = bname
            for g in PHASE_GROUPS:
                col = f"comm_{g}_group_bytes"
                o, b = float(mine[col].iloc[0]), float(base[col].iloc[0])
                row[f"{g}_ours_bytes"], row[f"{g}_baseline_bytes"] = o, b
                row[f"{g}_change_pct"] = 100.0 * (o - b) / b if b else float("nan")
                row[f"{g}_note"] = change_note(g, o, b, bname, ours)
            rows.append(row)
    return pd.DataFrame(rows)


def bound(row: Any) -> str:
    """What bounds one configuration (a row of :func:`with_speedup`, with the critical-path columns)."""
    g = int(row["devices"])
    if not bool(row.get("fits", True)):
        return (f"memory: {float(row['peak_max_bytes']) / 2 ** 30:.1f} GiB on a device of "
                f"{float(row['capacity_bytes']) / 2 ** 30:.1f} GiB (does not fit)")
    frac = float(row.get("comm_critical_fraction", 0.0) or 0.0)
    if frac >= 0.05:
        return f"communication: {100 * frac:.1f} % of the critical path"
    if g == 1:
        return "compute (one device)"
    lat = float(row["latency_s"])
    sync = float(row.get("critical_sync_s", 0.0) or 0.0)
    if lat and sync / lat >= 0.05:
        return f"synchronisation: {100 * sync / lat:.1f} % of the critical path waits for partner devices"
    umin, umean = float(row.get("utilisation_min", row["utilisation_mean"])), float(row["utilisation_mean"])
    eff = float(row.get("efficiency", float("nan")))
    if umean < 0.95 or umin < 0.9:
        return f"imbalance: devices busy {100 * umin:.0f}-{100 * umean:.0f} % (min-mean) of the time"
    if eff == eff and eff < 0.95:
        return (f"redundant work: devices busy {100 * umean:.0f} % but efficiency {100 * eff:.0f} % "
                "(work replicated on every device)")
    return (f"compute: every device busy {100 * umin:.0f} %+, communication {100 * frac:.2f} % of the critical "
            "path")


def memory_table(df: pd.DataFrame) -> pd.DataFrame:
    """Largest per-device peak against capacity and against one device, per row."""
    df = _num(df)
    df["peak_over_capacity"] = df["peak_max_bytes"] / df["capacity_bytes"]
    keys = _keys(df)
    one = df[(df["strategy"] == "single") & (df["devices"] == 1)][keys + ["peak_max_bytes"]]
    one = one.rename(columns={"peak_max_bytes": "single_peak_bytes"})
    out = df.merge(one, on=keys, how="left")
    out["memory_change_pct"] = 100.0 * (out["peak_max_bytes"] - out["single_peak_bytes"]) / out["single_peak_bytes"]
    return out


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-a between two rankings of the same items (1 = same order)."""
    n = len(a)
    if n < 2:
        return 1.0
    s = 0
    for i in range(n):
        for j in range(i + 1, n):
            x, y = a[i] - a[j], b[i] - b[j]
            s += (x > 0) - (x < 0) if y > 0 else ((x < 0) - (x > 0) if y < 0 else 0)
    return s / (n * (n - 1) / 2)
