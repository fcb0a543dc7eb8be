"""The sweep's store: one writer at a time, kill -9 at any moment loses nothing, every row checked on resume.

Most tests use a fake ``run_one`` that returns a deterministic, schema-valid row for each configuration
(built from ``FIELDS`` and ``KINDS``, so new columns need no change here); one uses the real simulator
on a tiny grid.  Sweeps that are killed or that hold the lock run in a ``python3 -c`` subprocess.
"""
import csv
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import sim.sweep as sweep
from sim import table
from sim.lock import LockHeld, exclusive, lock_path
from sim.store import Schema, SweepStore, _parse, read_store
from sim.sweep import FIELDS, KEY_FIELDS, SCHEMA, SweepSpec, run_sweep, store_path

ROOT = Path(__file__).resolve().parents[2]
TIMING = ("plan_s", "sim_s")

#: a fake run_one (deterministic rows, every seventh configuration fails) and a sweep driven by argv[1]
SCRIPT = r'''
import hashlib, json, os, sys, time
import sim.sweep as sw

def fake(cfg, go=None, started=None, sleep=0.0):
    if started:
        open(started, "a").close()
    while go and not os.path.exists(go):
        time.sleep(0.01)
    time.sleep(sleep)
    h = int(hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest(), 16)
    row = dict(cfg)
    if h % 7 == 0:
        return {**row, "status": "error", "error": "RuntimeError: a deterministic failure", "attention": ""}
    for i, f in enumerate(sw.FIELDS):
        if f not in row:
            v = (h >> i) % 10**9
            row[f] = {"int": v, "number": v / 7, "bool": bool(v & 1), "text": "",
                      "json": json.dumps([v, v + 1])}.get(sw.SCHEMA.kind(f), v / 3)
    return {**row, "status": "ok", "error": ""}

if __name__ == "__main__":
    a = json.loads(sys.argv[1])
    sw.EXPORT_EVERY_S = a.get("export_every", sw.EXPORT_EVERY_S)
    sw.run_one = lambda cfg: fake(cfg, a.get("go"), a.get("started"), a.get("sleep", 0.0))
    rows = sw.run_sweep(sw.SweepSpec(**a["spec"]), a["out"], workers=1, progress=False, wait=a.get("wait", False))
    print(len(rows))
'''
_ns: dict = {}
exec(compile(SCRIPT, "fake_sweep", "exec"), _ns)
fake = _ns["fake"]

GRID = {"models": ["bert-base"], "seqs": [64 * i for i in range(1, 9)], "devices": [1, 2, 4],
        "strategies": ["single", "aegis", "token"]}                       # 56 configurations
OTHER = {**GRID, "seqs": [4096, 8192], "strategies": ["limb"]}             # another grid, 6 configurations


def _start(**args) -> subprocess.Popen:
    args = {k: str(v) if isinstance(v, Path) else v for k, v in args.items()}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(**args) -> None:
    p = _start(**args)
    out, err = p.communicate()
    assert p.returncode == 0, err


def _by_key(rows, drop=TIMING) -> dict:
    return {SCHEMA.key_of(r): {k: v for k, v in r.items() if k not in drop} for r in rows}


def _table_rows(path: Path) -> dict:
    """The table's rows by key, each checked: a complete header, every line whole and valid, no key twice."""
    rows, rejected = table.import_rows(path, SCHEMA)
    assert rejected == [], rejected
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == list(FIELDS) and len(lines) - 1 == len(rows)      # no duplicates either
    return _by_key(rows)


def _grid_keys(grid: dict) -> set:
    return {SCHEMA.key_of(c) for c in SweepSpec(**grid).configs()}


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.01)


