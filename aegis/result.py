"""The Result: the one schema the simulator (predicted) and the executor (measured) both produce.

* ``ops``: one row per op instance -- op id, kind, phase, layer, device, start and end
  (seconds), bytes the kernels moved;
* ``comm``: one row per communication op -- id, kind, phase, layer, start, end, bytes,
  participants (as ``a-b-c``);
* ``pair_bytes``: bytes per (source device, destination device, phase);
* ``summary``: latency_s, comm_bytes {total, by_phase}, peak_memory_bytes per device,
  utilisation per device (busy compute time / latency), fits.

Both export the same Chrome/Perfetto trace layout: one process per device with a
``compute`` thread, and one ``links`` process with a thread per communication kind.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .safeio import atomic_path, atomic_write, write_text

OP_FIELDS = ("op", "kind", "phase", "layer", "device", "start", "end", "bytes_moved")
COMM_FIELDS = ("comm", "kind", "phase", "layer", "start", "end", "bytes", "participants")


@dataclass
class Result:
    """Predicted or measured execution of a Plan.

    Attributes:
        source: ``"sim"`` or ``"exec"``.
        plan: identifying fields of the plan (model, seq_len, strategy, devices, hardware, ...).
        ops: rows as tuples in :data:`OP_FIELDS` order.
        comm: rows as tuples in :data:`COMM_FIELDS` order.
        pair_bytes: ``{(src, dst, phase): bytes}``.
        summary: the summary dict (see module docstring).
        memory_timeline: optional ``[(device, time_s, bytes)]`` samples for the trace.
    """

    source: str
    plan: dict[str, Any]
    ops: list[tuple]
    comm: list[tuple]
    pair_bytes: dict[tuple[int, int, str], int]
    summary: dict[str, Any]
    memory_timeline: list[tuple[int, float, float]] = field(default_factory=list)
    comm_links: dict[int, list[str]] = field(default_factory=dict)
    #: measured runs: CPU seconds of each op row (the process's or thread's own time), beside its wall time
    op_cpu: list[float] | None = None

    def to_dict(self, with_rows: bool = False) -> dict[str, Any]:
        d = {"source": self.source, "plan": self.plan, "summary": self.summary,
             "pair_bytes": [[s, t, ph, b] for (s, t, ph), b in sorted(self.pair_bytes.items())]}
        if with_rows:
            d["ops"] = [list(r) for r in self.ops]
            d["comm"] = [list(r) for r in self.comm]
        return d

    def write_json(self, path: str | Path, with_rows: bool = False) -> None:
        write_text(path, json.dumps(self.to_dict(with_rows), indent=1))

    def write_op_table(self, path: str | Path) -> None:
        """The op rows as CSV (or Parquet when the name ends in .parquet and pyarrow is present); with
        ``op_cpu``, a last column ``cpu_s``."""
        if self.op_cpu is not None:
            _write_table(path, OP_FIELDS + ("cpu_s",), [tuple(r) + (c,) for r, c in zip(self.ops, self.op_cpu)])
        else:
            _write_table(path, OP_FIELDS, self.ops)

    def write_comm_table(self, path: str | Path) -> None:
        _write_table(path, COMM_FIELDS, self.comm)

    def chrome_trace(self) -> dict[str, Any]:
        """Chrome/Perfetto trace events (microseconds)."""
        ev: list[dict[str, Any]] = []
        devices = sorted({r[4] for r in self.ops})
        for d in devices:
            ev.append({"ph": "M", "name": "process_name", "pid": d, "args": {"name": f"device {d}"}})
            ev.append({"ph": "M", "name": "thread_name", "pid": d, "tid": 0, "args": {"name": "compute"}})
        links = 10_000
        ev.append({"ph": "M", "name": "process_name", "pid": links, "args": {"name": "links"}})
        cpu = self.op_cpu if self.op_cpu is not None else [None] * len(self.ops)
        for (op, kind, phase, layer, dev, start, end, bm), c in zip(self.ops, cpu):
            args = {"op": op, "layer": layer, "bytes_moved": bm} | ({"cpu_s": c} if c is not None else {})
            ev.append({"ph": "X", "name": kind, "cat": phase, "pid": dev, "tid": 0, "ts": start * 1e6,
                       "dur": max(0.0, end - start) * 1e6, "args": args})
        tracks: dict[str, int] = {}
        for cid, kind, phase, layer, start, end, b, parts in self.comm:
            # one track per link the transfer occupies; transfers without routes (limb exchanges inside
            # an op, or a measured run) on a track per kind
            for name in self.comm_links.get(cid) or [kind]:
                tid = tracks.setdefault(name, len(tracks))
                ev.append({"ph": "X", "name": kind, "cat": phase, "pid": links, "tid": tid, "ts": start * 1e6,
                           "dur": max(0.0, end - start) * 1e6,
                           "args": {"comm": cid, "layer": layer, "bytes": b, "participants": parts}})
        for name, tid in tracks.items():
            ev.append({"ph": "M", "name": "thread_name", "pid": links, "tid": tid, "args": {"name": name}})
        for dev, t, b in self.memory_timeline:
            ev.append({"ph": "C", "name": "memory GiB", "pid": dev, "ts": t * 1e6, "args": {"GiB": b / 2 ** 30}})
        return {"traceEvents": ev, "displayTimeUnit": "ms",
                "metadata": {"source": self.source, **{k: str(v) for k, v in self.plan.items()}}}

    def write_trace(self, path: str | Path) -> None:
        write_text(path, json.dumps(self.chrome_trace(), separators=(",", ":")))


def _write_table(path: str | Path, fields: tuple[str, ...], rows: list[tuple]) -> None:
    path = Path(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ValueError(f"{path}: writing Parquet needs pyarrow (pip install pyarrow), or use a .csv name") from exc
        cols = list(zip(*rows)) if rows else [[] for _ in fields]
        with atomic_path(path) as tmp:
            pq.write_table(pa.table({f: list(c) for f, c in zip(fields, cols)}), tmp)
        return
    with atomic_write(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        w.writerows(rows)
