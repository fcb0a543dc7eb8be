"""``aegis bench softmax``: the error table of MiniLM's approximated softmax at 128, 512 and 2048 tokens.

For each length and each shift (``position``: the range-controlled shift of
:mod:`exec.softmax_fit`; ``constant``: one shift per (layer, head), the range control it replaces)
the approximations are fitted on the ``[fit]`` sentences concatenated to that length and evaluated
on the ``[held-out]`` sentences concatenated to it (2048: interpolated positions, see
:mod:`exec.softmax_fit`).  Writes the table as CSV (``--table``), a short markdown beside it (same
name, ``.md``) and, with ``--json``, the fitted approximations and measured ranges per length.
"""
from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from ..safeio import atomic_write
from ..workloads import listed

SHIFTS = {"position": None, "constant": 0}
#: fit inputs per length (seeds of the sentence order): 3 up to 512 tokens, one 2048-token input
FIT_SEEDS = {2048: (0,)}
EVAL_SEED = 7


def _cos(v: float) -> str:
    return f"{v:.6f}" if math.isfinite(v) else str(v)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def markdown(rows: list[Any], loaded: str) -> str:
    """The short report: one line per (length, shift)."""
    head = ("| tokens | shift | prob max abs | prob mean abs | 1/x max rel | rows below / above 1/x | damped row weight max | scores outside exp "
            "| max shifted score | attn out cos min | hidden cos min | embedding cos | exp deg/sq [interval] (depth) "
            "| 1/x deg [interval] (depth) |")
    out = ["# MiniLM softmax: approximated vs exact", "",
           "Each layer's softmax error is measured on the exact model's input to that layer; the hidden / "
           "embedding cosines run all 6 layers with the approximated softmax (every other function exact). "
           f"Fit: `[fit]` sentences; evaluated: `[held-out]` sentences (seed {EVAL_SEED}), concatenated to the "
           "length; 2048 tokens use interpolated positions (`exec/softmax_fit.py`, `docs/softmax.md`). "
           f"Machine load while measuring: {loaded}.", "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        out.append(f"| {r.tokens} | {r.shift} | {_fmt(r.prob_max_abs)} | {_fmt(r.prob_mean_abs)} | {_fmt(r.inv_max_rel)} "
                   f"| {r.rows_below} / {r.rows_above} of {6 * 12 * r.tokens} | {_fmt(r.damped_weight_max)} | {r.scores_outside} | {_fmt(r.shifted_max)} | {_cos(r.attn_cos_min)} "
                   f"| {_cos(r.hidden_cos_min)} | {_cos(r.embedding_cos)} "
                   f"| {r.exp_degree}/{r.exp_squarings} {_fmt(r.exp_interval)} ({r.exp_depth}) "
                   f"| {r.inverse_degree} {_fmt(r.inverse_interval)} ({r.inverse_depth}) |")
    return "\n".join(out) + "\n"


def run(table: str | None = None, json_path: str | None = None, lengths: list[int] | None = None,
        shifts: tuple[str, ...] = tuple(SHIFTS)) -> int:
    """Fit and evaluate at every length; print progress and the table, write the outputs atomically."""
    import os

    from exec import minilm
    from exec import softmax_fit as sf
    from exec.minilm_fit import sentences

    why = minilm.missing()
    if why:
        print(f"aegis: error: the softmax bench needs the MiniLM weights: {why}", file=sys.stderr)
        return 1
    load = os.getloadavg()[0]
    loaded = f"load average {load:.2f} on {os.cpu_count()} cores" + (" (loaded)" if load > 0.5 else " (idle)")
    rows, fitted = [], {}

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    for tokens in lengths or list(sf.LENGTHS):
        for shift in shifts:
            degree = sf.POSITION_DEGREE if SHIFTS[shift] is None else SHIFTS[shift]
            say(f"[{tokens} tokens, {shift} shift] fitting on the fit sentences")
            ap, meas = sf.fit(tokens, seeds=FIT_SEEDS.get(tokens, (0, 1, 2)), degree=degree, progress=say)
            say(f"[{tokens} tokens, {shift} shift] evaluating on the held-out sentences")
            r = sf.evaluate(ap, sf.token_ids(sentences("held-out"), tokens, EVAL_SEED), "held-out", shift)
            say(f"[{tokens} tokens, {shift} shift] prob max abs {r.prob_max_abs:.3g}, embedding cosine "
                f"{r.embedding_cos:.6f} ({r.seconds:.0f} s)")
            rows.append(r)
            fitted[f"{tokens}/{shift}"] = {"measured": asdict(meas),
                                           "approximations": {k: listed(v) for k, v in asdict(ap).items()}}
    md = markdown(rows, loaded)
    print(md)
    if table:
        with atomic_write(table, newline="") as f:
            w = csv.writer(f)
            names = [x.name for x in fields(rows[0])]
            w.writerow(names)
            for r in rows:
                w.writerow([_fmt(getattr(r, n)) if isinstance(getattr(r, n), tuple) else getattr(r, n) for n in names])
        with atomic_write(Path(table).with_suffix(".md")) as f:
            f.write(md)
    if json_path:
        with atomic_write(json_path) as f:
            json.dump({"machine_load": loaded, "fitted": fitted}, f, indent=1)
            f.write("\n")
    return 0
