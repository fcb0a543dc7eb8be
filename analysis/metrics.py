"""Metrics over sweep tables (pandas DataFrames with the columns :mod:`sim.sweep` writes).

Definitions:

* **speedup** of a configuration = latency of ``single`` on one device of the same model,
  sequence length and hardware / its latency.  When one device cannot hold the workload
  the baseline is one device with its memory limit lifted (``baseline_lifted`` says so).
* **scaling efficiency** = speedup / devices.
* **communication change** of ``aegis`` in a phase group = (aegis bytes - bytes of the best
  prior design, the smaller of ``limb`` and ``tensor``) / that baseline, in percent
  (negative = less communication).  Phase groups: self-attention = attention + softmax,
  FFN = ffn + gelu.
* **memory per device against capacity** = the largest per-device peak / device capacity.
* **memory change** = (largest per-device peak of a strategy - peak of one device) / peak of one device.
"""
from __future__ import annotations

import pandas as pd

PHASE_GROUPS = {"attention": ("attention", "softmax"), "ffn": ("ffn", "gelu")}
KEYS = ["model", "seq", "hardware"]


def _num(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c in df.columns:
        if c.endswith("_bytes") or c in ("latency_s", "devices", "seq", "utilisation_mean"):
            df[c] = pd.to_numeric(df[c], errors="coerce")
    if "fits" in df:
        df["fits"] = df["fits"].astype(str).str.lower().isin(["true", "1"])
    return df


def _keys(df: pd.DataFrame) -> list[str]:
    """What identifies one workload in a table: model, sequence, hardware (and the CKKS preset if present)."""
    return KEYS + (["params"] if "params" in df else [])


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


def comm_change(df: pd.DataFrame, ours: str = "aegis", baselines: tuple[str, ...] = ("limb", "tensor", "tensor-cerium")
                ) -> pd.DataFrame:
    """Per (model, seq, hardware, devices > 1): aegis's change in % against the best baseline, per phase group."""
    df = phase_bytes(df)
    rows = []
    keys = _keys(df) + ["devices"]
    for key, grp in df[df["devices"] > 1].groupby(keys):
        row = dict(zip(keys, key))
        mine = grp[grp["strategy"] == ours]
        if mine.empty:
            continue
        for g in PHASE_GROUPS:
            col = f"comm_{g}_group_bytes"
            cand = grp[grp["strategy"].isin(baselines)][["strategy", col]]
            if cand.empty:
                continue
            best = cand.loc[cand[col].idxmin()]
            b = float(best[col])
            row[f"{g}_best_baseline"] = best["strategy"]
            row[f"{g}_change_pct"] = 100.0 * (float(mine[col].iloc[0]) - b) / b if b else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


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
