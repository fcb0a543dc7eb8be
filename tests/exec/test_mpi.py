"""The MPI executor: one process per device (``mpiexec``), the client as rank 0.

Skipped, with the reason, only when MPI cannot start here (mpi4py or mpiexec missing, or a two-rank
job failing to run).
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from aegis.comm import pair_bytes_by_phase
from aegis.prims import limb_bytes
from exec.launch import RANK_ENV, mpi_unavailable, mpiexec, run_mpi
from exec.runner import ExecutionError, promised_precision


def _mpi_start_problem() -> str | None:
    why = mpi_unavailable()
    if why:
        return why
    try:
        r = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-c",
                            "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"],
                           capture_output=True, timeout=60, env=dict(os.environ) | RANK_ENV)
    except subprocess.TimeoutExpired:
        return "a two-rank mpiexec job did not finish in 60 s"
    if r.returncode:
        return f"a two-rank mpiexec job failed: {r.stderr.decode(errors='replace').strip()[-200:]}"
    return None


WHY = _mpi_start_problem()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"MPI cannot start here: {WHY}")


@pytest.mark.parametrize("strategy", ["limb", "tensor"])
def test_mpi_run_moves_exactly_the_plans_bytes_and_decrypts_to_the_plaintext_program(tiny_plan, strategy):
    """limb: all-gathers, reduce-scatters and dropped-limb broadcasts inside ops, scatter/gather around them;
    tensor: sends, reduce-scatters of row-split partial sums, gathers."""
    plan = tiny_plan(strategy, 2)
    out = run_mpi(plan)
    m = out.result.summary
    assert m["launcher"] == "mpi"
    assert out.result.pair_bytes == pair_bytes_by_phase(plan.comm, limb_bytes(plan.params))   # counted at senders
    assert m["comm_bytes_match"] and m["comm_bytes"]["total"] > 0
    assert out.max_abs_error <= promised_precision(plan.params)
    # every op of every device's order ran once, on its device, with a CPU time beside its wall time
    assert sorted((r[0], r[4]) for r in out.result.ops) == sorted((i, d) for d in range(2) for i in plan.orders[d])
    assert len(out.result.op_cpu) == len(out.result.ops) and all(c >= 0 for c in out.result.op_cpu)
    assert sum(out.result.op_cpu) > 0
    trace = out.result.chrome_trace()["traceEvents"]
    assert {e["pid"] for e in trace if e.get("ph") == "X"} >= {0, 1}


def test_the_secret_key_never_reaches_a_device_process(tiny_plan, tmp_path, monkeypatch):
    """Each rank reports what its process holds at the end of a run: the client (rank 0) holds the secret
    key (the scan finds it there), no device process holds a client-side object or any row of the secret."""
    monkeypatch.setenv("AEGIS_INSPECT", str(tmp_path))
    run_mpi(tiny_plan("limb", 2))
    client = json.loads((tmp_path / "rank-0.json").read_text())
    secret = set(client["secret_digests"])
    assert "SecretKey" in client["client_objects"] and secret <= set(client["row_digests"])    # the scan works
    for r in (1, 2):
        dev = json.loads((tmp_path / f"rank-{r}.json").read_text())
        assert dev["client_objects"] == [], f"rank {r} holds {dev['client_objects']}"
        assert not secret & set(dev["row_digests"]), f"rank {r} holds a row of the secret key"
        assert len(dev["row_digests"]) > 100          # it did see the evaluation keys and ciphertexts


def test_a_killed_worker_stops_the_run_within_seconds_naming_it(tiny_plan, monkeypatch):
    monkeypatch.setenv("AEGIS_FAULT", "kill:1:3")             # device 1 SIGKILLs itself at its 4th op
    plan = tiny_plan("token", 2)
    op = plan.orders[1][3]
    t = time.monotonic()
    with pytest.raises(ExecutionError, match=rf"device 1 \(rank 2\) died during op {op} "):
        run_mpi(plan)
    assert time.monotonic() - t < 60


def test_a_raising_worker_is_named_by_rank_op_and_error(tiny_plan, monkeypatch):
    monkeypatch.setenv("AEGIS_FAULT", "raise:0:1")
    plan = tiny_plan("token", 2)
    op = plan.orders[0][1]
    with pytest.raises(ExecutionError, match=rf"device 0 \(rank 1\) failed in op {op} .*RuntimeError: fault injected"):
        run_mpi(plan)


def test_cli_run_with_a_dying_worker_leaves_no_result(tmp_path):
    """`aegis run --launcher mpi` with a worker killed: exit 1, one line naming it, no result.json."""
    out = tmp_path / "run"
    env = dict(os.environ) | {"AEGIS_FAULT": "kill:1:2"}
    r = subprocess.run([sys.executable, "-m", "aegis.cli", "run", "--insecure", "--params", "toy-n11-deep",
                        "--strategy", "token", "--devices", "2", "--launcher", "mpi", "--no-progress",
                        "--out", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "device 1 (rank 2) died during op" in err[0], r.stderr
    assert not (out / "result.json").exists()


def test_worker_by_hand_refuses_the_wrong_process_count(tiny_plan, tmp_path):
    p = tmp_path / "plan.json"
    tiny_plan("token", 2).save(p)
    r = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", "aegis.cli", "worker", "--insecure",
                        "--plan", str(p)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ) | RANK_ENV)
    assert r.returncode != 0
    assert "start 3 processes (rank 0 is the client)" in r.stderr


def test_thread_and_mpi_runs_count_the_same_bytes(tiny_plan):
    from exec.runner import Executor

    plan = tiny_plan("aegis", 2)
    a, b = Executor(plan).run(), run_mpi(plan)
    assert a.result.pair_bytes == b.result.pair_bytes
    assert np.max(np.abs(a.encrypted - b.encrypted)) < 2 * promised_precision(plan.params)


@pytest.mark.parametrize("options,devices", [({"mesh": "2x2"}, 4), ({"keys": "sharded+seeded", "key_buffer": 1.0}, 2)])
def test_mpi_runs_limb_group_meshes_and_key_plans(options, devices):
    """aegis's own plans on MPI: K/V shards between limb groups (``shard_send``), and evaluation keys sharded
    by rotation (fetched from their owner rank) and seed-compressed."""
    from aegis.bootstrap_model import BootstrapConfig
    from aegis.plan import build_plan
    from aegis.workloads import Workload, get_model
    from exec.model import TINY_APPROX

    wl = Workload(get_model("tiny", layers=1), 64, params_name="toy-n11-deep", insecure=True, approx=TINY_APPROX)
    plan = build_plan(wl, "aegis" if "mesh" in options else "token", devices, "cpu",
                      bootstrap=BootstrapConfig(mode="client_aided"), options=options)
    kinds = {c.kind for c in plan.comm} | {"key" for c in plan.comm if "key" in c.args}
    assert ("shard_send" in kinds) if "mesh" in options else ("key" in kinds)
    out = run_mpi(plan)
    s = out.result.summary
    assert s["comm_bytes_match"] and s["comm_bytes"]["total"] == sum(c.total_bytes for c in plan.comm)
    assert out.max_abs_error < promised_precision(plan.params)