def _line_key(head: str, line: str) -> tuple:
    rec = next(csv.DictReader([head, line]))
    return SCHEMA.key_of({k: _parse(SCHEMA.kind(k), rec[k]) for k in KEY_FIELDS})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted sweep of GRID in a subprocess: (its table, its wall time in seconds)."""
    ref = tmp_path_factory.mktemp("reference") / "ref.csv"
    t0 = time.monotonic()
    _run(spec=GRID, out=ref, sleep=0.01)
    return ref, time.monotonic() - t0


@pytest.fixture
def counted(monkeypatch):
    """The fake run_one in this process; returns the list of configurations it computed."""
    calls: list = []
    monkeypatch.setattr(sweep, "run_one", lambda cfg: calls.append(cfg) or fake(cfg))
    return calls


def test_second_writer_refused_naming_the_holder_first_completes(tmp_path, capsys, reference):
    ref, out = reference[0], tmp_path / "s.csv"
    go, started = tmp_path / "go", tmp_path / "started"
    first = _start(spec=GRID, out=out, go=go, started=started)
    _wait_for(started, first)                          # it holds the lock and is computing its first row
    before = out.read_bytes()
    with pytest.raises(LockHeld) as err:
        run_sweep(SweepSpec(**GRID), out, workers=1, progress=False)
    msg = str(err.value)
    assert f"pid {first.pid} on {socket.gethostname()} since " in msg and "\n" not in msg
    from aegis.cli import main

    assert main(["sweep", "--seqs", "64", "--devices", "1", "--strategies", "single", "--out", str(out),
                 "--no-progress", "--workers", "1"]) == 1           # a failure (busy), not bad input
    assert f"aegis: error: {out} is being written by pid {first.pid}" in capsys.readouterr().err
    assert out.read_bytes() == before                  # the refused writer touched nothing
    go.touch()
    assert first.wait() == 0
    assert _table_rows(out) == _table_rows(ref)
    assert _by_key(read_store(store_path(out), SCHEMA)) == _by_key(read_store(store_path(ref), SCHEMA))
    assert not lock_path(store_path(out)).exists()


@pytest.mark.parametrize("wait", [False, True])
def test_two_writers_started_together(tmp_path, wait, reference):
    ref, out = reference[0], tmp_path / "s.csv"
    procs = [_start(spec=GRID, out=out, wait=wait, sleep=0.01) for _ in range(2)]
    results = [(p.communicate()[1], p.returncode)[::-1] for p in procs]
    for rc, err in results:                            # each one finished its sweep or was refused, naming the other
        assert rc == 0 or (not wait and "is being written by pid" in err), err
    assert any(rc == 0 for rc, _ in results)
    assert _table_rows(out) == _table_rows(ref)


def test_wait_blocks_until_the_holder_releases(tmp_path):
    target = tmp_path / "s.csv.sqlite"
    waiting, got = threading.Event(), []

    def second():
        with exclusive(target, wait=True, on_wait=lambda path, who: waiting.set()):
            got.append(json.loads(lock_path(target).read_text())["pid"])

    with exclusive(target):
        t = threading.Thread(target=second)
        t.start()
        assert waiting.wait(60)
        assert got == []                                # still waiting while the first holds it
    t.join(60)
    assert got == [os.getpid()] and not lock_path(target).exists()


def test_kill9_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path, reference):
    (ref, t_full), out = reference, tmp_path / "s.csv"
    _run(spec=OTHER, out=out)                          # an old-style table of another grid: no store beside it
    for p in store_path(out).parent.glob(store_path(out).name + "*"):
        p.unlink()
    other = _table_rows(out)
    rng = random.Random(20261129)
    for _ in range(5):
        p = _start(spec=GRID, out=out, sleep=0.01, export_every=0.0)   # export after every row: more to tear
        time.sleep(rng.uniform(0.0, t_full))
        p.kill()
        p.wait()
        now = _table_rows(out)                         # after every kill: a whole table, no rows lost
        assert {k: now[k] for k in other} == other
        stored = _by_key(read_store(store_path(out), SCHEMA))
        assert set(stored) <= set(_grid_keys(GRID)) | set(other)
    _run(spec=GRID, out=out)
    final, want = _table_rows(out), _table_rows(ref)
    assert {k: v for k, v in final.items() if k not in other} == want
    assert {k: final[k] for k in other} == other
    assert _by_key(read_store(store_path(out), SCHEMA)) == final
    assert not list(tmp_path.glob(".s.csv.*.tmp")) and not lock_path(store_path(out)).exists()


def test_kill9_real_tiny_grid_then_resume(tmp_path):
    spec = {"models": ["bert-base"], "seqs": [128], "devices": [1, 2, 4], "strategies": ["single", "aegis", "token"]}
    code = ("import json, sys; from sim.sweep import SweepSpec, run_sweep; "
            "run_sweep(SweepSpec(**json.loads(sys.argv[1])), sys.argv[2], workers=1, progress=False)")
    out = tmp_path / "s.csv"
    rng = random.Random(7)
    for _ in range(2):
        p = subprocess.Popen([sys.executable, "-c", code, json.dumps(spec), str(out)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 3.0))
        p.kill()
        p.wait()
    rows = run_sweep(SweepSpec(**spec), out, workers=1, progress=False)
    ref = run_sweep(SweepSpec(**spec), tmp_path / "ref.csv", workers=1, progress=False)
    assert len(rows) == 5 and all(r["status"] == "ok" for r in rows)
    assert _by_key(rows) == _by_key(ref) and _table_rows(out) == _table_rows(tmp_path / "ref.csv")


def test_torn_table_is_rewritten_from_the_store(tmp_path, counted):
    out = tmp_path / "s.csv"
    rows = run_sweep(SweepSpec(**GRID), out, workers=1, progress=False)
    failed = sorted(SCHEMA.key_of(r) for r in rows if r["status"] != "ok")     # retried on every run
    whole = out.read_bytes()
    for torn in (whole[:-15], whole + b"bert-base,64,1,sing", whole[: len(whole) // 2]):
        out.write_bytes(torn)
        counted.clear()
        run_sweep(SweepSpec(**GRID), out, workers=1, progress=False)
        assert sorted(map(SCHEMA.key_of, counted)) == failed and out.read_bytes() == whole


def test_bad_stored_rows_are_recomputed(tmp_path, counted):
    out = tmp_path / "s.csv"
    good = _by_key(run_sweep(SweepSpec(**GRID), out, workers=1, progress=False), drop=())
    ok = [k for k, r in good.items() if r["status"] == "ok"]
    a, b, c = (dict(zip(KEY_FIELDS, (json.loads(v) for v in k))) for k in ok[:3])
    where = " AND ".join(f'"{k}" = ?' for k in KEY_FIELDS)
    with sqlite3.connect(store_path(out)) as con:
        con.execute(f'UPDATE rows SET "latency_s" = \'abc\' WHERE {where}', list(a.values()))     # wrong type
        con.execute(f'UPDATE rows SET "latency_s" = "latency_s" * 2 WHERE {where}', list(b.values()))  # wrong value
        con.execute(f'UPDATE rows SET "status" = \'done\' WHERE {where}', list(c.values()))      # unknown status
    con.close()
    counted.clear()
    rows = run_sweep(SweepSpec(**GRID), out, workers=1, progress=False)
    errors = {k for k, r in good.items() if r["status"] != "ok"}
    assert sorted(map(SCHEMA.key_of, counted)) == sorted({SCHEMA.key_of(r) for r in (a, b, c)} | errors)
    assert _by_key(rows, drop=()) == good


def test_old_style_csv_imported_row_by_row_torn_and_bad_rows_recomputed(tmp_path, counted):
    out = tmp_path / "s.csv"
    good = _by_key(run_sweep(SweepSpec(**GRID), out, workers=1, progress=False), drop=())
    for p in tmp_path.glob("s.csv.sqlite*"):
        p.unlink()                                     # as written before the store existed
    head, *lines = out.read_text().splitlines(keepends=True)
    ok = [i for i, line in enumerate(lines) if ",ok,," in line]
    lines.append(lines.pop(ok[-1]))                    # an "ok" row last
    i_bad = ok[0]
    bad = lines[i_bad].split(",")
    bad[FIELDS.index("latency_s")] = "12.5x"
    lines[i_bad] = ",".join(bad)
    lines.insert(i_bad + 1, lines[i_bad + 2])          # a duplicate row (same key, same values)
    out.write_text(head + "".join(lines)[:-4])         # the last row cut inside its last value: looks whole
    counted.clear()
    rows = run_sweep(SweepSpec(**GRID), out, workers=1, progress=False)
    errors = {k for k, r in good.items() if r["status"] != "ok"}
    torn = {_line_key(head, lines[i]) for i in (i_bad, -1)}
    assert len(counted) == len(torn | errors) and {SCHEMA.key_of(c) for c in counted} == torn | errors
    assert _by_key(rows, drop=()) == good


def test_foreign_outputs_are_refused_and_left_untouched(tmp_path, capsys):
    from aegis.cli import main

    spec = SweepSpec(**OTHER)
    unrelated = tmp_path / "data.csv"
    unrelated.write_bytes(b"name,score\nada,3\nbob,5\n")
    older = tmp_path / "older.csv"
    older.write_text(",".join(f for f in FIELDS if f != "sim_s") + "\n")
    notdb = tmp_path / "notes.sqlite"
    notdb.write_bytes(b"plain text, not a database\n")
    foreign_db = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign_db) as con:
        con.execute("CREATE TABLE t (x)")
    con.close()
    cases = [(unrelated, "missing columns model, seq"), (older, "missing columns sim_s"),
             (notdb, "not a SQLite database"), (foreign_db, "not a sweep store")]
    for path, why in cases:
        listing = sorted(os.listdir(tmp_path))
        before = path.read_bytes()
        with pytest.raises(ValueError, match=why):
            run_sweep(spec, path, workers=1, progress=False)
        assert main(["sweep", "--seqs", "64", "--devices", "1", "--strategies", "single", "--out", str(path),
                     "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("aegis: error: ") and err.count("\n") == 1 and why in err
        assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == listing


def test_store_of_other_columns_is_refused_naming_the_difference(tmp_path):
    out = tmp_path / "s.csv"
    SweepStore.open(store_path(out), Schema(FIELDS + ("extra_knob",), KEY_FIELDS + ("extra_knob",))).close()
    with pytest.raises(ValueError, match=r"unknown columns extra_knob; key \(.*extra_knob\) instead of"):
        run_sweep(SweepSpec(**OTHER), out, workers=1, progress=False)
    assert not out.exists()


def test_rows_of_another_grid_survive(tmp_path, counted):
    out = tmp_path / "s.csv"
    a = _by_key(run_sweep(SweepSpec(**OTHER), out, workers=1, progress=False))
    b = _by_key(run_sweep(SweepSpec(**GRID), out, workers=1, progress=False))
    assert set(b) == _grid_keys(GRID)                  # the return value is this grid's rows
    stored = _by_key(read_store(store_path(out), SCHEMA))
    assert stored == {**a, **b} and _table_rows(out) == stored
    counted.clear()
    again = _by_key(run_sweep(SweepSpec(**OTHER), out, workers=1, progress=False))
    assert again == a and {SCHEMA.key_of(c) for c in counted} == {k for k, r in a.items() if r["status"] != "ok"}


def test_store_is_generic_over_the_schema(tmp_path):
    s = Schema(("run", "x", "status", "y", "flag", "note"), ("run", "x"),
               {"run": "text", "x": "number", "y": "int", "flag": "bool"})
    rows = [{"run": "a", "x": 0.5, "status": "ok", "y": 3, "flag": True, "note": True},
            {"run": "a", "x": 2, "status": "error", "y": None, "flag": None, "note": None}]
    with SweepStore.open(tmp_path / "g.sqlite", s) as st:
        for r in rows:
            st.put(r)
        valid, invalid = st.read()
    assert invalid == [] and [valid[s.key_of(r)] for r in rows] == [{**rows[0], "note": 1}, rows[1]]
    assert s.problem({**rows[0], "y": 1.5}) == "y = 1.5 is not a valid int"
    assert s.problem({**rows[0], "flag": None}) == "flag is missing"


def test_an_invalid_result_is_kept_as_a_failure_and_retried(tmp_path, monkeypatch):
    out = tmp_path / "s.csv"
    spec = SweepSpec(models=["bert-base"], seqs=[64], devices=[1], strategies=["single"])
    monkeypatch.setattr(sweep, "run_one", lambda cfg: {**fake(cfg), "status": "ok", "latency_s": "fast"})
    [row] = run_sweep(spec, out, workers=1, progress=False)
    assert row["status"] == "error" and row["error"] == "invalid result: latency_s = 'fast' is not a valid number"
    monkeypatch.setattr(sweep, "run_one", lambda cfg: {**fake(cfg), "status": "ok", "error": ""})
    [row] = run_sweep(spec, out, workers=1, progress=False)
    assert row["status"] == "ok" and _table_rows(out) == _by_key([row])


def test_remove_sweep_deletes_table_and_store_but_not_a_foreign_file(tmp_path, counted):
    out = tmp_path / "s.csv"
    run_sweep(SweepSpec(**OTHER), out, workers=1, progress=False)
    sweep.remove_sweep(out)
    assert os.listdir(tmp_path) == []
    out.write_text("name,score\nada,3\n")
    with pytest.raises(ValueError, match="not a sweep table"):
        sweep.remove_sweep(out)
    assert out.read_text() == "name,score\nada,3\n"


def test_parquet_table_is_an_atomic_export_of_the_store(tmp_path, counted):
    pytest.importorskip("pyarrow", reason="Parquet output needs pyarrow")
    out = tmp_path / "s.parquet"
    rows = run_sweep(SweepSpec(**OTHER), out, workers=1, progress=False)
    assert _by_key(sweep.read_rows(out), drop=()) == _by_key(rows, drop=()) == _by_key(
        read_store(store_path(out), SCHEMA), drop=())
    for p in tmp_path.glob("s.parquet.sqlite*"):
        p.unlink()                                     # the table alone: imported, nothing recomputed but failures
    counted.clear()
    again = run_sweep(SweepSpec(**OTHER), out, workers=1, progress=False)
    assert {SCHEMA.key_of(c) for c in counted} == {SCHEMA.key_of(r) for r in rows if r["status"] != "ok"}
    assert _by_key(again, drop=()) == _by_key(rows, drop=())
    foreign = tmp_path / "f.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"name": ["ada"], "score": [3]}), foreign)
    before = foreign.read_bytes()
    with pytest.raises(ValueError, match="not a sweep table"):
        run_sweep(SweepSpec(**OTHER), foreign, workers=1, progress=False)
    assert foreign.read_bytes() == before
