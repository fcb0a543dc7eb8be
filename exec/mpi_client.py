"""The key owner of an MPI run (rank 0): keys, encryption, client-aided refreshes, decryption, the Result.

Rank 0 is the client, not a device: it makes the keys with the plan's sparse-secret weight, sends each
device process the **evaluation keys** only, encrypts the input and sends every device the tiles its
``input`` ops produce (whole, or its limb shards), answers client-aided refresh requests, and at the
end receives the output ciphertexts and every rank's measurements, decrypts, and builds the same
:class:`exec.runner.RunOutput` as the thread executor.  The secret key never leaves this process.

A device that fails sends its rank, op and error here; the client writes ``failure.json`` in the run's
status directory and aborts the job (every rank ends).  A device that dies is noticed by ``mpiexec``,
which ends the job itself (:mod:`exec.launch` names the rank and op from the status files).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from aegis.comm import pair_bytes, pair_bytes_by_phase
from aegis.prims import limb_bytes
from aegis.program import PHASES
from aegis.result import Result
from fhe import CKKSContext
from fhe.backend import get_backend

from . import wire
from .keys import device_keys, without_backend
from .limb import assemble, shard
from .model import pack_tile
from .mpi_worker import ERROR, INPUT, INSPECT_ENV, KEYS, OUTPUT, REPLY, REQUEST, group_communicators, write_holdings
from .replay import cpu_latency
from .runner import Executor, RunOutput, key_owner


def client_main(plan: Any, seed: int, backend: str, world: Any, status_dir: str | None = None) -> RunOutput:
    """Rank 0's part of the run; returns the run's output (on rank 0 only)."""
    from mpi4py import MPI

    cli, dev = world.Dup(), world.Dup()
    group_communicators(plan, world)
    G = plan.devices
    ex = Executor(plan, backend=backend, seed=seed)
    ctx = CKKSContext(plan.params, get_backend(backend))
    client, _ = key_owner(plan, ctx)
    bundles = device_keys(client.evaluation_keys, plan.keys, G)  # sharded: each device its own keys
    sent = [wire.send(cli, without_backend(bundles[d]), d + 1, KEYS) for d in range(G)]
    for op in plan.ops:
        if op.kind != "input":
            continue
        cts = [client.encrypt_once((op.id, t), pack_tile(ex.pk, ex.x, op.block, t), op.level) for t in op.args["tiles"]]
        devs = plan.assign[op.id]
        split = plan.mode[op.id] == "limb" and len(devs) > 1
        for pos, d in enumerate(devs):
            tiles = [shard(c, len(devs), pos) for c in cts] if split else cts
            sent.append(wire.send(cli, tiles, d + 1, INPUT + op.id))
    barrier = world.Ibarrier()           # a device that fails before it (keys, warm-up) reports instead of arriving
    wire.wait_for(lambda: barrier.Test() or wire.arrived(cli, MPI.ANY_SOURCE, ERROR))
    t0 = time.perf_counter()
    reports: dict[int, dict[str, Any]] = {}
    st = wire.Status()
    while len(reports) < G:
        msg = wire.recv(cli, MPI.ANY_SOURCE, MPI.ANY_TAG, status=st)
        if st.tag == REQUEST:
            what, ct, level = msg
            sent.append(wire.send(cli, client.refresh(ct, level), st.source, REPLY))
        elif st.tag == OUTPUT:
            reports[st.source - 1] = msg
        elif st.tag == ERROR:
            line = f"device {msg['device']} (rank {msg['rank']}) failed in {msg['where']}: {msg['error']}"
            if status_dir:
                from aegis.safeio import write_text

                write_text(Path(status_dir) / "failure.json", json.dumps(msg | {"line": line}))
            print(f"aegis worker: {line}", flush=True)
            world.Abort(1)
        sent = [s for s in sent if not s.done()]
    wire.wait([r for s in sent for r in s.requests])
    if os.environ.get(INSPECT_ENV):                # test hook: the client's holdings and its secret's rows
        import hashlib

        sk = client._client.keygen.secret_key
        rows = [sk.coeffs.astype(np.int64)] + [np.asarray(r).astype(np.int64) for r in sk.ntt]
        write_holdings(0, {"secret_digests": sorted(hashlib.sha256(np.ascontiguousarray(r).tobytes()).hexdigest()
                                                    for r in rows)})
    return _result(ex, client, ctx, reports, t0)


def _result(ex: Executor, client: Any, ctx: Any, reports: dict[int, dict[str, Any]], t0: float) -> RunOutput:
    """Decrypt the outputs and merge every rank's measurements into one Result (times from the barrier)."""
    plan = ex.plan
    G = plan.devices
    store_all: dict = {}
    for i in plan.outputs:
        form = ex.out_form(i)
        if form == "whole":
            store_all[(i, "output")] = reports[plan.assign[i][0]]["outputs"][i]
        else:                                       # the key owner assembles the shards it receives
            per = [reports[d]["outputs"][i] for d in plan.assign[i]]
            store_all[(i, "output")] = [assemble([p[j] for p in per], ex.params.n, ctx.xp) for j in range(len(per[0]))]
    encrypted = ex._collect(store_all, lambda c: np.real(client.decrypt(c)))
    rows, cpu, comm_rows = [], [], []
    measured: dict[tuple[int, int, str], int] = {}
    for d in range(G):
        r = reports[d]
        rows += r["rows"]
        cpu += r["cpu"]
        comm_rows += r["comm_rows"]
        for k, b in r["counted"].items():
            measured[k] = measured.get(k, 0) + b
    order = sorted(range(len(rows)), key=lambda j: (rows[j][5], rows[j][4]))
    rows, cpu = [rows[j] for j in order], [cpu[j] for j in order]
    latency = max([r[6] for r in rows] + [c[5] for c in comm_rows])
    lb = limb_bytes(ex.params)
    by_phase = {ph: 0 for ph in PHASES}
    for (_, _, ph), b in measured.items():
        by_phase[ph] = by_phase.get(ph, 0) + b
    busy, busy_cpu = [0.0] * G, [0.0] * G
    for r, c in zip(rows, cpu):
        busy[r[4]] += r[6] - r[5]
        busy_cpu[r[4]] += c
    summary = {
        "latency_s": latency,
        "comm_bytes": {"total": sum(by_phase.values()), "by_phase": by_phase},
        "peak_memory_bytes": [reports[d]["peak"] for d in range(G)],
        "utilisation": [b / latency if latency else 0.0 for b in busy],
        "cpu_busy_s": busy_cpu,
        "fits": plan.fits, "comm_bytes_match": measured == pair_bytes_by_phase(plan.comm, lb),
        "client_roundtrip_bytes": client.roundtrip_bytes, "launcher": "mpi",
        "cpu_latency_s": cpu_latency(plan, rows, cpu, comm_rows),
        # ranks time from the moment each leaves the start barrier; on one host their monotonic clocks are
        # one clock, so the spread of those moments is the alignment error of the merged timeline
        "start_skew_s": max(r["t0"] for r in reports.values()) - min(r["t0"] for r in reports.values()),
    }
    ident = {"model": plan.workload.model.name, "seq_len": plan.workload.seq_len, "strategy": plan.strategy,
             "devices": G, "backend": ex.backend, "params": ex.params.name}
    links = {c.id: [f"{s}->{t}" for s, t in sorted(pair_bytes(c, lb))] for c in plan.comm if not c.internal}
    res = Result("exec", ident, rows, comm_rows, measured, summary, comm_links=links, op_cpu=cpu)
    return RunOutput(res, encrypted, ex.run_plaintext(), ex.exact())
