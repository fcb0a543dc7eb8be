"""Bad inputs to every `aegis` subcommand: each is refused before any work, with one line on stderr, exit 2
(usage) or 1 (failure), no traceback, and nothing written.

``CASES`` is a table of (argv, exit code, substring of the error line); ``{tmp}`` in an argument is the test's
scratch directory, prepared by :func:`make_fixtures`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aegis.cli import main

TINY = ["--model", "tiny", "--layers", "1", "--seq", "32", "--params", "toy-n11-deep", "--insecure", "--bootstrap",
        "client_aided"]

CASES: list[tuple[list[str], int, str]] = [
    # no or unknown subcommand
    ([], 2, "required"),
    (["bogus"], 2, "invalid choice"),
    # demo
    (["demo", "--params", "nope"], 2, "invalid choice"),
    (["demo", "--params", "toy-n10"], 2, "insecure"),
    (["demo", "--seed", "-1"], 2, "at least 0"),
    (["demo", "--seed", "abc"], 2, "whole number"),
    # plan
    (["plan", "--model", "gpt3"], 2, "valid models"),
    (["plan", "--strategy", "ring"], 2, "valid strategies"),
    (["plan", "--hardware", "nope"], 2, "nope"),
    (["plan", "--params", "nope"], 2, "nope"),
    (["plan", "--model", "tiny", "--params", "toy-n10"], 2, "insecure"),
    (["plan", "--seq", "0"], 2, "at least 1"),
    (["plan", "--seq", "-5"], 2, "at least 1"),
    (["plan", "--seq", "1000000000"], 2, "at most"),
    (["plan", "--seq", "abc"], 2, "whole number"),
    (["plan", "--devices", "0"], 2, "at least 1"),
    (["plan", "--devices", "100000"], 2, "at most"),
    (["plan", "--token-block", "0"], 2, "at least 1"),
    (["plan", "--layers", "0"], 2, "at least 1"),
    (["plan", "--layers", "99"], 2, "12 layers"),
    (["plan", "--d-model", "64"], 2, "tiny"),
    (["plan", "--model", "tiny", "--d-model", "0"], 2, "at least 1"),
    (["plan", "--model", "tiny", "--heads", "0"], 2, "at least 1"),
    (["plan", "--json", "{tmp}/existing.txt/out.json"], 2, "not a directory"),
    (["plan", "--json", "{tmp}/nodir/out.json"], 2, "does not exist"),
    (["plan", "--json", "{tmp}/adir"], 2, "is a directory"),
    (["plan", "--out", "{tmp}/adir"], 2, "is a directory"),
    (["plan", "--out", "{tmp}/nodir/p.json"], 2, "does not exist"),
    (["plan", "--hardware", "{tmp}/badprof.json"], 2, "badprof.json"),
    (["plan", "--hardware", "{tmp}/missing.json"], 2, "missing.json"),
    (["plan", "--hardware", "{tmp}/empty.json"], 2, "empty.json"),
    # graph
    (["graph", *TINY, "--out", "{tmp}/nodir/g.graphml"], 2, "does not exist"),
    (["graph", *TINY, "--format", "dot", "--out", "{tmp}/g.dot"], 2, "invalid choice"),
    (["graph", *TINY], 2, "--out"),
    (["graph", *TINY, "--out", "{tmp}/adir"], 2, "is a directory"),
    (["graph", "--model", "tiny", "--seq", "0", "--out", "{tmp}/g.graphml"], 2, "at least 1"),
    # simulate
    (["simulate", "--plan", "{tmp}/missing.json"], 2, "missing.json"),
    (["simulate", "--plan", "{tmp}/badplan.json"], 2, "badplan.json"),
    (["simulate", "--plan", "{tmp}/wrongplan.json"], 2, "wrongplan.json"),
    (["simulate", "--plan", "{tmp}/adir"], 2, "adir"),
    (["simulate", "--jitter", "-1"], 2, ">= 0"),
    (["simulate", "--jitter", "nan"], 2, ">= 0"),
    (["simulate", "--sim-hardware", "nope"], 2, "nope"),
    (["simulate", "--seq", "256", "--devices", "1", "--strategy", "single", "--hardware", "{tmp}/negprof.json"], 2,
     ">= 0"),
    (["simulate", "--trace", "{tmp}/existing.txt/t.json"], 2, "not a directory"),
    (["simulate", "--ops", "{tmp}/nodir/ops.csv"], 2, "does not exist"),
    (["simulate", "--ops", "{tmp}/ops.txt"], 2, ".csv or .parquet"),
    (["simulate", "--json", "{tmp}/adir"], 2, "is a directory"),
    (["simulate", "--jitter-seed", "-3"], 2, "at least 0"),
    # sweep
    (["sweep", "--seqs", "a,b", "--out", "{tmp}/s.csv"], 2, "'a'"),
    (["sweep", "--seqs", "0", "--out", "{tmp}/s.csv"], 2, "at least 1"),
    (["sweep", "--seqs", ",", "--out", "{tmp}/s.csv"], 2, "empty"),
    (["sweep", "--seqs", "1000000000", "--out", "{tmp}/s.csv"], 2, "at most"),
    (["sweep", "--devices", "0,2", "--out", "{tmp}/s.csv"], 2, "at least 1"),
    (["sweep", "--devices", "x", "--out", "{tmp}/s.csv"], 2, "'x'"),
    (["sweep", "--models", "gpt3", "--out", "{tmp}/s.csv"], 2, "gpt3"),
    (["sweep", "--strategies", "ring", "--out", "{tmp}/s.csv"], 2, "ring"),
    (["sweep", "--hardware", "nope", "--out", "{tmp}/s.csv"], 2, "nope"),
    (["sweep", "--schedules", "bogus", "--out", "{tmp}/s.csv"], 2, "bogus"),
    (["sweep", "--overlaps", "maybe", "--out", "{tmp}/s.csv"], 2, "maybe"),
    (["sweep", "--params", "n16-boot,n17", "--out", "{tmp}/s.csv"], 2, "unknown CKKS presets 'n17'"),
    (["sweep", "--params", "toy-n10-boot", "--grid", "default", "--out", "{tmp}/s.csv"], 2, "toy-n10-boot"),
    (["sweep", "--params", ",", "--out", "{tmp}/s.csv"], 2, "empty"),
    (["sweep", "--grid", "default", "--seqs", "128", "--out", "{tmp}/s.csv"], 2, "fixed grid"),
    (["sweep", "--grid", "bogus"], 2, "invalid choice"),
    (["sweep", "--workers", "0", "--out", "{tmp}/s.csv"], 2, "at least 1"),
    (["sweep", "--jitter", "-0.5", "--out", "{tmp}/s.csv"], 2, ">= 0"),
    (["sweep", "--out", "{tmp}/nodir/s.csv"], 2, "does not exist"),
    (["sweep", "--out", "{tmp}/adir"], 2, "is a directory"),
    (["sweep", "--out", "{tmp}/s.txt"], 2, ".csv"),
    (["sweep", "--params", "nope", "--out", "{tmp}/s.csv"], 2, "nope"),
    # run
    (["run", "--model", "minilm-l6", "--out", "{tmp}/r"], 2, "--params"),
    (["run", *TINY, "--out", "{tmp}/existing.txt"], 2, "not a directory"),
    (["run", *TINY, "--out", "{tmp}/nodir/r"], 2, "does not exist"),
    (["run", "--model", "minilm-l6", "--text", "", "--out", "{tmp}/r"], 2, "--text"),
    (["run", *TINY, "--text", "hello", "--out", "{tmp}/r"], 2, "minilm-l6"),
    (["run", *TINY, "--backend", "tpu", "--out", "{tmp}/r"], 2, "invalid choice"),
    (["run", "--plan", "{tmp}/missing.json", "--out", "{tmp}/r"], 2, "missing.json"),
    (["run", "--plan", "{tmp}/badplan.json", "--out", "{tmp}/r"], 2, "badplan.json"),
    (["run", "--seq", "0", "--out", "{tmp}/r"], 2, "at least 1"),
    (["run", "--devices", "0", "--out", "{tmp}/r"], 2, "at least 1"),
    (["run", "--seed", "-1", "--out", "{tmp}/r"], 2, "at least 0"),
    (["run", "--params", "toy-n10", "--out", "{tmp}/r"], 2, "insecure"),
    # embed
    (["embed", "--text", ""], 2, "--text"),
    (["embed", "--text", "   "], 2, "--text"),
    (["embed", "--text", "hi", "--layers", "99"], 2, "1..6"),
    (["embed", "--text", "hi", "--layers", "0"], 2, "at least 1"),
    (["embed", "--model", "bert-base", "--text", "hi"], 2, "minilm-l6"),
    (["embed", "--text", "hi", "--json", "{tmp}/nodir/e.json"], 2, "does not exist"),
    (["embed"], 2, "--text"),
    # calibrate
    (["calibrate", "--params", "toy-n10", "--out", "{tmp}/c.json"], 2, "insecure"),
    (["calibrate", "--params", "nope", "--out", "{tmp}/c.json"], 2, "nope"),
    (["calibrate", "--params", "toy-n10", "--insecure", "--repeats", "0", "--out", "{tmp}/c.json"], 2, "at least 1"),
    (["calibrate", "--params", "toy-n10", "--insecure", "--base", "nope", "--out", "{tmp}/c.json"], 2, "nope"),
    (["calibrate", "--params", "toy-n10", "--insecure", "--out", "{tmp}/adir"], 2, "is a directory"),
    (["calibrate", "--params", "toy-n10", "--insecure", "--out", "{tmp}/nodir/c.json"], 2, "does not exist"),
    (["calibrate", "--backend", "tpu", "--out", "{tmp}/c.json"], 2, "invalid choice"),
    (["run", *TINY, "--launcher", "mpi", "--backend", "cupy", "--out", "{tmp}/r"], 2, "numpy backend only"),
    (["run", *TINY, "--launcher", "tcp", "--out", "{tmp}/r"], 2, "invalid choice"),
    # worker (the checks before MPI starts)
    (["worker"], 2, "--plan"),
    (["worker", "--plan", "{tmp}/missing.json"], 2, "missing.json"),
    (["worker", "--plan", "{tmp}/badplan.json"], 2, "badplan.json"),
    (["worker", "--plan", "{tmp}/missing.json", "--out", "{tmp}/existing.txt"], 2, "not a directory"),
    # reproduce
    (["reproduce", "--repeats", "0", "--out", "{tmp}/rp"], 2, "at least 1"),
    (["reproduce", "--out", "{tmp}/rp"], 2, "say so with --insecure"),
    (["reproduce", "--out", "{tmp}/existing.txt"], 2, "not a directory"),
    (["reproduce", "--out", "{tmp}/existing.txt/sub"], 2, "not a directory"),
    # check
    (["check", "{tmp}/norun"], 2, "no result.json"),
    (["check", "{tmp}/missing"], 2, "missing"),
    (["check", "{tmp}/badrun"], 2, "measured"),
    (["check", "{tmp}/garbagerun"], 2, "result.json"),
    (["check", "{tmp}/norun", "--max-median", "-5"], 2, ">= 0"),
    (["check", "{tmp}/norun", "--max-p95", "abc"], 2, ">= 0"),
    (["check", "{tmp}/norun", "--csv", "{tmp}/nodir/c.csv"], 2, "does not exist"),
    (["check", "{tmp}/existing.txt"], 2, "not a directory"),
    (["check"], 2, "dirs"),
    # plot
    (["plot", "{tmp}/notsweep.csv", "--out", "{tmp}/p"], 2, "notsweep.csv"),
    (["plot", "{tmp}/missing.csv", "--out", "{tmp}/p"], 2, "missing.csv"),
    (["plot", "{tmp}/empty.csv", "--out", "{tmp}/p"], 2, "empty.csv"),
    (["plot", "{tmp}/notsweep.csv", "--out", "{tmp}/existing.txt"], 2, "not a directory"),
    (["plot", "{tmp}/adir", "--out", "{tmp}/p"], 2, "adir"),
    # bench
    (["bench", "gpu"], 2, "invalid choice"),
    (["bench", "fhe", "--n", "12"], 2, "13"),
    (["bench", "fhe", "--n", "a,b"], 2, "'a'"),
    (["bench", "fhe", "--n", ","], 2, "empty"),
    (["bench", "fhe", "--repeats", "0"], 2, "at least 1"),
    (["bench", "fhe", "--vs", "nope"], 2, "invalid choice"),
    (["bench", "fhe", "--bootstrap", "toy-n10-boot"], 2, "insecure"),
    (["bench", "fhe", "--bootstrap", "nope"], 2, "nope"),
    (["bench", "fhe", "--json", "{tmp}/nodir/b.json"], 2, "does not exist"),
    (["bench", "plan", "--table", "{tmp}/adir"], 2, "is a directory"),
    (["bench", "sim", "--json", "{tmp}/existing.txt/x.json"], 2, "not a directory"),
    (["bench", "fhe", "--backend", "tpu"], 2, "invalid choice"),
]


def make_fixtures(tmp: Path) -> None:
    """The files the cases point at: an existing file and directory, ill-formed plans, profiles, runs, sweeps."""
    from aegis.hardware import HARDWARE_DIR

    (tmp / "existing.txt").write_text("keep me\n")
    (tmp / "adir").mkdir()
    (tmp / "norun").mkdir()
    (tmp / "badrun").mkdir()
    (tmp / "badrun" / "result.json").write_text(json.dumps({"predicted": {"latency_s": 1.0}}))
    (tmp / "garbagerun").mkdir()
    (tmp / "garbagerun" / "result.json").write_text("{not json")
    (tmp / "badplan.json").write_text("{not json")
    (tmp / "wrongplan.json").write_text(json.dumps({"a": 1}))
    (tmp / "badprof.json").write_text("{not json")
    (tmp / "empty.json").write_text("")
    (tmp / "empty.csv").write_text("")
    (tmp / "notsweep.csv").write_text("a,b\n1,2\n")
    raw = json.loads((HARDWARE_DIR / "cpu.json").read_text())
    raw["kernel_table"] = {"log_n": 16, "prims": {p: {"fixed_s": -1e-3, "per_limb_s": -1e-4}
                                                  for p in ("rot", "hoist", "hrot", "pmul", "rescale")}}
    (tmp / "negprof.json").write_text(json.dumps(raw))


def expand(argv: list[str], tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in argv]


def snapshot(tmp: Path) -> dict[str, float]:
    return {str(p.relative_to(tmp)): p.stat().st_mtime for p in tmp.rglob("*")}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bad")
    make_fixtures(tmp)
    return tmp


def test_the_table_is_large_and_covers_every_subcommand():
    assert len(CASES) >= 60
    commands = {a[0] for a, _, _ in CASES if a}
    assert commands >= {"demo", "plan", "graph", "simulate", "sweep", "run", "worker", "embed", "calibrate", "reproduce",
                        "check", "plot", "bench"}


@pytest.mark.parametrize("argv,code,needle", CASES, ids=[" ".join(a) or "(none)" for a, _, _ in CASES])
def test_bad_input_is_refused_in_one_line(argv, code, needle, scratch, capsys, monkeypatch):
    monkeypatch.chdir(scratch)
    before = snapshot(scratch)
    assert main(expand(argv, scratch)) == code
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aegis: error: "), cap.err
    assert "Traceback" not in cap.err + cap.out
    assert needle in lines[0], lines[0]
    assert snapshot(scratch) == before, "a refused command left output behind"


@pytest.mark.parametrize("argv", [["plan", "--seq", "1000000000"], ["check", "{tmp}/badrun"]])
def test_a_real_process_exits_with_one_line(argv, scratch):
    """The installed entry point behaves the same in a process of its own."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    p = subprocess.run([sys.executable, "-m", "aegis.cli", *expand(argv, scratch)], capture_output=True, text=True,
                       timeout=60, env=env)
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr


def test_debug_shows_the_traceback(scratch, capsys, monkeypatch):
    monkeypatch.setenv("AEGIS_DEBUG", "1")
    assert main(["check", str(scratch / "norun")]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_interrupt_is_one_line_and_exit_130(monkeypatch, capsys):
    import aegis.cli as cli

    def stop(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_demo", stop)
    assert main(["demo"]) == 130
    assert capsys.readouterr().err == "aegis: interrupted\n"


def test_an_unexpected_error_is_one_line_with_its_type_and_exit_1(monkeypatch, capsys):
    import aegis.cli as cli

    monkeypatch.setattr(cli, "_demo", lambda args: 1 / 0)
    assert main(["demo"]) == 1
    assert capsys.readouterr().err == "aegis: error: ZeroDivisionError: division by zero\n"


def test_a_failed_writer_leaves_nothing(tmp_path):
    from aegis.safeio import atomic_write

    with pytest.raises(RuntimeError), atomic_write(tmp_path / "out.json") as f:
        f.write("half")
        raise RuntimeError("interrupted mid-write")
    assert list(tmp_path.iterdir()) == []
    with atomic_write(tmp_path / "out.json") as f:
        f.write("whole")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"] and (tmp_path / "out.json").read_text() == "whole"
