"""MPI transfer time on this machine: latency and bandwidth between two ranks, per message size.

``time_mpi_links(sizes)`` starts ``mpiexec -n 2 python -m exec.calibrate_mpi SIZE...``: the two ranks
ping-pong a uint64 array of each size (bytes) through :mod:`exec.wire` -- the transport the MPI
executor uses, header and buffer-protocol arrays, polite waits included -- and rank 0 prints the best
one-way time per size (half the round trip; best of ``repeats`` rounds).  A least-squares
``latency + bytes / bandwidth`` over the sizes gives the ``cpu`` profile's link figures.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np


def _pingpong(sizes: list[int], repeats: int) -> dict[int, float]:
    from mpi4py import MPI

    from . import wire

    comm = MPI.COMM_WORLD
    me, other = comm.Get_rank(), 1 - comm.Get_rank()
    out = {}
    for n in sizes:
        a = np.zeros(max(n // 8, 1), dtype=np.uint64)
        best = float("inf")
        for _ in range(repeats):
            wire.wait([comm.Ibarrier()])
            t = time.perf_counter()
            if me == 0:
                wire.wait(wire.send(comm, a, other, 7).requests)
                wire.recv(comm, other, 7)
            else:
                b = wire.recv(comm, other, 7)
                wire.wait(wire.send(comm, b, other, 7).requests)
            best = min(best, (time.perf_counter() - t) / 2)
        out[n] = best
    return out


def time_mpi_links(sizes: list[int], repeats: int = 5) -> tuple[float, float, dict[int, float]]:
    """(bytes/s, latency s, {bytes: one-way seconds}) between two MPI ranks on this machine."""
    from .launch import RANK_ENV, _env, mpiexec, mpi_unavailable

    why = mpi_unavailable()
    if why:
        raise RuntimeError(f"MPI links cannot be timed: {why}")
    r = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", "exec.calibrate_mpi", str(repeats),
                        *map(str, sizes)], capture_output=True, text=True, timeout=600, env=_env() | RANK_ENV)
    if r.returncode:
        raise RuntimeError(f"the MPI link timing failed: {r.stderr.strip()[-300:]}")
    times = {int(k): float(v) for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()}
    x = np.array(sorted(times), dtype=float)
    y = np.array([times[int(k)] for k in x])
    A = np.stack([np.ones_like(x), x], axis=1)
    (lat, inv_bw), *_ = np.linalg.lstsq(A, y, rcond=None)
    return 1.0 / max(float(inv_bw), 1e-15), max(float(lat), 0.0), times


if __name__ == "__main__":
    res = _pingpong([int(s) for s in sys.argv[2:]], int(sys.argv[1]))
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 0:
        print(json.dumps(res))
