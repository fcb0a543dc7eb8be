"""One device of a Plan as one MPI process (rank ``device + 1``; rank 0 is the client, :mod:`exec.mpi_client`).

The device runs its op order from the Plan with the op implementations of :class:`exec.runner.Executor`
(:mod:`exec.ops`, :mod:`exec.limb`); it holds the evaluation keys and the ciphertexts it computes or
receives -- never the secret key, never the client's input (its input tiles arrive encrypted).

Transfers (the Plan's non-internal CommOps) are split into their two ends:

* the **sender** starts its part as soon as the data exist here (after the producing op, or after the
  reduction a gather forwards): non-blocking sends (:mod:`exec.wire`), bytes counted here per
  (source, destination, phase) -- the same expansion as :func:`aegis.comm.pair_bytes`;
* the **receiver** takes a message whenever it has arrived (checked between ops) and at the latest just
  before the op that consumes it, waiting then; reductions (partial sums) and gathers complete when
  every part and the local one are here.

Limb-split ops exchange inside the op through :class:`exec.mpi_group.MPILimbGroup`.  Every op records
start and end on the monotonic clock relative to a barrier all ranks leave together, and its CPU time
(``time.thread_time``: this process's own work, whatever else runs on the machine).
"""
from __future__ import annotations

import time
import traceback
from collections import defaultdict
from typing import Any

import numpy as np

from fhe import CKKSContext, Evaluator
from fhe.backend import get_backend
from fhe.ckks.context import Ciphertext

from . import wire
from .comm import Communicator
from .limb import LimbCiphertext, LimbEvaluator, assemble, own_limb_indices, shard
from .mpi_group import MPILimbGroup
from .keys import drop_key, get_key, key_arrays, put_key
from .runner import ExecutionError, Executor

# tags on the client communicator
KEYS, REQUEST, REPLY, ERROR, OUTPUT, INPUT = 1, 2, 3, 4, 5, 1000


def limb_groups(plan: Any) -> list[tuple[int, ...]]:
    """The device tuples of the plan's limb-split ops, in one order every rank agrees on."""
    return sorted({devs for devs, mode in zip(plan.assign, plan.mode) if mode == "limb" and len(devs) > 1})


def group_communicators(plan: Any, world: Any) -> dict[tuple[int, ...], Any]:
    """One communicator per limb group (collective over ``world``: every rank calls it, in the same order)."""
    out = {}
    for devs in limb_groups(plan):
        from mpi4py import MPI

        c = world.Create(world.Get_group().Incl([d + 1 for d in devs]))
        if c != MPI.COMM_NULL:           # ranks outside the group get COMM_NULL
            out[devs] = c
    return out


def needed(plan: Any, c: Any, producer: int, dst: int | None = None) -> list[str]:
    """Names of ``producer``'s outputs that ``c``'s consumers (on ``dst``, if given) read."""
    return sorted({n for b in c.before if dst is None or dst in plan.assign[b]
                   for sp, n, _, _ in plan.ops[b].reads if sp == producer})


