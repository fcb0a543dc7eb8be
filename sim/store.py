"""A sweep's store of record: one SQLite file, one row per configuration key, one transaction per row.

The store is generic over a :class:`Schema` (column names, key columns, a kind per column), so a
new column in the sweep's ``FIELDS`` needs no change here.  Each row carries a checksum of its
values; reading checks every row (checksum, kinds, completeness, status) and reports the ones that
fail instead of trusting them.  A store written with other columns is refused, naming the
difference, and so is a file that is not a store.  Writes are in WAL mode with ``synchronous=FULL``:
a row is on disk when :meth:`SweepStore.put` returns, and a process killed at any moment leaves
every earlier row intact.  Creation (tables, metadata and any imported rows) is one transaction.

Why SQLite and not a CSV with a lock: a commit per row is atomic and survives ``kill -9`` without
any code of ours (a CSV line can be torn, and resuming a CSV meant rewriting it, which lost rows
when killed); the primary key makes a duplicate row impossible; a failed row is replaced in place
without rewriting the others; and it is in the standard library.  CSV and Parquet stay as exports.

The store does not lock: the single writer holds :func:`sim.lock.exclusive` around it.  It must be
on a local file system (SQLite's WAL mode needs shared memory).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: SQLite ``application_id`` of a sweep store ("AEGS")
APP_ID = 0x41454753
#: version of the store's layout (tables, metadata, checksum); a newer one is refused
FORMAT = 1
#: what a column may hold; a column without a kind in the schema is "any"
VALUE_KINDS = ("text", "int", "number", "bool", "json", "any")
STATUSES = ("ok", "error")
_SUM = "_checksum"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


def _kind_ok(kind: str, v: Any) -> bool:
    if kind == "text":
        return isinstance(v, str)
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "json":
        try:
            json.loads(v)
        except (TypeError, ValueError):
            return False
        return True
    return isinstance(v, (str, int, float))


def _parse(kind: str, s: str) -> Any:
    """A value of ``kind`` from its CSV text ("" is missing; ValueError when it does not parse)."""
    if s == "":
        return "" if kind == "text" else None
    if kind in ("text", "json"):
        return s
    if kind == "bool":
        return {"True": True, "true": True, "1": True, "False": False, "false": False, "0": False}[s]
    if kind == "int":
        return int(s)
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    if kind == "number":
        raise ValueError(f"not a number: {s!r}")
    return s


def _sql(v: Any) -> Any:
    """The value as SQLite keeps it (bool as 0/1, NaN as NULL)."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


@dataclass(frozen=True)
class Schema:
    """Columns of a sweep row: ``fields`` in table order, ``key`` naming a row, ``kinds`` per column.

    ``status`` names the column holding "ok" or "error"; an "ok" row must have every column
    filled (columns of kind "any" may be empty), an "error" row only its key and status.
    """

    fields: tuple[str, ...]
    key: tuple[str, ...]
    kinds: Mapping[str, str] = field(default_factory=dict)
    status: str = "status"

    def __post_init__(self) -> None:
        bad = [f for f in self.fields if not _NAME.match(f)]
        if bad or len(set(self.fields)) != len(self.fields):
            raise ValueError(f"sweep columns must be distinct identifiers not starting with '_': {bad or self.fields}")
        missing = [k for k in (*self.key, self.status) if k not in self.fields]
        unknown = [k for k, v in self.kinds.items() if k not in self.fields or v not in VALUE_KINDS]
        if missing or unknown:
            raise ValueError(f"schema: key/status columns not in fields {missing}, bad kinds {unknown}")

    def kind(self, name: str) -> str:
        return self.kinds.get(name, "any")

    def key_of(self, row: Mapping[str, Any]) -> tuple:
        """The row's key, comparable across Python and SQLite values (bool as 0/1, str apart from numbers)."""
        return tuple(json.dumps(_sql(row.get(k))) for k in self.key)

    def problem(self, row: Mapping[str, Any]) -> str | None:
        """Why ``row`` is not a complete, well-typed row of this schema; None when it is."""
        st = row.get(self.status)
        if st not in STATUSES:
            return f"{self.status} is {st!r}, not one of {STATUSES}"
        for f in self.fields:
            v = row.get(f)
            if v is None:
                if f in self.key or (st == "ok" and self.kind(f) != "any"):
                    return f"{f} is missing"
            elif not _kind_ok(self.kind(f), v) or (f in self.key and v == ""):
                return f"{f} = {v!r} is not a valid {self.kind(f)}"
        return None

    def parse(self, text_row: Mapping[str, str | None]) -> dict[str, Any]:
        """A row from CSV text; ValueError/KeyError when a value does not parse (None: a short line)."""
        out = {}
        for f in self.fields:
            s = text_row.get(f)
            if s is None:
                raise ValueError(f"{f} is missing (short line)")
            out[f] = _parse(self.kind(f), s)
        return out

    def checksum(self, row: Mapping[str, Any]) -> str:
        body = json.dumps([[f, _sql(row.get(f))] for f in sorted(self.fields)], separators=(",", ":"))
        return hashlib.blake2b(body.encode(), digest_size=16).hexdigest()

    def compare(self, fields: Iterable[str], key: Iterable[str]) -> str | None:
        """What differs between this schema and another's columns; None when nothing does."""
        fields, key = list(fields), list(key)
        parts = []
        if set(fields) != set(self.fields):
            missing = [f for f in self.fields if f not in fields]
            extra = [f for f in fields if f not in self.fields]
            parts += [f"missing columns {_names(missing)}"] if missing else []
            parts += [f"unknown columns {_names(extra)}"] if extra else []
        if key != list(self.key):
            parts.append(f"key ({', '.join(key)}) instead of ({', '.join(self.key)})")
        return "; ".join(parts) or None


