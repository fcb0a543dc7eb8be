"""Run a Plan with real CKKS: one worker thread per device, transfers through a communicator.

The **client** (:class:`fhe.Client`: key generation, encryption, decryption, the explicit
client-aided refresh) is separate from the **server**: every device gets an
:class:`fhe.Evaluator` built from the evaluation keys only, and the device workers reach the
key owner only through a :class:`ClientChannel` (a request queue served by the client's own
threads, :class:`ClientService`): nothing the server side holds leads to the secret key, the
:class:`fhe.Client` or its key generator (``tests/exec/test_key_isolation.py`` walks the graph).

Each device's worker runs its op order from the Plan; before an op it waits for the
transfers that bring its inputs; after an op the transfers whose producers are all done
are carried out by the communicator, which counts every byte per (source, destination,
phase).  Ops record start and end (monotonic clock; CUDA events on GPU are a later step),
devices track the bytes of the ciphertexts they hold (freed after the last local reader).

The same op implementations (:mod:`exec.ops`) also run on plaintext slot vectors
(:class:`exec.plain.PlainEvaluator`): the approximated model without encryption, the
reference the decrypted output must match.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from aegis.bootstrap_model import BootstrapModel
from aegis.comm import pair_bytes_by_phase
from aegis.packing import Packing
from aegis.plan import Plan
from aegis.prims import limb_bytes
from aegis.program import BOOT_KINDS, PHASES, Op, tile_groups
from aegis.result import Result
from fhe import CKKSContext, Client, Evaluator
from fhe.backend import get_backend
from fhe.circuits.bootstrapping import Bootstrapper
from fhe.params import check_sparse_secret

from .comm import Communicator, make_communicator
from .keys import device_keys, drop_key, get_key, key_arrays, put_key
from .limb import LimbCiphertext, LimbEvaluator, LimbGroup, assemble, shard
from .model import LayerWeights, pack_tile, random_weights, reference_forward, unpack_tiles
from .ops import OpKernels
from .plain import PlainEvaluator

ROLE_BY_SUFFIX = ((".rowpart", "rowpart"), (".exp", "exp"), (".centred", "centred"), (".var", "var"))


class ExecutionError(RuntimeError):
    """A plan the executor cannot run, or a run whose result is wrong."""


def _role(op: Op, name: str) -> str:
    if op.kind in ("attn_exp", "ln_stats"):
        base = name.split("[")[0]
        for suffix, role in ROLE_BY_SUFFIX:
            if base.endswith(suffix):
                return role
    return "out"




def key_owner(plan: Plan, ctx: Any) -> tuple["_RefreshingClient", list[int]]:
    """The client of a run (its keys: the plan's rotations, conjugation and encapsulation when it bootstraps, the
    plan's sparse-secret weight, seed-compressed when its key plan says so) and the rotation steps."""
    steps = sorted({r for o in plan.ops for r in o.rotations if r % plan.params.slots})
    boots = any(o.kind in BOOT_KINDS for o in plan.ops)
    return _RefreshingClient(Client(ctx, rotations=steps, conjugate=boots, encapsulation=boots,
                                    hamming_weight=plan.bootstrap.hamming_weight,
                                    seeded_keys=bool(plan.keys and plan.keys.policy.seeded))), steps


def check_executable(plan: Plan) -> None:
    """Refuse, before any work, what the executor cannot run yet (with what would work)."""
    split = [o for o in plan.ops if o.kind in BOOT_KINDS and plan.mode[o.id] == "limb" and len(plan.assign[o.id]) > 1]
    if split:
        raise ExecutionError(f"the plan splits {len(split)} bootstrapping ops across limbs ({plan.strategy}); the "
                             "executor bootstraps whole ciphertexts only -- use another strategy or "
                             "--bootstrap client_aided")
    if not plan.fits:
        over = [f"device {d}: {b / 2**30:.2f} GiB" for d, b in enumerate(plan.memory.peak) if b > plan.capacity_bytes]
        raise ExecutionError(f"the plan does not fit {plan.hardware} ({plan.capacity_bytes / 2**30:.2f} GiB per device; "
                             f"{', '.join(over)}); refusing to run it")
    if any(o.kind in BOOT_KINDS for o in plan.ops):     # the client makes encapsulation keys of this weight
        check_sparse_secret(plan.params, plan.bootstrap.hamming_weight)


def available_host_memory() -> int:
    """Bytes of host memory available to a new allocation now: ``MemAvailable`` of /proc/meminfo
    (Linux), else free physical pages x page size (``os.sysconf``)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_host_memory(plan: Plan, available: int | None = None) -> None:
    """Refuse a CPU run whose planned peak exceeds the host's available memory (bytes).

    The virtual devices of a CPU run share this host, so the need is the sum of the planned
    per-device peaks (keys, weights and live ciphertexts of each device; an upper bound: the
    devices' evaluators share one key bundle), whatever capacity the plan's profile claims.
    """
    need = sum(plan.memory.peak)
    avail = available_host_memory() if available is None else int(available)
    if need > avail:
        raise ExecutionError(f"the plan needs {_size(need)} of host memory (the planned peaks of its "
                             f"{plan.devices} virtual devices, which share this host) but {_size(avail)} is "
                             "available; use fewer devices, tokens or layers, --weights on_the_fly, or a larger "
                             "machine")


def _size(b: int) -> str:
    """Bytes as GiB (MiB below 1 GiB), two decimals."""
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.2f} MiB"


@dataclass
class RunOutput:
    """What a run produced: the measured Result, outputs and accuracy figures."""

    result: Result
    encrypted: np.ndarray
    plaintext: np.ndarray
    exact: np.ndarray

    @property
    def max_abs_error(self) -> float:
        return float(np.max(np.abs(self.encrypted - self.plaintext)))

    @property
    def max_abs_error_vs_exact(self) -> float:
        return float(np.max(np.abs(self.encrypted - self.exact)))

    @property
    def cosine_vs_plaintext(self) -> float:
        return _cosine(self.encrypted, self.plaintext)

    @property
    def cosine_vs_exact(self) -> float:
        return _cosine(self.encrypted, self.exact)


def _cosine(x: np.ndarray, y: np.ndarray) -> float:
    a, b = x.ravel(), y.ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


class Executor:
    """Runs one Plan on ``backend`` ("numpy": virtual devices on this CPU; "cupy": a GPU).

    ``weights`` (one :class:`LayerWeights` per layer, at least the plan's layers) and ``x``
    (the client's input, (seq_len, d_model)) default to seeded random ones.  When the sequence
    does not fill its last token block, the padded token rows repeat the real rows cyclically
    (so every activation stays in the ranges the approximations cover) and padded keys are
    masked out of the softmax; only the real rows are compared and returned.
    """

    def __init__(self, plan: Plan, backend: str = "numpy", seed: int = 0,
                 weights: list[LayerWeights] | None = None, x: np.ndarray | None = None,
                 with_input: bool = True, threads: int | None = None) -> None:
        """``with_input=False``: a server process's executor, which never holds the client's input.  ``threads``:
        threads each compiled CPU kernel call may use during the run (None: the process setting,
        $AEGIS_THREADS or 1); every virtual device runs in its own thread already."""
        check_executable(plan)
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ExecutionError(f"threads={threads!r}: need an integer >= 1")
        self.threads = threads
        if backend == "numpy" and with_input:
            check_host_memory(plan)
        self.plan = plan
        self.backend = backend
        wl = plan.workload
        self.params = plan.params
        self.pk = Packing.for_model(wl.model, self.params.slots, wl.seq_len, None if wl.attention == "diagonal" else plan.packing["token_block"], wl.attention == "diagonal")
        self.weights = random_weights(wl.model, seed) if weights is None else list(weights)[: wl.model.layers]
        if len(self.weights) < wl.model.layers:
            raise ExecutionError(f"{len(self.weights)} layers of weights for a {wl.model.layers}-layer plan")
        if x is None and with_input:
            x = np.random.default_rng(seed + 1).normal(0, 0.5, (wl.seq_len, wl.model.d_model))
        if with_input and x.shape != (wl.seq_len, wl.model.d_model):
            raise ExecutionError(f"input of shape {x.shape}; the plan needs ({wl.seq_len}, {wl.model.d_model})")
        rows = self.pk.token_blocks * self.pk.token_block
        self.x = x[np.arange(rows) % wl.seq_len] if with_input else None    # padded rows: cyclic copies
        self.kernels = OpKernels(wl.model, self.pk, self.weights, wl.approx)
        self.kernels.encoded_weights = wl.weights == "encoded"
        self.direct = wl.token_rotations == "direct"
        # which name each op's consumers read, and in which role it is produced
        self.names: dict[int, dict[str, str]] = defaultdict(dict)
        for o in plan.ops:
            for src, name, _, _ in o.reads:
                self.names[src][name] = _role(plan.ops[src], name)
        for i in plan.outputs:
            self.names[i].setdefault("output", "out")
        self.read_level = {(src, name): lvl for o in plan.ops for src, name, lvl, _ in o.reads}
        self._boots: dict[int, Bootstrapper] = {}         # one bootstrapper (DFT plaintexts) per device evaluator
        self._boot_lock = threading.Lock()

    # ---- data forms ----------------------------------------------------------------------------
    # A device may hold a tile whole ("whole"), as its limb shard of a limb-split group (the group's
    # device tuple), or as a partial sum of a row-split group (("partial", devices)).
    def out_form(self, i: int) -> Any:
        devs, mode = self.plan.assign[i], self.plan.mode[i]
        if mode == "limb" and len(devs) > 1:
            return devs
        if mode == "partial":
            return ("partial", devs)
        return "whole"

    def read_form(self, v: int, u: int) -> Any:
        """The form in which consumer v reads producer u's tiles."""
        plan = self.plan
        if plan.mode[v] == "limb" and len(plan.assign[v]) > 1:
            return plan.assign[v]
        if plan.mode[v] == "partial" and plan.mode[u] == "partial":
            return ("partial", plan.assign[u])
        return "whole"

    # ---- one op -----------------------------------------------------------------------------
    def _inputs(self, store: dict, op: Op) -> list[list[Any]]:
        return [store[(src, name, self.read_form(op.id, src))] for src, name, _, _ in op.reads]

    def execute(self, ev: Any, op: Op, ins: list[list[Any]], client: Any,
                partial: tuple[list[list[int]], list] | None = None, first: bool = True) -> dict[str, list[Any]]:
        """Run one op on ``ev``; ``partial`` gives, for a row-split op, the input tile ids present here
        (``first``: this device adds the bias, once per sum).  ``client`` is how the server reaches the
        key owner: a :class:`ClientChannel` (encrypted runs) or a ``_PlainClient`` (plaintext runs).
        An op the program trimmed (``args["trimmed_to_level"]``: its output brought down to the level its
        readers use, one product and rescale) is trimmed here (``lin_out`` trims before its bias)."""
        out = self._execute(ev, op, ins, client, partial, first)
        trim = op.args.get("trimmed_to_level")
        if trim is not None and op.kind != "lin_out":
            out["out"] = [ev.adjust_level(c, trim) if c.level > trim else c for c in out["out"]]
        return out

    def _execute(self, ev: Any, op: Op, ins: list[list[Any]], client: Any,
                 partial: tuple[list[list[int]], list] | None, first: bool) -> dict[str, list[Any]]:
        k, K = op.kind, self.kernels
        flat = [c for x in ins for c in x]
        limb = isinstance(ev, LimbEvaluator)
        if k == "input":
            cts = [client.encrypt_once((op.id, t), pack_tile(self.pk, self.x, op.block, t), op.level)
                   for t in op.args["tiles"]]
            return {"out": [shard(c, ev.G, ev.pos) for c in cts] if limb else cts}
        if k == "refresh_client":
            lvl = op.args["level_out"]
            if not limb:
                return {"out": [client.refresh(c, lvl) for c in flat]}
            # the shards go to the key owner and come back (client traffic, not device traffic)
            everyone = ev.group.exchange(ev.pos, flat)
            fresh = [client.refresh(assemble([sh[i] for sh in everyone], self.params.n, ev.xp), lvl)
                     for i in range(len(flat))] if ev.pos == 0 else None
            fresh = ev.group.exchange(ev.pos, fresh)[0]
            return {"out": [shard(c, ev.G, ev.pos) for c in fresh]}
        if k in BOOT_KINDS:
            return {"out": self._bootstrap_phase(ev, k, flat, op.args.get("stage", 0), op.args.get("stages", 1))}
        if k == "lin_baby":
            return K.lin_baby(ev, op, flat)
        if k == "lin_out":
            present, reads = partial if partial is not None else (None, op.reads)
            babies = [c for (src, name, _, _), x in zip(reads, ins) if ".baby" in name for c in x]
            x = [c for (src, name, _, _), x in zip(reads, ins) if ".baby" not in name for c in x]
            tiles_in = [t for ts in present for t in ts] if present is not None else None
            return K.lin_out(ev, op, x, babies, tiles_in=tiles_in, bias=first)
        if op.args.get("form") == "diagonal":
            return self._diagonal(ev, op, ins)
        if k == "attn_qk":
            return K.attn_qk(ev, op, ins[0], ins[1:], self.direct)
        if k == "attn_exp":
            return K.attn_exp(ev, op, ins[0], op.out_cts - len(ins[0]))
        if k == "attn_av":
            return K.attn_av(ev, op, ins[0], ins[1:], self.direct)
        if k == "attn_rowsum":
            return K.attn_rowsum(ev, op, ins)
        if k == "attn_norm":
            return K.attn_norm(ev, op, ins[0], ins[1:])
        if k == "ln_stats":
            half = len(ins) // 2
            if op.args["residual"]:
                return K.ln_stats(ev, op, [c for x in ins[:half] for c in x], [c for x in ins[half:] for c in x])
            return K.ln_stats(ev, op, flat, None)
        if k == "ln_inv":
            return K.ln_inv(ev, op, flat)
        if k == "ln_apply":
            return K.ln_apply(ev, op, ins[0], ins[1][0])
        if k == "residual":
            half = len(ins) // 2
            return K.residual(ev, op, [c for x in ins[:half] for c in x], [c for x in ins[half:] for c in x])
        if k == "gelu":
            return K.gelu(ev, op, flat)
        raise ExecutionError(f"op kind {k!r} cannot be executed")

    def _diagonal(self, ev: Any, op: Op, ins: list[list[Any]]) -> dict[str, list[Any]]:
        """The head-major diagonal attention ops (:meth:`OpKernels.attn_kbaby` and the ``attn_d*`` family)."""
        K, k = self.kernels, op.kind
        flat = [c for x in ins for c in x]
        if k == "attn_kbaby":
            return K.attn_kbaby(ev, op, flat)
        if k == "attn_qk":
            babies = [c for (_, name, _, _), x in zip(op.reads, ins) if ".kbaby" in name for c in x]
            q = [c for (_, name, _, _), x in zip(op.reads, ins) if ".kbaby" not in name for c in x]
            return K.attn_dqk(ev, op, q, babies)
        if k == "attn_exp":
            return K.attn_dexp(ev, op, flat)
        if k == "attn_av":
            return K.attn_dav(ev, op, ins[0], [c for x in ins[1:] for c in x])
        if k == "attn_rowsum":
            return K.attn_drowsum(ev, op, ins)
        if k == "attn_norm":
            return K.attn_dnorm(ev, op, ins[0][0], ins[1:])
        raise ExecutionError(f"op kind {k!r} has no diagonal form")

    @cached_property
    def _boot_levels(self) -> dict[tuple[str, int], int]:
        """Output level of each bootstrapping stage, by (phase, stage) (the plan's bootstrap model)."""
        out, seen = {}, {}
        for name, _, _, lo, _ in BootstrapModel(self.params, self.plan.bootstrap).parts:
            seen[name] = seen.get(name, -1) + 1
            out[(name, seen[name])] = lo
        return out

    def _bootstrap_phase(self, ev: Any, kind: str, cts: list[Any], stage: int = 0, stages: int = 1) -> list[Any]:
        """One bootstrapping stage on whole ciphertexts (fhe.circuits.bootstrapping): CoeffToSlot factor
        ``stage`` (the first also raises and sums, the last turns each ciphertext into a (real, imaginary)
        pair), EvalMod on each half, SlotToCoeff factor ``stage`` (the first joins each pair back)."""
        first, last = stage == 0, stage == stages - 1
        if isinstance(ev, PlainEvaluator):         # plaintext reference: the message, at the stage's level
            lout = self._boot_levels[(kind, stage)]
            if kind == "boot_cts":
                return [ev.encrypt(c.values, lout) for c in cts for _ in range(2 if last else 1)]
            if kind == "boot_evalmod" or not first:
                return [ev.encrypt(c.values, lout) for c in cts]
            return [ev.encrypt(cts[i].values, lout) for i in range(0, len(cts), 2)]
        with self._boot_lock:
            bs = self._boots.get(id(ev))
            if bs is None:
                bs = self._boots[id(ev)] = Bootstrapper(ev, self.plan.bootstrap.circuit())
        if kind == "boot_cts":
            if first:
                cts = [bs.subsum(bs.mod_raise(c)) for c in cts]
            return [h for c in cts for h in bs.coeff_to_slot_stage(c, stage)]
        if kind == "boot_evalmod":
            return [bs.eval_mod(c) for c in cts]
        if first:
            cts = [bs.join_halves(cts[i], cts[i + 1]) for i in range(0, len(cts), 2)]
        return [bs.slot_to_coeff_stage(c, stage) for c in cts]

    def _partial_inputs(self, store: dict, op: Op) -> tuple[list[list[Any]], tuple[list[list[int]], list]]:
        """The reads of a row-split op that this device holds, and the input tile ids of its own tiles."""
        ins, present, reads = [], [], []
        groups = tile_groups(op.args.get("in_tiles", 1)) if op.kind == "lin_out" else None
        for rd in op.reads:
            src, name = rd[0], rd[1]
            key = (src, name, self.read_form(op.id, src))
            if key not in store:
                continue
            ins.append(store[key])
            reads.append(rd)
            if ".baby" not in name:
                g = int(name.rsplit("[", 1)[1].rstrip("]").split(",")[-1])
                present.append(list(groups[g]) if groups else [g])
        return ins, (present, reads)

    def _outputs(self, op: Op, produced: dict[str, list[Any]]) -> dict[tuple[int, str], list[Any]]:
        out = {}
        for name, role in self.names[op.id].items():
            cts = produced[role]
            sl = op.args.get("slices", {}).get(name)
            if sl is not None:              # one key of several the op produces: only its tiles
                cts = cts[sl[0]: sl[0] + sl[1]]
            want = self.read_level.get((op.id, name))
            if want is not None and any(c.level != want for c in cts):
                raise ExecutionError(f"op {op.id} ({op.kind}) produced {name} at level {[c.level for c in cts]}, "
                                     f"the plan says {want}: program and executor disagree")
            out[(op.id, name)] = cts
        return out

    # ---- plaintext reference ----------------------------------------------------------------------
    def run_plaintext(self) -> np.ndarray:
        """The approximated program on plaintext slot vectors (one device, program order)."""
        ev = PlainEvaluator(self.params.slots)
        client = _PlainClient(ev)
        store: dict = {}
        for op in self.plan.ops:
            outs = self._outputs(op, self.execute(ev, op, [store[(s, n)] for s, n, _, _ in op.reads], client))
            store.update(outs)
        return self._collect(store, lambda c: c.values)

    def _collect(self, store: dict, decode: Any) -> np.ndarray:
        tiles = {}
        for i in self.plan.outputs:
            op = self.plan.ops[i]
            cts = store[(i, "output")]
            tile_ids = self._output_tiles(op, len(cts))
            for t, c in zip(tile_ids, cts):
                tiles[(op.block, t)] = decode(c)
        m = self.plan.workload.model
        return unpack_tiles(self.pk, tiles, self.plan.workload.seq_len, m.d_model)

    def _output_tiles(self, op: Op, n: int) -> list[int]:
        if op.kind == "lin_out":
            return list(op.args["out_tiles"])
        return list(range(n))

    def exact(self) -> np.ndarray:
        """The exact model on the real tokens (padded keys masked, as the encrypted run does)."""
        n = self.plan.workload.seq_len
        return reference_forward(self.plan.workload.model, self.weights, self.x, valid=n)[:n]

    # ---- the encrypted, multi-device run ----------------------------------------------------------
    def run(self, communicator: Communicator | None = None, progress: bool = False,
            on_server: Callable[["ServerSide"], None] | None = None) -> RunOutput:
        """The encrypted run.  ``on_server`` (tests) is called with the server side's objects just before the
        device workers start (nothing is kept after the run)."""
        from fhe.ring.threads import get_threads, using_threads

        with using_threads(self.threads or get_threads()):
            return self._run(communicator, progress, on_server)

    def _run(self, communicator: Communicator | None, progress: bool,
             on_server: Callable[["ServerSide"], None] | None) -> RunOutput:
        plan = self.plan
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=sum(len(o) for o in plan.orders), unit="op", desc="execute")
        bar_lock = threading.Lock()
        G = plan.devices
        ctx = CKKSContext(self.params, get_backend(self.backend))
        # the key owner (client role): the only object here that reaches the secret key
        client, steps = key_owner(plan, ctx)
        kplan = plan.keys
        keys = client.evaluation_keys                      # the server side gets these only
        dev_keys = device_keys(keys, kplan, G)              # sharded: each device starts with the keys it owns
        evs = [Evaluator(ctx, dev_keys[d]) for d in range(G)]
        warm = client.encrypt(np.zeros(self.params.slots), level=self.params.max_level)   # JIT and caches, untimed
        wev = Evaluator(ctx, keys)
        wev.rescale(wev.mul_relin_rescale(warm, wev.rotate(warm, steps[0]) if steps else warm))
        # fetched key copies: dropped on a device after the last op of the run they serve
        key_drops: dict[tuple[int, int], list[str]] = defaultdict(list)
        key_comms = [c for c in plan.comm if "key" in c.args]
        for c in key_comms:
            key_drops[(c.participants[1], c.args["until"])].append(c.args["key"])
        comm = communicator or make_communicator(self.backend, G)
        stores: list[dict] = [dict() for _ in range(G)]
        held = [0] * G
        peak = [0] * G
        mem_lock = threading.Lock()
        # transfers: consumers' tiles per destination, and when each may start
        incoming: dict[int, list[int]] = defaultdict(list)
        waiting = {c.id: len(set(c.after)) for c in plan.comm}
        by_after: dict[int, list[int]] = defaultdict(list)
        for c in plan.comm:
            if c.internal:                     # limb exchanges happen inside their op (exec.limb)
                continue
            for a in set(c.after):
                by_after[a].append(c.id)
            for b in c.before:
                incoming[b].append(c.id)
        comm_done = {c.id: threading.Event() for c in plan.comm if not c.internal}
        comm_rows: list[tuple] = []
        instances = {i: len(a) for i, a in enumerate(plan.assign)}
        state_lock = threading.Lock()
        rows: list[tuple] = []
        errors: list[BaseException] = []
        t0 = time.perf_counter()

        def account(d: int, delta: int) -> None:
            with mem_lock:
                held[d] += delta
                peak[d] = max(peak[d], held[d])

        def needed(c: Any, producer: int, dst: int | None = None) -> list[str]:
            return sorted({n for b in c.before if dst is None or dst in plan.assign[b]
                           for sp, n, _, _ in plan.ops[b].reads if sp == producer})

        # A tile on a device is freed when every claim on it is released: one per local op that reads
        # it and one per transfer that reads it there.  All store changes happen under one lock.
        outputs = set(plan.outputs)
        claims: dict[tuple[int, int, str], int] = defaultdict(int)
        for d in range(G):
            for i in plan.orders[d]:
                for src, name in {(r[0], r[1]) for r in plan.ops[i].reads}:
                    claims[(d, src, name)] += 1
        transfer_reads: dict[int, list[tuple[int, int, str]]] = {}
        for c in plan.comm:
            if c.internal:
                continue
            if "key" in c.args:
                transfer_reads[c.id] = []
                continue
            producer = c.args.get("producer", c.after[0])
            if c.kind in ("send", "scatter"):
                reads = [(c.root, producer, n) for n in needed(c, producer)]
            elif c.kind == "reduce_scatter":
                reads = [(d, producer, n) for n in needed(c, producer) for d in c.participants]
            elif c.kind == "shard_send":
                reads = [(d, producer, n) for n in needed(c, producer)
                         for d in c.participants[: len(c.participants) // 2]]
            else:
                reads = [(d, producer, n) for n in needed(c, producer, c.root) for d in c.participants]
            transfer_reads[c.id] = reads
            for key in reads:
                claims[key] += 1
        forms: dict[tuple[int, int, str], set] = defaultdict(set)
        store_lock = threading.Lock()
        abort = threading.Event()

        def put(d: int, key: tuple, cts: list[Any]) -> None:
            with store_lock:
                stores[d][key] = cts
                forms[(d, key[0], key[1])].add(key[2])
            account(d, sum(x.nbytes for x in cts))

        def release(d: int, src: int, name: str) -> None:
            with store_lock:
                claims[(d, src, name)] -= 1
                if claims[(d, src, name)] > 0 or src in outputs:
                    return
                freed = [stores[d].pop((src, name, f), []) for f in forms.pop((d, src, name), ())]
            account(d, -sum(c.nbytes for cts in freed for c in cts))

        def do_transfer(cid: int) -> None:
            c = plan.comm[cid]
            if "key" in c.args:                        # an evaluation key from its owner to a device that uses it
                start = time.perf_counter() - t0
                src, dst = c.root, c.participants[1]
                name = c.args["key"]
                put_key(dev_keys[dst], name, comm.send_arrays(key_arrays(get_key(dev_keys[src], name), self.params,
                                                                         c.args["level"]), src, dst, c.phase),
                        self.params, c.args["level"], get_key(dev_keys[src], name))
                comm_rows.append((cid, c.kind, c.phase, c.layer, start, time.perf_counter() - t0, c.total_bytes,
                                  f"{src}-{dst}"))
                comm_done[cid].set()
                return
            producer = c.args.get("producer", c.after[0])
            pform = self.out_form(producer)
            start = time.perf_counter() - t0
            P = c.participants
            if c.kind == "send":
                for dst in (d for d in P if d != c.root):
                    for n in needed(c, producer, dst):
                        if (producer, n, "whole") not in stores[dst]:
                            put(dst, (producer, n, "whole"),
                                comm.send(stores[c.root][(producer, n, "whole")], c.root, dst, c.phase))
            elif c.kind == "scatter":                  # whole tile -> each participant's limbs
                for n in needed(c, producer):
                    whole = stores[c.root][(producer, n, "whole")]
                    for pos, dst in enumerate(P):
                        shards = [shard(ct, len(P), pos) for ct in whole]
                        if dst != c.root:
                            shards = [comm.send_limbs(sh, c.root, dst, c.phase) for sh in shards]
                        put(dst, (producer, n, P), shards)
            elif c.kind == "reduce_scatter":           # partial sums -> each participant's limbs, summed
                for n in needed(c, producer):
                    parts = [stores[d][(producer, n, pform)] for d in P]
                    for i_ct in range(len(parts[0])):
                        shards = comm.reduce_scatter_cts([p[i_ct] for p in parts], list(P), self.params.primes,
                                                         c.phase)
                        for pos, dst in enumerate(P):
                            key = (producer, n, P)
                            with store_lock:
                                stores[dst].setdefault(key, []).append(shards[pos])
                                forms[(dst, producer, n)].add(P)
                            account(dst, shards[pos].nbytes)
            elif c.kind == "shard_send":               # limb shards -> the same limbs on another group
                h = len(P) // 2
                src_g, dst_g = tuple(P[:h]), tuple(P[h:])
                for n in needed(c, producer):
                    for k in range(h):
                        shards = stores[src_g[k]][(producer, n, src_g)]
                        put(dst_g[k], (producer, n, dst_g),
                            [comm.send_limbs(sh, src_g[k], dst_g[k], c.phase) for sh in shards])
            elif c.kind == "gather":                   # limb shards -> the whole tile on the root
                for n in needed(c, producer, c.root):
                    key = (producer, n, P if pform != "whole" else pform)
                    per_dev = [stores[d][key] for d in P]
                    whole = []
                    for i_ct in range(len(per_dev[0])):
                        shards = [comm.send_limbs(per_dev[pos][i_ct], d, c.root, c.phase) if d != c.root
                                  else per_dev[pos][i_ct] for pos, d in enumerate(P)]
                        whole.append(assemble(shards, self.params.n, ctx.xp))
                    put(c.root, (producer, n, "whole"), whole)
            else:
                raise ExecutionError(f"the executor cannot carry out {c.kind!r} transfers yet")
            comm_rows.append((cid, c.kind, c.phase, c.layer, start, time.perf_counter() - t0, c.total_bytes,
                              "-".join(map(str, c.participants))))
            for key in transfer_reads[cid]:
                release(*key)
            comm_done[cid].set()

        def finished(i: int) -> None:
            ready = []
            with state_lock:
                instances[i] -= 1
                if instances[i]:
                    return
                for cid in by_after.get(i, ()):
                    waiting[cid] -= 1
                    if waiting[cid] == 0:
                        ready.append(cid)
            for cid in ready:
                do_transfer(cid)

        groups: dict[tuple[int, ...], LimbGroup] = {}
        limb_evs: dict[tuple[int, tuple[int, ...]], LimbEvaluator] = {}
        for i, devs in enumerate(plan.assign):
            if plan.mode[i] == "limb" and len(devs) > 1 and devs not in groups:
                groups[devs] = LimbGroup(devs, comm)
                for pos, dd in enumerate(devs):
                    limb_evs[(dd, devs)] = LimbEvaluator(ctx, keys, groups[devs], pos)

        def worker(d: int) -> None:
            stream = None
            if self.backend == "cupy":           # each logical device issues its kernels on its own stream
                import cupy

                stream = cupy.cuda.Stream(non_blocking=True)
                stream.use()
            try:
                store = stores[d]
                for i in plan.orders[d]:
                    if abort.is_set():
                        return
                    op = plan.ops[i]
                    for cid in incoming.get(i, ()):
                        if not comm_done[cid].wait(timeout=3600):
                            raise ExecutionError(f"device {d}: op {i} waited an hour for transfer {cid}")
                    devs, mode = plan.assign[i], plan.mode[i]
                    ev = limb_evs[(d, devs)] if mode == "limb" and len(devs) > 1 else evs[d]
                    if isinstance(ev, LimbEvaluator):
                        ev.phase = op.phase
                    start = time.perf_counter() - t0
                    if mode == "partial":
                        ins, present = self._partial_inputs(store, op)
                        produced = self.execute(ev, op, ins, channel, present, first=d == devs[0])
                    else:
                        produced = self.execute(ev, op, self._inputs(store, op), channel)
                    if stream is not None:        # the op's kernels have finished before its end is read
                        stream.synchronize()
                    form = self.out_form(i)
                    for (src, name), cts in self._outputs(op, produced).items():
                        put(d, (src, name, form), cts)
                    rows.append((i, op.kind, op.phase, op.layer, d, start, time.perf_counter() - t0, 0))
                    if bar is not None:
                        with bar_lock:
                            bar.update(1)
                    for src, name in {(r[0], r[1]) for r in op.reads}:
                        release(d, src, name)
                    for name in key_drops.get((d, i), ()):
                        drop_key(dev_keys[d], name, self.params)
                    finished(i)
            except BaseException as exc:      # surface the first failure; stop and unblock the others
                errors.append(exc)
                abort.set()
                for e in comm_done.values():
                    e.set()
                for g in groups.values():
                    g.abort()

        service = ClientService(client, threads=G)      # the key owner answers on its own threads
        channel = service.channel                       # ... and the workers hold only this queue
        threads = [threading.Thread(target=worker, args=(d,), name=f"device-{d}") for d in range(G)]
        try:
            if on_server is not None:
                on_server(ServerSide(worker, evs, list(limb_evs.values()), channel, comm))
            for c in key_comms:                    # keys fetched before any op has run (the buffers' first fill)
                if not c.after:
                    do_transfer(c.id)
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            service.close()
        if bar is not None:
            bar.close()
        if errors:
            raise errors[0]
        latency = time.perf_counter() - t0

        store_all: dict = {}
        for i in plan.outputs:
            form = self.out_form(i)
            if form == "whole":
                d = plan.assign[i][0]
                store_all[(i, "output")] = stores[d][(i, "output", "whole")]
            else:                                  # the key owner assembles the shards it receives
                per = [stores[d][(i, "output", form)] for d in plan.assign[i]]
                store_all[(i, "output")] = [assemble([p[j] for p in per], self.params.n, ctx.xp)
                                            for j in range(len(per[0]))]
        encrypted = self._collect(store_all, lambda c: np.real(client.decrypt(c)))
        plaintext = self.run_plaintext()
        exact = self.exact()
        lb = limb_bytes(self.params)
        measured = comm.counted()
        by_phase = {ph: 0 for ph in PHASES}
        for (_, _, ph), b in measured.items():
            by_phase[ph] = by_phase.get(ph, 0) + b
        predicted_pairs = pair_bytes_by_phase(plan.comm, lb)
        busy = [0.0] * G
        for r in rows:
            busy[r[4]] += r[6] - r[5]
        summary = {
            "latency_s": latency,
            "comm_bytes": {"total": sum(by_phase.values()), "by_phase": by_phase},
            "peak_memory_bytes": peak, "utilisation": [b / latency if latency else 0.0 for b in busy],
            "fits": plan.fits, "comm_bytes_match": dict(measured) == dict(predicted_pairs),
            "client_roundtrip_bytes": client.roundtrip_bytes,
        }
        ident = {"model": plan.workload.model.name, "seq_len": plan.workload.seq_len, "strategy": plan.strategy,
                 "devices": G, "backend": self.backend, "params": self.params.name}
        res = Result("exec", ident, rows, comm_rows, dict(measured), summary)
        return RunOutput(res, encrypted, plaintext, exact)


def promised_precision(params: Any, server_bootstrap: bool = False) -> float:
    """Largest max-abs error (vs the plaintext run of the same program) a run may show.

    Without server-side bootstrapping: 2^-(scale_bits - 24).  With a 2^40 scale the arithmetic
    keeps about 2^-23 absolute precision through the tiny model's circuits on this CPU (per-op
    figures in the executor's tests); the bound leaves a margin of about 2^7.

    With CKKS bootstrapping: 2^-8.  EvalMod takes sin(2 pi delta) / (2 pi) for delta, which is
    off by (2 pi delta)^2 / 6 relative; delta = message x scale / q_0 grows with the message, so
    hidden states of a few units bootstrapped as they are lose up to about 2^-9 (measured: 2.3e-3
    for a constant vector of 7.2; 2^-25 for vectors in [-1, 1]).  The bound assumes bootstrapped
    messages of a few units: the softmax row sums, which grow with the token count, enter
    bootstrapping divided by a power of two (``rowsum_scale`` of the lowering).  Bootstrapped
    unscaled, 64 tokens' row sums (about 65) lost 2.6 % and the tiny model's output was off by
    7.7e-3; scaled, the same run (token on 2, toy-n10-boot) is off by 1.3e-5.
    """
    if server_bootstrap:
        return 2.0 ** -8
    return 2.0 ** -(params.scale_bits - 24)


def write_run(out: RunOutput, plan: Plan, predicted: Result | None, directory: str,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``DIR/result.json`` (measured and predicted summaries, accuracy, and ``extra``) and the op tables and
    traces beside it."""
    import json
    from pathlib import Path

    from aegis.safeio import write_text

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    m = out.result.summary
    keys = ("latency_s", "comm_bytes", "peak_memory_bytes")
    doc = {
        "plan": plan.summary(),
        "measured": {k: m[k] for k in keys} | {"utilisation": m["utilisation"],
                                               "client_roundtrip_bytes": m["client_roundtrip_bytes"]}
                    | {k: m[k] for k in ("launcher", "cpu_latency_s", "cpu_busy_s", "start_skew_s") if k in m},
        "predicted": {k: predicted.summary[k] for k in keys} if predicted else None,
        "comm_bytes_match": m["comm_bytes_match"],
        "max_abs_error": out.max_abs_error,
        "max_abs_error_vs_exact": out.max_abs_error_vs_exact,
        "cosine_vs_plaintext": out.cosine_vs_plaintext,
        "cosine_vs_exact": out.cosine_vs_exact,
        "precision_bound": promised_precision(plan.params, any(o.kind in BOOT_KINDS for o in plan.ops)),
    } | (extra or {})
    out.result.write_op_table(d / "ops_measured.csv")
    out.result.write_trace(d / "trace_measured.json")
    if predicted:
        predicted.write_op_table(d / "ops_predicted.csv")
        predicted.write_trace(d / "trace_predicted.json")
    write_text(d / "result.json", json.dumps(doc, indent=2))      # last and atomic: it marks the run complete
    return doc


class _PlainClient:
    """The client for a plaintext run: 'encrypts' slot vectors, 'refreshes' to the level asked."""

    def __init__(self, ev: PlainEvaluator) -> None:
        self.ev = ev

    def encrypt(self, values: Any, level: int) -> Any:
        return self.ev.encrypt(values, level)

    def encrypt_once(self, key: Any, values: Any, level: int) -> Any:
        return self.ev.encrypt(values, level)

    def refresh(self, ct: Any, level: int) -> Any:
        return self.ev.encrypt(ct.values, level)


@dataclass
class ServerSide:
    """What the server side of a run holds (given to ``Executor.run``'s ``on_server`` hook): the device
    worker (thread target, with everything its closure reaches), the per-device evaluators, the limb
    evaluators, the channel to the key owner and the communicator."""

    worker: Callable[[int], None]
    evaluators: list[Any]
    limb_evaluators: list[Any]
    channel: "ClientChannel"
    communicator: Any
    roots: list[Any] = field(init=False)

    def __post_init__(self) -> None:
        self.roots = [self.worker, *self.evaluators, *self.limb_evaluators, self.channel, self.communicator]


class ClientChannel:
    """The server's only way to the key owner: requests (ciphertexts, input tiles to encrypt) go into a
    queue that the key owner's :class:`ClientService` threads serve; answers come back in a Future.
    Holds no key and no reference to the client."""

    def __init__(self) -> None:
        self._requests: queue.Queue = queue.Queue()

    def _ask(self, what: str, *args: Any) -> Any:
        fut: Future = Future()
        self._requests.put((what, args, fut))
        return fut.result()

    def encrypt_once(self, key: Any, values: Any, level: int) -> Any:
        """The client's encryption of input tile ``key`` at ``level`` (once per tile, whoever asks)."""
        return self._ask("encrypt_once", key, values, level)

    def refresh(self, ct: Any, level: int) -> Any:
        """A client-aided refresh: ``ct`` goes to the key owner, a fresh encryption at ``level`` comes back."""
        return self._ask("refresh", ct, level)


class ClientService:
    """The key owner's side of the protocol: ``threads`` threads answer the requests of :attr:`channel`
    with the client (encrypt an input tile, refresh a ciphertext); :meth:`close` stops them."""

    SERVED = ("encrypt_once", "refresh")

    def __init__(self, client: "_RefreshingClient", threads: int = 1) -> None:
        self._client = client
        self.channel = ClientChannel()
        self._threads = [threading.Thread(target=self._serve, name=f"client-{i}", daemon=True)
                         for i in range(max(1, threads))]
        for t in self._threads:
            t.start()

    def _serve(self) -> None:
        requests = self.channel._requests
        while True:
            req = requests.get()
            if req is None:
                return
            what, args, fut = req
            try:
                if what not in self.SERVED:
                    raise ExecutionError(f"the client does not answer {what!r} requests")
                out = getattr(self._client, what)(*args)
                self._client.synchronize()           # GPU: done before a worker's own stream reads it
                fut.set_result(out)
            except BaseException as exc:         # the asking worker raises it
                fut.set_exception(exc)

    def close(self) -> None:
        for _ in self._threads:
            self.channel._requests.put(None)
        for t in self._threads:
            t.join()


class _RefreshingClient:
    """The key owner: encrypts inputs, decrypts outputs, and answers explicit client-aided refreshes.

    A refresh is a protocol round trip (the server sends a ciphertext, the client decrypts it
    and sends back a fresh encryption at the level asked); its bytes are counted separately from
    device-to-device communication.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self.evaluation_keys = client.evaluation_keys
        self.roundtrip_bytes = 0
        self._lock = threading.Lock()
        self._uploads: dict[Any, Any] = {}

    def encrypt(self, values: Any, level: int) -> Any:
        return self._client.encrypt(values, level=level)

    def encrypt_once(self, key: Any, values: Any, level: int) -> Any:
        """One encryption per input tile, however many devices ask for (their limbs of) it."""
        with self._lock:
            if key not in self._uploads:
                self._uploads[key] = self._client.encrypt(values, level=level)
            return self._uploads[key]

    def decrypt(self, ct: Any) -> Any:
        return self._client.decrypt(ct)

    def synchronize(self) -> None:
        """Wait for the client's device work on this thread's stream (CuPy; nothing to wait for on NumPy)."""
        if self._client.ctx.backend.name == "cupy":
            import cupy

            cupy.cuda.get_current_stream().synchronize()

    def refresh(self, ct: Any, level: int) -> Any:
        fresh = self._client.encrypt(np.real(self._client.decrypt(ct)), level=level)
        with self._lock:
            self.roundtrip_bytes += ct.nbytes + fresh.nbytes
        return fresh