class MPIChannel:
    """The device's way to the key owner (rank 0): client-aided refreshes as request and reply."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm

    def refresh(self, ct: Any, level: int) -> Any:
        wire.wait(wire.send(self.comm, ("refresh", ct, level), 0, REQUEST).requests)
        return wire.recv(self.comm, 0, REPLY)

    def encrypt_once(self, key: Any, values: Any, level: int) -> Any:
        raise ExecutionError("a device process never holds the client's input; input tiles arrive encrypted")


class DeviceRank:
    """Device ``d`` of ``ex.plan`` in this process."""

    def __init__(self, ex: Executor, d: int, keys: Any, dev_comm: Any, cli_comm: Any,
                 group_comms: dict[tuple[int, ...], Any], status: Any = None) -> None:
        self.ex, self.plan, self.d = ex, ex.plan, d
        self.dev, self.cli = dev_comm, cli_comm
        self.status = status
        self.ctx = CKKSContext(ex.params, get_backend(ex.backend))
        self.keys = keys
        self.ev = Evaluator(self.ctx, keys)
        self.counter = Communicator(self.plan.devices)
        self.limb_evs = {devs: LimbEvaluator(self.ctx, keys, MPILimbGroup(devs, c, self.counter), devs.index(d))
                         for devs, c in group_comms.items()}
        self.channel = MPIChannel(cli_comm)
        self.store: dict[tuple, list[Any]] = {}
        self.held = self.peak = 0
        self.rows: list[tuple] = []
        self.cpu: list[float] = []
        self.comm_rows: list[tuple] = []
        self.outgoing: list[wire.Outgoing] = []
        self.current = "start"
        self._prepare()

    # ---- the plan's transfers, seen from this device ----------------------------------------------
    def _prepare(self) -> None:
        plan, d = self.plan, self.d
        self.sends_after: dict[int, list[int]] = defaultdict(list)       # producer op -> comm ids sent from here
        self.recv_parts: dict[int, list[int]] = {}                       # comm id -> source devices still due
        self.recv_got: dict[int, dict[int, Any]] = defaultdict(dict)
        self.incoming: dict[int, list[int]] = defaultdict(list)          # consumer op -> comm ids it waits for
        self.done_comm: set[int] = set()
        self.pending_send: list[int] = []                                # gathers waiting for a local reduction
        self.claims: dict[tuple[int, str], int] = defaultdict(int)
        for i in plan.orders[d]:
            for src, name in {(r[0], r[1]) for r in plan.ops[i].reads}:
                self.claims[(src, name)] += 1
        self.finished: set[int] = set()                                  # ops this device has run
        self.key_drops: dict[int, list[str]] = defaultdict(list)         # op -> fetched keys to drop after it
        self.key_sends: list[int] = []                                   # key fetches this device serves
        for c in plan.comm:
            if c.internal:
                continue
            if "key" in c.args:                 # an evaluation key from its owner to a device that uses it
                src, dst = c.root, c.participants[1]
                if d == src:
                    self.key_sends.append(c.id)
                if d == dst:
                    self.recv_parts[c.id] = [src]
                    self.key_drops[c.args["until"]].append(c.args["key"])
                    for b in c.before:
                        self.incoming[b].append(c.id)
                continue
            producer = c.args.get("producer", c.after[0])
            P, root = c.participants, c.root
            if c.kind == "shard_send":          # the k-th device of one limb group to the k-th of another
                h = len(P) // 2
                if d in P[:h]:
                    self.sends_after[producer].append(c.id)
                    for n in self._reads_here(c, producer):
                        self.claims[(producer, n)] += 1
                if d in P[h:]:
                    self.recv_parts[c.id] = [P[P.index(d) - h]]
                    for b in c.before:
                        if d in plan.assign[b]:
                            self.incoming[b].append(c.id)
                continue
            if c.kind in ("send", "scatter"):
                senders = [root]
                receivers = [x for x in P if x != root and not (c.kind == "send" and self._has_whole(producer, x))]
            elif c.kind == "reduce_scatter":
                senders, receivers = list(P), list(P)
            elif c.kind == "gather":
                senders, receivers = [x for x in P if x != root], [root]
            else:
                raise ExecutionError(f"the MPI executor cannot carry out {c.kind!r} transfers yet")
            if d in senders:
                self.sends_after[producer].append(c.id)
                for n in self._reads_here(c, producer):
                    self.claims[(producer, n)] += 1
            if d in receivers:
                self.recv_parts[c.id] = [x for x in senders if x != d]
                if c.kind == "reduce_scatter" or (c.kind == "gather" and d in P):    # the local part is read too
                    for n in needed(plan, c, producer, root if c.kind == "gather" else None):
                        self.claims[(producer, n)] += 1
                for b in c.before:
                    if d in plan.assign[b]:
                        self.incoming[b].append(c.id)

    def _has_whole(self, producer: int, dev: int) -> bool:
        return dev in self.plan.assign[producer] and self.ex.out_form(producer) == "whole"

    def _reads_here(self, c: Any, producer: int) -> list[str]:
        return needed(self.plan, c, producer, c.root if c.kind == "gather" else None)

    # ---- store and memory ------------------------------------------------------------------------
    def put(self, key: tuple, cts: list[Any]) -> None:
        self.store[key] = cts
        self.held += sum(x.nbytes for x in cts)
        self.peak = max(self.peak, self.held)

    def release(self, src: int, name: str) -> None:
        k = (src, name)
        self.claims[k] -= 1
        if self.claims[k] > 0 or src in self.plan.outputs:
            return
        for key in [key for key in self.store if key[:2] == k]:
            self.held -= sum(x.nbytes for x in self.store.pop(key))

    def _count(self, dst: int, phase: str, nbytes: int) -> None:
        self.counter._count(self.d, dst, phase, nbytes)

    # ---- sender side -----------------------------------------------------------------------------
    def send_after(self, i: int) -> None:
        for cid in self.sends_after.get(i, ()):
            self._send(cid)

    def send_keys(self) -> None:
        """Post every key fetch this device serves (the receiver takes each when its buffer has room)."""
        for cid in self.key_sends:
            c = self.plan.comm[cid]
            t = time.perf_counter()
            arrays = key_arrays(get_key(self.keys, c.args["key"]), self.ex.params, c.args["level"])
            self._sent = 0
            self._post({"key": arrays}, c.participants[1], cid, c.phase, sum(int(a.nbytes) for a in arrays))
            self.comm_rows.append((cid, c.kind, c.phase, c.layer, t, time.perf_counter(), self._sent,
                                   "-".join(map(str, c.participants))))

    def _send(self, cid: int) -> None:
        plan, ex, d = self.plan, self.ex, self.d
        c = plan.comm[cid]
        producer = c.args.get("producer", c.after[0])
        P = c.participants
        t = time.perf_counter()
        self._sent = 0
        names = self._reads_here(c, producer)
        if c.kind == "shard_send":
            h = len(P) // 2
            src_g, dst_g = tuple(P[:h]), tuple(P[h:])
            msg = {n: self.store[(producer, n, src_g)] for n in names}
            self._post(msg, dst_g[src_g.index(d)], cid, c.phase, sum(x.nbytes for cts in msg.values() for x in cts))
        elif c.kind == "send":
            for dst in P:
                if dst == d or self._has_whole(producer, dst):
                    continue
                msg = {n: self.store[(producer, n, "whole")] for n in needed(plan, c, producer, dst)}
                self._post(msg, dst, cid, c.phase, sum(x.nbytes for cts in msg.values() for x in cts))
        elif c.kind == "scatter":
            for pos, dst in enumerate(P):
                msg = {n: [shard(ct, len(P), pos) for ct in self.store[(producer, n, "whole")]] for n in names}
                if dst == d:
                    for n, cts in msg.items():
                        self.put((producer, n, P), cts)
                else:
                    self._post(msg, dst, cid, c.phase, sum(x.nbytes for cts in msg.values() for x in cts))
        elif c.kind == "reduce_scatter":
            pform = ex.out_form(producer)
            for pos, dst in enumerate(P):
                if dst == d:
                    continue
                msg = {}
                for n in names:
                    rows = []
                    for ct in self.store[(producer, n, pform)]:
                        own = list(own_limb_indices(ct.level, len(P), pos))
                        rows.append([np.ascontiguousarray(p[own]) for p in ct.parts])
                    msg[n] = rows
                self._post(msg, dst, cid, c.phase, sum(a.nbytes for rs in msg.values() for r in rs for a in r))
        elif c.kind == "gather":
            pform = ex.out_form(producer)
            form = P if pform != "whole" else pform
            if any((producer, n, form) not in self.store for n in names):
                self.pending_send.append(cid)          # the reduction of a row-split producer is not done yet
                return
            msg = {n: self.store[(producer, n, form)] for n in names}
            self._post(msg, c.root, cid, c.phase, sum(x.nbytes for cts in msg.values() for x in cts))
        self.comm_rows.append((cid, c.kind, c.phase, c.layer, t, time.perf_counter(), self._sent,
                               "-".join(map(str, c.participants))))
        for n in names:
            self.release(producer, n)

    def _post(self, msg: dict[str, list[Any]], dst: int, cid: int, phase: str, nbytes: int) -> None:
        self._count(dst, phase, nbytes)
        self._sent += nbytes
        self.outgoing.append(wire.send(self.dev, msg, dst + 1, cid))

    # ---- receiver side ---------------------------------------------------------------------------
    def progress(self) -> None:
        """Take every message that has arrived; complete the transfers that have all their parts."""
        for cid in list(self.recv_parts):
            due = self.recv_parts[cid]
            c = self.plan.comm[cid]
            if "key" in c.args and any(a not in self.finished for a in c.after):
                continue                               # its buffer space is still in use
            for src in list(due):
                if wire.arrived(self.dev, src + 1, cid):
                    self.recv_got[cid][src] = wire.recv(self.dev, src + 1, cid)
                    due.remove(src)
            if not due:
                self._complete(cid)
        for cid in list(self.pending_send):
            self.pending_send.remove(cid)
            self._send(cid)
        self.outgoing = [o for o in self.outgoing if not o.done()]

    def _complete(self, cid: int) -> bool:
        plan, ex, d = self.plan, self.ex, self.d
        c = plan.comm[cid]
        got = self.recv_got[cid]
        if "key" in c.args:
            put_key(self.keys, c.args["key"], got[c.root]["key"], ex.params, c.args["level"], bool(c.args["seeded"]))
            del self.recv_parts[cid]
            self.recv_got.pop(cid, None)
            self.done_comm.add(cid)
            return True
        producer = c.args.get("producer", c.after[0])
        P = c.participants
        if c.kind == "shard_send":
            for n, cts in got[P[P.index(d) - len(P) // 2]].items():
                self.put((producer, n, P[len(P) // 2:]), cts)
        elif c.kind == "send":
            for n, cts in got[c.root].items():
                if (producer, n, "whole") not in self.store:
                    self.put((producer, n, "whole"), cts)
        elif c.kind == "scatter":
            for n, cts in got[c.root].items():
                self.put((producer, n, P), cts)
        elif c.kind == "reduce_scatter":
            pform = ex.out_form(producer)
            names = needed(plan, c, producer)
            if any((producer, n, pform) not in self.store for n in names):
                return False                           # our own partial sums are not computed yet
            pos = P.index(d)
            for n in names:
                out = []
                for i_ct, ct in enumerate(self.store[(producer, n, pform)]):
                    own = own_limb_indices(ct.level, len(P), pos)
                    q = np.array([ex.params.primes[k] for k in own], dtype=np.uint64).reshape(-1, 1)
                    parts = []
                    for k, p in enumerate(ct.parts):
                        acc = p[list(own)].copy()
                        for src, msg in got.items():
                            acc = (acc + msg[n][i_ct][k]) % q
                        parts.append(acc)
                    out.append(LimbCiphertext(parts, ct.level, ct.scale, own))
                self.put((producer, n, P), out)
                self.release(producer, n)
        elif c.kind == "gather":
            pform = ex.out_form(producer)
            form = P if pform != "whole" else pform
            names = needed(plan, c, producer, c.root)
            if d in P and any((producer, n, form) not in self.store for n in names):
                return False
            for n in names:
                per = [self.store[(producer, n, form)] if e == d else got[e][n] for e in P]
                self.put((producer, n, "whole"), [assemble([p[j] for p in per], ex.params.n, self.ctx.xp)
                                                  for j in range(len(per[0]))])
                if d in P:
                    self.release(producer, n)
        del self.recv_parts[cid]
        self.recv_got.pop(cid, None)
        self.done_comm.add(cid)
        return True

    def wait_inputs(self, i: int) -> None:
        todo = [cid for cid in self.incoming.get(i, ()) if cid not in self.done_comm]
        if todo:
            wire.wait_for(lambda: (self.progress(), all(cid in self.done_comm for cid in todo))[1])

    # ---- the run ---------------------------------------------------------------------------------
    def _mark(self, what: str) -> None:
        """What this rank is doing now, also in its status file (read by the launcher if the rank dies)."""
        self.current = what
        mark(self.status, what)

    def run(self, t0: float) -> None:
        plan, ex, d = self.plan, self.ex, self.d
        fault = injected_fault(d)
        self.send_keys()
        self.progress()
        for k, i in enumerate(plan.orders[d]):
            op = plan.ops[i]
            self._mark(f"op {i} ({op.kind})")
            if fault and fault[1] == k:
                inject(fault[0], i)
            self.wait_inputs(i)
            devs, mode = plan.assign[i], plan.mode[i]
            ev = self.limb_evs[devs] if mode == "limb" and len(devs) > 1 else self.ev
            if isinstance(ev, LimbEvaluator):
                ev.phase = op.phase
            start, cpu0 = time.perf_counter(), time.thread_time()
            if op.kind == "input":                     # the client's encryption of this device's tiles
                produced = {"out": wire.recv(self.cli, 0, INPUT + i)}
            elif mode == "partial":
                ins, present = ex._partial_inputs(self.store, op)
                produced = ex.execute(ev, op, ins, self.channel, present, first=d == devs[0])
            else:
                produced = ex.execute(ev, op, ex._inputs(self.store, op), self.channel)
            end, cpu1 = time.perf_counter(), time.thread_time()
            form = ex.out_form(i)
            for (src, name), cts in ex._outputs(op, produced).items():
                self.put((src, name, form), cts)
            self.rows.append((i, op.kind, op.phase, op.layer, d, start - t0, end - t0, 0))
            self.cpu.append(cpu1 - cpu0)
            for src, name in {(r[0], r[1]) for r in op.reads}:
                self.release(src, name)
            for name in self.key_drops.get(i, ()):
                drop_key(self.keys, name, ex.params)
            self.finished.add(i)
            self.send_after(i)
            self.progress()
        self._mark("sending outputs")
        wire.wait_for(lambda: (self.progress(), not self.recv_parts and not self.pending_send)[1])
        wire.wait([r for o in self.outgoing for r in o.requests])
        self.comm_rows = [(cid, k, ph, ly, s - t0, e - t0, b, p) for cid, k, ph, ly, s, e, b, p in self.comm_rows]

    def outputs(self) -> dict[int, list[Any]]:
        """The plan's outputs this device holds (whole, or its limb shards), for the client."""
        out = {}
        for i in self.plan.outputs:
            form = self.ex.out_form(i)
            if self.d in self.plan.assign[i] and (form != "whole" or self.plan.assign[i][0] == self.d):
                out[i] = self.store[(i, "output", form)]
        return out


