"""Start a Plan as an MPI job -- one process per device plus the client -- and bring its output back.

``run_mpi(plan)`` runs ``mpiexec -n G+1 python -m aegis.cli worker --plan ...`` (rank 0 the client,
ranks 1..G the devices; :mod:`exec.mpi_client`, :mod:`exec.mpi_worker`) and returns the same
:class:`exec.runner.RunOutput` as the thread executor.  ``mpiexec`` is the MPICH of the ``mpi``
extra (installed beside the interpreter), else the first on ``PATH``.

Faults: a device that raises reports rank, op and error to the client, which aborts the job; a device
that dies (killed, out of memory) is noticed by ``mpiexec``, which ends the others.  Either way
``run_mpi`` raises :class:`exec.runner.ExecutionError` naming the rank and what it was doing (each
rank keeps its pid and current op in a status file), and nothing is written to a result directory.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .runner import ExecutionError, RunOutput, check_executable, check_host_memory

#: environment for every rank: one thread per process for numpy's BLAS (the devices are the parallelism)
RANK_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def mpiexec() -> str | None:
    """Path of ``mpiexec``: the one beside this interpreter (the mpich wheel), else on ``PATH``; None if absent."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.exists():
        return str(here)
    return shutil.which("mpiexec")


def mpi_unavailable() -> str | None:
    """Why MPI runs cannot start here (None when they can): mpi4py or mpiexec missing."""
    try:
        import mpi4py  # noqa: F401 -- importing the package does not start MPI
    except ImportError:
        return "mpi4py is not installed (pip install -e \".[mpi]\")"
    if mpiexec() is None:
        return "no mpiexec found (pip install -e \".[mpi]\" installs MPICH's beside the interpreter)"
    return None


def worker_command(plan_path: str, devices: int, seed: int, backend: str, insecure: bool,
                   extra: list[str] | None = None, guard: list[str] | None = None) -> list[str]:
    """The ``mpiexec`` command line of a run: rank 0 the client, one rank per device (each under ``guard``,
    a command prefix, if given)."""
    exe = mpiexec()
    if exe is None:
        raise ExecutionError(mpi_unavailable() or "no mpiexec")
    cmd = [exe, "-n", str(devices + 1), *(guard or []), sys.executable, "-m", "aegis.cli", "worker", "--plan", plan_path,
           "--seed", str(seed), "--backend", backend]
    return cmd + (["--insecure"] if insecure else []) + (extra or [])


def _env() -> dict[str, str]:
    env = dict(os.environ) | RANK_ENV
    root = str(Path(__file__).resolve().parent.parent)         # the ranks import this checkout's code
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_mpi(plan: Any, seed: int = 0, backend: str = "numpy", timeout: float | None = None,
            progress: bool = False) -> RunOutput:
    """Run ``plan`` with one process per device; the output of the client rank.  (``progress`` is accepted for
    the thread executor's signature; the ranks print nothing while they run.)"""
    why = mpi_unavailable()
    if why:
        raise ExecutionError(f"the MPI launcher cannot start: {why}; or use --launcher threads")
    check_executable(plan)
    if backend == "numpy":
        check_host_memory(plan)
    with tempfile.TemporaryDirectory(prefix="aegis-mpi-") as tmp:
        t = Path(tmp)
        plan.save(t / "plan.json")
        cmd = worker_command(str(t / "plan.json"), plan.devices, seed, backend, plan.params.insecure,
                             ["--pickle", str(t / "output.pkl"), "--status-dir", str(t)],
                             guard=[sys.executable, "-m", "exec.guard", str(t)])
        with open(t / "stderr", "w+b") as err:
            # mpiexec reports a rank that died (its pid and exit code) on stdout: keep both streams
            proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
            try:
                rc, dead = _watch(proc, t, plan.devices, timeout)
            except BaseException:                       # interrupted or timed out: end the whole job
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                raise
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        if dead is not None:
            raise ExecutionError(dead)
        if rc != 0 or not (t / "output.pkl").exists():
            raise ExecutionError(failure_line(t, plan.devices, rc, stderr))
        with open(t / "output.pkl", "rb") as f:
            return pickle.load(f)


#: seconds between two looks at the ranks of a running job, and how long a dead rank is left to mpiexec
WATCH_S = 0.2
GRACE_S = 5.0


def _rank_states(status_dir: Path, devices: int) -> dict[int, tuple[int, str]]:
    """(pid, what it is doing) of every rank that has written its status file."""
    out = {}
    for r in range(devices + 1):
        p = status_dir / f"rank-{r}"
        try:
            pid, _, what = p.read_text().strip().partition(" ")
            out[r] = (int(pid), what)
        except (OSError, ValueError):
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _watch(proc: subprocess.Popen, status_dir: Path, devices: int, timeout: float | None) -> tuple[int, str | None]:
    """Wait for the job.  ``mpiexec`` ends a job whose rank died and says which pid (:func:`failure_line`
    maps it to the rank); if ranks are gone before saying they were done and ``mpiexec`` has not ended the
    job :data:`GRACE_S` later, end it here and name them.  Returns (exit status, that line or None)."""
    import time

    start = time.monotonic()
    noticed = None
    while True:
        try:
            return proc.wait(timeout=WATCH_S), None
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if timeout is not None and now - start > timeout:
            raise TimeoutError(f"the MPI job ran past {timeout:.0f} s")
        gone = [(r, what) for r, (pid, what) in _rank_states(status_dir, devices).items()
                if what != "done" and not _alive(pid)]
        if gone and noticed is None:
            noticed = now
        if gone and now - noticed > GRACE_S:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            who = "; ".join(("the client (rank 0)" if r == 0 else f"device {r - 1} (rank {r})") + f" during {w}"
                            for r, w in gone)
            return proc.returncode, f"ranks died: {who}; the MPI job was stopped"


def failure_line(status_dir: Path, devices: int, rc: int, stderr: str) -> str:
    """One line saying which rank failed, in which op, and how (from the client's report or the status files)."""
    f = status_dir / "failure.json"
    if f.exists():
        return json.loads(f.read_text())["line"]
    states = {}
    for r in range(devices + 1):
        p = status_dir / f"rank-{r}"
        if p.exists():
            pid, _, what = p.read_text().strip().partition(" ")
            states[r] = (int(pid) if pid.isdigit() else 0, what)
    ends = []                                   # how ranks ended, as their guards saw it (exec.guard)
    for p in status_dir.glob("exit-*"):
        try:
            ends.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    if ends:
        first = min(ends, key=lambda e: e["time"])
        r = int(first["rank"])
        who = "the client (rank 0)" if r == 0 else f"device {r - 1} (rank {r})"
        what = states.get(r, (0, "start"))[1]
        return f"{who} died during {what} ({first['how']}); the MPI job was stopped"
    ours = [ln for ln in stderr.splitlines() if ln.startswith("aegis: error:")]
    if ours:                                   # a rank's own one-line error (the client's, before it aborts)
        return f"the MPI job failed: {ours[0][len('aegis: error:'):].strip()}"
    last = [ln for ln in stderr.strip().splitlines() if ln.strip() and not set(ln.strip()) <= set("=")]
    tail = last[-1].strip() if last else "no message"
    doing = "; ".join(f"rank {r}: {w}" for r, (_, w) in sorted(states.items()))
    return f"the MPI job failed (mpiexec exit status {rc}): {tail}" + (f" [{doing}]" if doing else "")
