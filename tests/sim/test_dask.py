"""Sweeps on a Dask cluster: the same rows as the local pool, every row exactly once when a worker is killed
mid-way, failed tasks as failed rows that a rerun retries, and the scheduler checked before any work.

One real ``LocalCluster`` (2 single-threaded worker processes, its scheduler in this process) serves the
module; sweeps reach it as ``dask://HOST:PORT``, the path a remote cluster takes.
"""
import logging
import os
import signal
import socket
import sys
import threading
import time

import dask
import pytest
from distributed import Client, LocalCluster

import sim.executors as executors
import sim.sweep as sweep
from aegis.cli import main
from sim.sweep import SCHEMA, SweepSpec, read_rows, run_sweep, store_path

GRID = {"models": ["bert-base"], "seqs": [64, 128, 192], "devices": [1, 2, 4],
        "strategies": ["single", "token", "aegis"]}                          # 15 configurations
TIMING = ("plan_s", "sim_s")
REAL_RUN_ONE = sweep.run_one


def slow_run_one(cfg):
    """The real configuration, slowed so that a worker can be killed while it holds one (runs on the workers)."""
    time.sleep(0.4)
    return REAL_RUN_ONE(cfg)


def dying_run_one(cfg):
    """Kills its worker process on the 128-token token configuration, every time it is tried."""
    if cfg["seq"] == 128 and cfg["strategy"] == "token":
        os._exit(3)
    return REAL_RUN_ONE(cfg)


@pytest.fixture(scope="module")
def cluster():
    """(cluster, client, dask:// address); a task is given up after its second lost worker."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cl = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                          silence_logs=logging.CRITICAL)
    client = Client(cl, set_as_default=False)
    yield cl, client, "dask://" + cl.scheduler_address.removeprefix("tcp://")
    client.close()
    cl.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """GRID through today's local pool (2 processes): rows by key, timing columns dropped."""
    out = tmp_path_factory.mktemp("local") / "local.csv"
    run_sweep(SweepSpec(**GRID), out, workers=2, progress=False)
    return _by_key(read_rows(out))


def _by_key(rows):
    """Table rows (CSV text) by key, without the timing columns."""
    return {SCHEMA.key_of(r): {k: v for k, v in r.items() if k not in TIMING} for r in rows}


def _count_puts(monkeypatch):
    """Every key the sweep writes, in order (the writer is this process)."""
    puts = []
    real = sweep.SweepStore.put

    def put(self, row):
        puts.append(SCHEMA.key_of(row))
        real(self, row)

    monkeypatch.setattr(sweep.SweepStore, "put", put)
    return puts


def test_dask_rows_identical_to_local_pool(tmp_path, cluster, reference):
    out = tmp_path / "dask.csv"
    rows = run_sweep(SweepSpec(**GRID), out, progress=False, scheduler=cluster[2])
    assert len(rows) == 15 and all(r["status"] == "ok" for r in rows)
    assert _by_key(read_rows(out)) == reference            # the exported tables, value for value
    assert all(r["plan_s"] > 0 and r["sim_s"] > 0 for r in rows)


def test_killed_worker_every_row_exactly_once(tmp_path, cluster, reference, monkeypatch):
    cl, client, address = cluster
    out = tmp_path / "kill.csv"
    monkeypatch.setattr(sweep, "run_one", slow_run_one)
    puts = _count_puts(monkeypatch)
    killed = []

    def killer():
        while len(puts) < 3:
            time.sleep(0.02)
        pids = client.run(os.getpid)
        busy = [w for w, keys in client.processing().items() if keys and w in pids]
        os.kill(pids[busy[0]], signal.SIGKILL)                  # a worker process in the middle of a configuration
        killed.append(len(puts))

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    rows = run_sweep(SweepSpec(**GRID), out, progress=False, scheduler=address)
    t.join(5)
    assert killed and killed[0] < 15                           # the kill landed while configurations remained
    grid = sorted(SCHEMA.key_of(c) for c in SweepSpec(**GRID).configs())
    assert sorted(puts) == grid                                 # each configuration's row written once, none lost
    assert all(r["status"] == "ok" for r in rows)
    assert _by_key(read_rows(out)) == reference
    client.wait_for_workers(2, timeout=60)                      # the nanny has restarted it for the next test