#: fault injection for the tests: ``AEGIS_FAULT=raise:D:K`` or ``kill:D:K`` -- device D raises, or kills itself
#: with SIGKILL, at the K-th op of its order
FAULT_ENV = "AEGIS_FAULT"


def injected_fault(d: int) -> tuple[str, int] | None:
    """The fault ``AEGIS_FAULT`` asks of device ``d``: (what, position in its order), or None."""
    import os

    spec = os.environ.get(FAULT_ENV, "")
    parts = spec.split(":")
    if len(parts) == 3 and parts[0] in ("raise", "kill") and parts[1] == str(d):
        return parts[0], int(parts[2])
    return None


def inject(what: str, op: int) -> None:
    import os
    import signal

    if what == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"fault injected at op {op} ({FAULT_ENV})")


#: test hook: ``AEGIS_INSPECT=DIR`` -- every rank writes ``DIR/rank-R.json``, what its process holds (:func:`holdings`)
INSPECT_ENV = "AEGIS_INSPECT"


def holdings() -> dict[str, Any]:
    """What this process holds of the key owner's: instances of the client-only classes (the secret key, the
    Client, its key generator, decryptor and the executor's client wrapper) among every object the garbage
    collector tracks, and a digest of every (N,) row of every uint64/int64 array those objects hold (the
    secret's rows are looked for among them by the test)."""
    import gc
    import hashlib

    from fhe import Client
    from fhe.ckks.encryptor import Decryptor
    from fhe.rlwe.keys import KeyGenerator, SecretKey

    from .runner import _RefreshingClient

    forbidden = (SecretKey, Client, KeyGenerator, Decryptor, _RefreshingClient)
    found, digests, seen = set(), set(), set()
    for obj in gc.get_objects():
        if isinstance(obj, forbidden):
            found.add(type(obj).__name__)
        attrs = getattr(obj, "__dict__", None)
        cands = [obj] + (list(attrs.values()) if isinstance(attrs, dict) else []) + gc.get_referents(obj)
        for a in cands:
            if isinstance(a, np.ndarray) and a.dtype in (np.uint64, np.int64) and id(a) not in seen:
                seen.add(id(a))
                rows = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
                digests.update(hashlib.sha256(np.ascontiguousarray(r, dtype=np.int64).tobytes()).hexdigest()
                               for r in rows)
    return {"client_objects": sorted(found), "row_digests": sorted(digests)}


