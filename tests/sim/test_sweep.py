import csv

import pytest

import sim.sweep as sweep
from sim.sweep import SweepSpec, run_sweep


def _spec():
    return SweepSpec(models=["bert-base"], seqs=[128], devices=[1, 2], strategies=["single", "token", "aegis"])


def test_sweep_rows_and_resume(tmp_path, monkeypatch):
    out = tmp_path / "s.csv"
    rows = run_sweep(_spec(), out, workers=1, progress=False)
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)      # one device runs single only
    on_disk = list(csv.DictReader(open(out)))
    assert len(on_disk) == 3 and {r["strategy"] for r in on_disk} == {"single", "token", "aegis"}
    calls = []
    monkeypatch.setattr(sweep, "run_one", lambda cfg: calls.append(cfg) or {**cfg, "status": "ok"})
    again = run_sweep(_spec(), out, workers=1, progress=False)
    assert calls == [] and len(again) == 3


def test_interrupted_sweep_keeps_finished_rows(tmp_path, monkeypatch):
    out = tmp_path / "s.csv"
    real = sweep.run_one
    n = []

    def flaky(cfg):
        n.append(cfg)
        if len(n) == 2:
            raise KeyboardInterrupt
        return real(cfg)

    monkeypatch.setattr(sweep, "run_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_spec(), out, workers=1, progress=False)
    assert len(list(csv.DictReader(open(out)))) == 1
    monkeypatch.setattr(sweep, "run_one", real)
    rows = run_sweep(_spec(), out, workers=1, progress=False)
    assert len(rows) == 3 and len(list(csv.DictReader(open(out)))) == 3


def test_failed_configuration_is_a_row_and_is_retried(tmp_path, monkeypatch):
    """A configuration whose planning raises becomes an ``error`` row with the reason; the sweep goes on,
    and a rerun computes that configuration alone again."""
    import aegis.plan

    out = tmp_path / "s.csv"
    real_plan, real_one = aegis.plan.build_plan, sweep.run_one

    def failing_token(wl, strategy, *a, **kw):
        if strategy == "token":
            raise RuntimeError("planner broke (test)")
        return real_plan(wl, strategy, *a, **kw)

    monkeypatch.setattr(aegis.plan, "build_plan", failing_token)
    rows = run_sweep(_spec(), out, workers=1, progress=False)
    by = {r["strategy"]: r for r in rows}
    assert by["token"]["status"] == "error" and by["token"]["error"] == "RuntimeError: planner broke (test)"
    assert by["single"]["status"] == by["aegis"]["status"] == "ok"
    assert {r["strategy"]: r["status"] for r in csv.DictReader(open(out))} == \
        {"single": "ok", "aegis": "ok", "token": "error"}
    monkeypatch.setattr(aegis.plan, "build_plan", real_plan)
    calls = []
    monkeypatch.setattr(sweep, "run_one", lambda cfg: calls.append(cfg["strategy"]) or real_one(cfg))
    again = run_sweep(_spec(), out, workers=1, progress=False)
    assert calls == ["token"] and all(r["status"] == "ok" for r in again) and len(again) == 3


def test_bad_sweep_names(tmp_path):
    with pytest.raises(ValueError, match="valid strategies"):
        run_sweep(SweepSpec(strategies=["ring"]), tmp_path / "s.csv", workers=1, progress=False)
    with pytest.raises(ValueError, match=r".csv, .parquet or .sqlite"):
        run_sweep(_spec(), tmp_path / "s.txt", workers=1, progress=False)
    with pytest.raises(ValueError, match="toy-n10-boot.*128-bit-secure presets only"):
        run_sweep(SweepSpec(params=["n16-boot", "toy-n10-boot"]), tmp_path / "s.csv", workers=1, progress=False)
    assert {c["params"] for c in SweepSpec(seqs=[128], devices=[1], params="n16-boot-11").configs()} == {"n16-boot-11"}


def test_parquet_output(tmp_path):
    pytest.importorskip("pyarrow", reason="Parquet output needs pyarrow")
    out = tmp_path / "s.parquet"
    rows = run_sweep(_spec(), out, workers=1, progress=False)
    assert len(sweep.read_rows(out)) == len(rows) == 3


def test_cost_names_the_costliest_configuration():
    rows = [{"status": "ok", "plan_s": 1.0, "sim_s": 0.5, "strategy": "a"},
            {"status": "ok", "plan_s": 0.2, "sim_s": 2.0, "strategy": "b"},
            {"status": "error", "plan_s": None, "sim_s": None, "strategy": "c"}]
    c = sweep.cost(rows)
    assert c["count"] == 2 and c["total_s"] == pytest.approx(3.7) and c["costliest"]["strategy"] == "b"
    assert sweep.cost(rows[2:]) is None


def test_ctrl_c_stops_the_pool_at_once_keeping_finished_rows(tmp_path):
    """SIGINT to a 2-process sweep: exit 130 within seconds (the workers are terminated, not waited for), the
    pool's processes gone, the rows that had landed kept."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from sim.sweep import read_rows, store_path

    out = tmp_path / "s.csv"
    argv = [sys.executable, "-m", "aegis.cli", "sweep", "--seqs", "256,512", "--devices", "2,4", "--strategies",
            "aegis,token,limb", "--workers", "2", "--out", str(out), "--no-progress"]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while not (store_path(out).exists() and read_rows(store_path(out))):
        assert p.poll() is None, p.communicate()[1]
        time.sleep(0.1)
    workers = [c for c in psutil.Process(p.pid).children(recursive=True)      # not the resource tracker
               if "spawn_main" in " ".join(c.cmdline()) and "resource_tracker" not in " ".join(c.cmdline())]
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 130 and err.strip().endswith("aegis: interrupted"), err
    assert time.monotonic() - t0 < 10
    assert len(workers) == 2 and not [c for c in workers if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    kept = read_rows(store_path(out))
    assert 1 <= len(kept) < 12 and all(r["status"] == "ok" for r in kept)