def test_task_whose_workers_die_is_a_failed_row_then_retried(tmp_path, cluster, monkeypatch, capsys):
    address = cluster[2]
    out = tmp_path / "die.csv"
    spec = SweepSpec(**{**GRID, "seqs": [128], "devices": [1, 2]})                 # 3 configurations
    monkeypatch.setattr(sweep, "run_one", dying_run_one)
    rows = {r["strategy"]: r for r in run_sweep(spec, out, progress=False, scheduler=address)}
    assert rows["token"]["status"] == "error" and "KilledWorker" in rows["token"]["error"]
    assert rows["single"]["status"] == rows["aegis"]["status"] == "ok"
    cluster[1].wait_for_workers(2, timeout=60)
    monkeypatch.setattr(sweep, "run_one", REAL_RUN_ONE)
    capsys.readouterr()
    again = run_sweep(spec, out, progress=False, scheduler=address)
    assert "1 of 3 configurations to compute" in capsys.readouterr().err          # only the failed one reruns
    assert [r["status"] for r in again] == ["ok"] * 3


def test_dask_local_cluster_path(tmp_path, reference):
    """--scheduler dask-local starts its own LocalCluster of --workers processes and gives the same rows."""
    out = tmp_path / "dl.csv"
    spec = SweepSpec(**{**GRID, "seqs": [64]})
    run_sweep(spec, out, workers=2, progress=False, scheduler="dask-local")
    got = _by_key(read_rows(out))
    assert len(got) == 5 and got == {k: reference[k] for k in got}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("arg, why", [("dask", "valid: local"), ("dask://host", "HOST:PORT"),
                                      ("dask://host:0", "1 to 65535"), ("tcp://host:8786", "valid: local")])
def test_bad_scheduler_is_one_line_exit_2(tmp_path, capsys, arg, why):
    out = tmp_path / "s.csv"
    assert main(["sweep", "--seqs", "64", "--scheduler", arg, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert why in err and err.count("\n") == 0 and not out.exists()


def test_workers_with_a_dask_cluster_is_a_usage_error(tmp_path, capsys):
    assert main(["sweep", "--seqs", "64", "--workers", "2", "--scheduler", "dask://127.0.0.1:8786",
                 "--out", str(tmp_path / "s.csv")]) == 2
    assert "--workers" in capsys.readouterr().err


def test_unreachable_scheduler_exit_1_nothing_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 1.0)
    out = tmp_path / "s.csv"
    out.write_text("")                                           # an (empty) existing output stays as it is
    rc = main(["sweep", "--seqs", "64", "--scheduler", f"dask://127.0.0.1:{_closed_port()}", "--out", str(out),
               "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("aegis: error: cannot reach the Dask scheduler") and "\n" not in err
    assert out.read_text() == "" and not store_path(out).exists()


def test_workers_running_other_source_are_refused(tmp_path, cluster, monkeypatch):
    """This process hashes less source than the workers do: the sweep is refused before the output is made."""
    monkeypatch.setattr(executors, "SOURCE_PACKAGES", ("aegis",))
    out = tmp_path / "s.csv"
    with pytest.raises(executors.SchedulerUnreachable, match="other AEGIS source"):
        run_sweep(SweepSpec(**GRID), out, progress=False, scheduler=cluster[2])
    assert not out.exists() and not store_path(out).exists()


def test_dask_scheduler_without_dask_installed_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)          # import distributed -> ImportError
    out = tmp_path / "s.csv"
    assert main(["sweep", "--seqs", "64", "--scheduler", "dask-local", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "dask[distributed]" in err and "\n" not in err and not out.exists()