def write_holdings(rank: int, extra: dict[str, Any] | None = None) -> None:
    """``AEGIS_INSPECT`` set: this rank's :func:`holdings` (and ``extra``) to ``DIR/rank-R.json``."""
    import json
    import os

    where = os.environ.get(INSPECT_ENV)
    if where:
        with open(os.path.join(where, f"rank-{rank}.json"), "w") as f:
            json.dump(holdings() | (extra or {}), f)


def mark(status: Any, what: str) -> None:
    """Overwrite a rank's status file with its pid and ``what`` it is doing (no fsync: it must survive the
    process, not the machine)."""
    if status is not None:
        import os

        status.seek(0)
        status.write(f"{os.getpid()} {what}".ljust(100)[:100])
        status.flush()


def warm_up(ev: Evaluator, params: Any, steps: list[int]) -> None:
    """Compile and cache the kernels (numba) before the timed run, on a ciphertext of zeros, with keys this device
    holds (under sharded keys it may hold neither the relinearisation key nor a given rotation's)."""
    from fhe.rlwe.keys import galois_element

    held = [s for s in steps if galois_element(params, s) % (2 * params.n) in ev.keys.galois]
    keys = ([ev.keys.galois[galois_element(params, held[0]) % (2 * params.n)]] if held else []) + \
        ([ev.keys.relin] if ev.keys.relin is not None else [])
    lvl = min([params.max_level] + [int(k.bq[0].shape[0]) - 1 for k in keys])   # keys may be cut to a level
    z = Ciphertext([ev.ctx.xp.zeros((lvl + 1, params.n), dtype=ev.ctx.xp.uint64)] * 2, lvl, params.scale_at(lvl))
    r = ev.rotate(z, held[0]) if held else z
    ev.rescale(ev.mul_relin_rescale(z, r) if ev.keys.relin is not None else r)


