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
import re
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
                   extra: list[str] | None = None) -> list[str]:
    """The ``mpiexec`` command line of a run: rank 0 the client, one rank per device."""
    exe = mpiexec()
    if exe is None:
        raise ExecutionError(mpi_unavailable() or "no mpiexec")
    cmd = [exe, "-n", str(devices + 1), sys.executable, "-m", "aegis.cli", "worker", "--plan", plan_path,
           "--seed", str(seed), "--backend", backend]
    return cmd + (["--insecure"] if insecure else []) + (extra or [])


def _env() -> dict[str, str]:
    env = dict(os.environ) | RANK_ENV
    root = str(Path(__file__).resolve().parent.parent)         # the ranks import this checkout's code
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_mpi(plan: Any, seed: int = 0, backend: str = "numpy", timeout: float | None = None,
            progress: bool = False) -> RunOutput:
    """Run ``plan`` with one process per device; the output of the client rank."""
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
                             ["--pickle", str(t / "output.pkl"), "--status-dir", str(t)])
        with open(t / "stderr", "w+b") as err:
            proc = subprocess.Popen(cmd, stdout=None if progress else subprocess.DEVNULL, stderr=err, env=_env(),
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
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
        if rc != 0 or not (t / "output.pkl").exists():
            raise ExecutionError(failure_line(t, plan.devices, rc, stderr))
        with open(t / "output.pkl", "rb") as f:
            return pickle.load(f)


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
            states[r] = (pid, what)
    m = re.search(r"PID (\d+) RUNNING AT \S+\s*=\s*(?:EXIT CODE|KILLED BY SIGNAL): (\d+)", stderr)
    if m:
        pid, code = m.groups()
        for r, (p, what) in states.items():
            if p == pid:
                who = "the client (rank 0)" if r == 0 else f"device {r - 1} (rank {r})"
                return f"{who} died during {what} (exit code {code}: {_signal_name(int(code))}); the MPI job was stopped"
    last = [ln for ln in stderr.strip().splitlines() if ln.strip() and not set(ln.strip()) <= set("=")]
    tail = last[-1].strip() if last else "no message"
    doing = "; ".join(f"rank {r}: {w}" for r, (_, w) in sorted(states.items()))
    return f"the MPI job failed (mpiexec exit status {rc}): {tail}" + (f" [{doing}]" if doing else "")


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return "not a signal"
