"""A sweep's table file (CSV, or Parquet with pyarrow): written whole and atomically, recognised, imported.

A table is an export of the store: it is written to a unique temporary name in the same
directory, flushed to disk and renamed over the old one, so a reader sees the old table or the
new one, never half of one.  Before anything is written over an existing file, :func:`check`
makes sure it is a sweep table of this schema (its header names exactly the schema's columns);
anything else is refused and left untouched.  :func:`import_rows` reads an old-style table (from
before the store) row by row, keeping only rows that parse and pass the schema, and never the last
line of a CSV that does not end in a newline (a torn write).
"""
from __future__ import annotations

import csv
import glob
import io
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .store import Schema


def is_parquet(path: Path) -> bool:
    return path.suffix == ".parquet"


def _header(path: Path) -> list[str] | None:
    """The column names of an existing table file; None when it does not read as a table."""
    if is_parquet(path):
        try:
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        except Exception:                       # not Parquet, or torn: not ours to overwrite
            return None
    with open(path, "rb") as f:
        first = f.readline(1 << 16)
    try:
        line = first.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return None
    try:
        return next(csv.reader([line]))
    except (csv.Error, StopIteration):
        return None


def check(path: Path, schema: Schema) -> None:
    """Refuse (ValueError, one line) an existing, non-empty ``path`` that is not a sweep table of ``schema``."""
    if not path.exists() or path.stat().st_size == 0:
        return
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file")
    cols = _header(path)
    diff = "it has no header" if cols is None else schema.compare(cols, schema.key)
    if diff is None and len(set(cols or [])) != len(cols or []):
        diff = "its header repeats a column"
    if diff:
        raise ValueError(f"{path} exists and is not a sweep table of this version ({diff}); it was left "
                         "untouched: move it away or choose another --out")


def import_rows(path: Path, schema: Schema) -> tuple[list[dict[str, Any]], list[str]]:
    """Valid rows of an existing table, the last per key (an "ok" row before an "error" one), and why others were not."""
    if not path.exists() or path.stat().st_size == 0:
        return [], []
    rejected: list[str] = []
    if is_parquet(path):
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        text = path.read_bytes().decode("utf-8", errors="replace").replace("\0", "\ufffd")
        records = list(csv.DictReader(io.StringIO(text, newline="")))
        if records and not text.endswith(("\n", "\r")):
            records.pop()
            rejected.append("the last line is cut short (no newline at its end)")
        rows = []
        for i, rec in enumerate(records, 2):
            try:
                if None in rec:
                    raise ValueError("the line has more values than the header")
                rows.append(schema.parse(rec))
            except (ValueError, KeyError) as exc:
                rejected.append(f"line {i}: {exc}")
    by_key: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        why = schema.problem(r)
        if why:
            rejected.append(why)
            continue
        k = schema.key_of(r)
        if not (r[schema.status] != "ok" and by_key.get(k, {}).get(schema.status) == "ok"):
            by_key[k] = r
    return list(by_key.values()), rejected


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_temps(path: Path) -> None:
    """Remove temporary tables left by a writer that was killed (call only while holding the writer lock)."""
    for t in glob.glob(os.path.join(glob.escape(str(path.parent)), glob.escape(temp_prefix(path)) + "*.tmp")):
        try:
            os.unlink(t)
        except FileNotFoundError:
            pass


def write(path: Path, schema: Schema, rows: Iterable[Mapping[str, Any]]) -> None:
    """Replace ``path`` atomically by a table of ``rows`` (columns in ``schema.fields`` order)."""
    rows = list(rows)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        if is_parquet(path):
            os.close(fd)
            _write_parquet(Path(tmp), schema, rows)
            fd = os.open(tmp, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        else:
            with os.fdopen(fd, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(schema.fields)
                w.writerows([["" if r.get(c) is None else r.get(c) for c in schema.fields] for r in rows])
                f.flush()
                os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _write_parquet(path: Path, schema: Schema, rows: list[Mapping[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {}
    for c in schema.fields:
        vals = [r.get(c) for r in rows]
        try:
            cols[c] = pa.array(vals)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            cols[c] = pa.array([None if v is None else str(v) for v in vals])
    pq.write_table(pa.table(cols), path)


def read(path: Path) -> list[dict[str, Any]]:
    """The rows of a table file as they stand (CSV values as text); [] when it does not exist."""
    if not path.exists():
        return []
    if is_parquet(path):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