def _names(names: list[str]) -> str:
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def _q(name: str) -> str:
    return f'"{name}"'


def sort_key(schema: Schema) -> Callable[[Mapping[str, Any]], tuple]:
    """Order rows by their key values: numbers numerically, before text."""
    def k(row: Mapping[str, Any]) -> tuple:
        vals = (row.get(f) for f in schema.key)
        return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in vals)
    return k


class SweepStore:
    """An open store; use :meth:`open`, then :meth:`read`, :meth:`put`, :meth:`close` (or ``with``)."""

    def __init__(self, path: Path, schema: Schema, con: sqlite3.Connection) -> None:
        self.path, self.schema, self._con = path, schema, con

    @classmethod
    def open(cls, path: str | Path, schema: Schema,
             seed: Callable[[], Iterable[Mapping[str, Any]]] | None = None) -> SweepStore:
        """Open the store at ``path``, creating it (with ``seed()``'s rows, in the same transaction) if absent.

        Raises ValueError when ``path`` is not a sweep store, is of a newer format, or has other columns.
        """
        path = Path(path)
        if path.exists() and path.stat().st_size > 0:
            with open(path, "rb") as f:
                if f.read(16) != b"SQLite format 3\x00":
                    raise ValueError(f"{path} is not a sweep store (not a SQLite database); it was left untouched")
        con = sqlite3.connect(path, isolation_level=None)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            store = cls(path, schema, con)
            if tables:
                store._check(tables)             # before anything is written: a foreign file stays as it is
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = FULL")
            if not tables:                       # new, or a creation that was killed before it committed
                store._create(seed() if seed else ())
            return store
        except BaseException:
            con.close()
            raise

    def _create(self, rows: Iterable[Mapping[str, Any]]) -> None:
        s = self.schema
        cols = ", ".join(_q(f) for f in s.fields)
        self._con.execute("BEGIN IMMEDIATE")
        try:
            self._con.execute(f"PRAGMA application_id = {APP_ID}")
            self._con.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._con.execute(f"CREATE TABLE rows ({cols}, {_SUM} TEXT NOT NULL, "
                              f"PRIMARY KEY ({', '.join(_q(k) for k in s.key)}))")
            meta = {"format": FORMAT, "fields": list(s.fields), "key": list(s.key), "kinds": dict(s.kinds),
                    "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
            self._con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
            for r in rows:
                self._insert(r)
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise

    def _check(self, tables: set[str], update: bool = True) -> None:
        app = self._con.execute("PRAGMA application_id").fetchone()[0]
        if app != APP_ID or not {"meta", "rows"} <= tables:
            raise ValueError(f"{self.path} is a SQLite database but not a sweep store; it was left untouched")
        meta = {k: json.loads(v) for k, v in self._con.execute("SELECT name, value FROM meta")}
        if meta.get("format", 0) > FORMAT:
            raise ValueError(f"{self.path} was written by a newer AEGIS (store format {meta['format']}, "
                             f"this one reads {FORMAT}); upgrade, or choose another output")
        diff = self.schema.compare(meta.get("fields", []), meta.get("key", []))
        if diff:
            raise ValueError(f"{self.path} holds sweep rows of another version ({diff}); "
                             "remove it (and its table) to start afresh, or choose another output")
        if update and (meta.get("fields") != list(self.schema.fields) or meta.get("kinds") != dict(self.schema.kinds)):
            self._con.execute("INSERT OR REPLACE INTO meta VALUES ('fields', ?), ('kinds', ?)",
                              (json.dumps(list(self.schema.fields)), json.dumps(dict(self.schema.kinds))))

    def _insert(self, row: Mapping[str, Any]) -> None:
        s = self.schema
        marks = ", ".join("?" * (len(s.fields) + 1))
        self._con.execute(f"INSERT OR REPLACE INTO rows ({', '.join(_q(f) for f in s.fields)}, {_SUM}) "
                          f"VALUES ({marks})", [_sql(row.get(f)) for f in s.fields] + [s.checksum(row)])

    def put(self, row: Mapping[str, Any]) -> None:
        """Write one row (replacing the row of the same key) in its own transaction; durable on return."""
        self._insert(row)

    def read(self) -> tuple[dict[tuple, dict[str, Any]], list[tuple[dict[str, Any], str]]]:
        """Every stored row, checked: ``(valid rows by key, [(invalid row, why)])``."""
        s = self.schema
        cur = self._con.execute(f"SELECT {', '.join(_q(f) for f in s.fields)}, {_SUM} FROM rows")
        valid: dict[tuple, dict[str, Any]] = {}
        invalid = []
        for rec in cur:
            row = dict(zip(s.fields, rec[:-1]))
            why = None if s.checksum(row) == rec[-1] else "its checksum does not match its values"
            for f in s.fields:
                if s.kind(f) == "bool" and row[f] in (0, 1):
                    row[f] = bool(row[f])
            why = why or s.problem(row)
            if why:
                invalid.append((row, why))
            else:
                valid[s.key_of(row)] = row
        return valid, invalid

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> SweepStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_store(path: str | Path, schema: Schema) -> list[dict[str, Any]]:
    """The valid rows of the store at ``path``, in key order (no lock needed: WAL readers see committed rows)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return []
    with open(path, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise ValueError(f"{path} is not a sweep store (not a SQLite database)")
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:                           # a creation killed before it committed holds no rows
            return []
        store = SweepStore(path, schema, con)
        store._check(tables, update=False)
        valid, _ = store.read()
    finally:
        con.close()
    return sorted(valid.values(), key=sort_key(schema))