def device_main(plan: Any, seed: int, backend: str, world: Any, status_path: str | None = None) -> None:
    """The life of device process ``world.rank - 1``: keys from the client, the op order, outputs and
    measurements back to the client.  A failure is reported to the client (rank, op, error), which ends
    the job."""
    cli, dev = world.Dup(), world.Dup()
    groups = group_communicators(plan, world)
    d = world.Get_rank() - 1
    status = open(status_path, "w") if status_path else None
    mark(status, "starting")
    rank = None
    try:
        ex = Executor(plan, backend=backend, seed=seed, with_input=False)
        keys = wire.recv(cli, 0, KEYS)
        rank = DeviceRank(ex, d, keys, dev, cli, groups, status)
        steps = sorted({r for o in plan.ops for r in o.rotations if r % plan.params.slots})
        rank._mark("warming up")
        warm_up(rank.ev, plan.params, steps)
        rank._mark("waiting at the start barrier")
        wire.wait([world.Ibarrier()])
        t0 = time.perf_counter()
        rank.run(t0)
        wire.wait(wire.send(cli, {"outputs": rank.outputs(), "rows": rank.rows, "cpu": rank.cpu,
                                  "comm_rows": rank.comm_rows, "counted": rank.counter.counted(),
                                  "peak": rank.peak, "t0": t0}, 0, OUTPUT).requests)
        write_holdings(world.Get_rank())
        mark(status, "done")
    except BaseException as exc:          # noqa: BLE001 -- reported to the client, which stops the job
        where = rank.current if rank is not None else "start"
        msg = {"device": d, "rank": world.Get_rank(), "where": where,
               "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        wire.wait(wire.send(cli, msg, 0, ERROR).requests)
        time.sleep(60)                    # the client aborts the job; never leave on our own
    finally:
        if status is not None:
            status.close()
