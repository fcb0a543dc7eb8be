"""`aegis bench fhe`: per-operation medians of the CKKS library, with precision and optional peer ratios.

Each op runs once to warm up, then ``repeats`` times; the median wall time is
reported (device-synchronised on CuPy).  Precision is -log2(max abs error)
of the decrypted result against the plaintext computation, for inputs
uniform in [-1, 1].
"""
from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fhe import CKKSContext, Client, Evaluator, get_backend, preset

from fhe.ring.threads import get_threads, using_threads

from ..safeio import write_text

from .peers import OPS  # one list of op names for ours and the peers'

SECURE_PRESET_BY_LOG_N = {13: "n13", 14: "n14", 15: "n15", 16: "n16"}


@dataclass
class BenchRecord:
    op: str
    n: int
    limbs: int
    backend: str
    median_s: float
    precision_bits: float | None
    params: str
    peer: str | None = None
    peer_median_s: float | None = None
    ratio: float | None = None
    levels_after: int | None = None
    peer_precision_bits: float | None = None
    notes: str | None = None


def _precision(got: np.ndarray, want: np.ndarray) -> float:
    err = float(np.max(np.abs(np.asarray(got) - np.asarray(want))))
    return round(-math.log2(err), 2) if err > 0 else 53.0


def _median_time(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_preset(name: str, backend: str = "numpy", repeats: int = 5) -> list[BenchRecord]:
    """Time every op at the top level of preset ``name`` on ``backend``."""
    params = preset(name)
    ctx = CKKSContext(params, get_backend(backend))
    client = Client(ctx, rotations=[1])
    ev = Evaluator(ctx, client.evaluation_keys)  # the server side sees evaluation keys only
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, params.slots)
    y = rng.uniform(-1, 1, params.slots)
    cx, cy = client.encrypt(x), client.encrypt(y)
    py = client.encoder.encode(y, level=cx.level)
    sync = ctx.backend.synchronize
    idx = params.q_indices(cx.level)
    runs: dict[str, tuple[Callable[[], Any], Callable[[Any], float | None]]] = {
        "encrypt": (lambda: client.encrypt(x), lambda ct: _precision(client.decrypt(ct).real, x)),
        "add": (lambda: ev.add(cx, cy), lambda ct: _precision(client.decrypt(ct).real, x + y)),
        "pmul": (lambda: ev.mul_plain(cx, py), lambda ct: _precision(client.decrypt(ct).real, x * y)),
        "hmul": (lambda: ev.mul_relin_rescale(cx, cy), lambda ct: _precision(client.decrypt(ct).real, x * y)),
        "rotate": (lambda: ev.rotate(cx, 1), lambda ct: _precision(client.decrypt(ct).real, np.roll(x, -1))),
        "ntt": (lambda: [ctx.ring.ntt(p, idx) for p in cx.parts], lambda _: None),
        "decrypt": (lambda: client.decrypt(cx), lambda z: _precision(np.asarray(z).real, x)),
    }
    pre_rescale = ev.mul_plain(cx, py)
    runs["rescale"] = (lambda: ev.rescale(pre_rescale), lambda ct: _precision(client.decrypt(ct).real, x * y))
    out = []
    for op in OPS:
        fn, check = runs[op]
        med = _median_time(fn, repeats, sync)
        out.append(BenchRecord(op=op, n=params.n, limbs=params.q_count, backend=backend, median_s=med,
                               precision_bits=check(fn()), params=params.describe()))
    return out


def precision_chain(name: str, backend: str = "numpy", depth: int = 8) -> BenchRecord:
    """Square-and-multiply chain of ``depth`` ciphertext multiplications; precision of the result.

    Computes x_{k+1} = x_k * y_k (relinearised, rescaled) with fresh y_k, inputs uniform in [-1, 1],
    and reports the total time of the chain and -log2 of the max abs error against NumPy.
    """
    params = preset(name)
    ctx = CKKSContext(params, get_backend(backend))
    client = Client(ctx)
    ev = Evaluator(ctx, client.evaluation_keys)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, params.slots)
    ct, ref = client.encrypt(x), x.copy()
    t0 = time.perf_counter()
    for _ in range(depth):
        y = rng.uniform(-1, 1, params.slots)
        ct = ev.mul_relin_rescale(ct, client.encrypt(y, level=ct.level))
        ref = ref * y
    ctx.backend.synchronize()
    elapsed = time.perf_counter() - t0
    return BenchRecord(op=f"hmul_chain{depth}", n=params.n, limbs=params.q_count, backend=backend,
                       median_s=elapsed, precision_bits=_precision(client.decrypt(ct).real, ref),
                       params=params.describe())


def bench_bootstrap(name: str = "n16-boot", backend: str = "numpy", repeats: int = 1,
                    vectors: int = 3, echo: Callable[[str], None] = print, insecure: bool = False) -> BenchRecord:
    """One bootstrap of ``name`` (``op: bootstrap``): median seconds, precision, levels left.

    Precision is -log2 of the max abs error over ``vectors`` random vectors uniform in [-1, 1]
    (every slot), each encrypted one level up and brought to level 0 by a rescale (a ciphertext
    that has been computed on, not a fresh level-0 encryption, whose own noise would dominate).
    Key generation, key bytes and plaintext precomputation are reported in ``notes``.
    ``insecure`` allows a ``toy-*`` preset (the caller's explicit choice: ``--insecure`` on the CLI).
    """
    from fhe.circuits.bootstrapping import BootstrapParameters, Bootstrapper

    params = preset(name, allow_insecure=insecure)
    ctx = CKKSContext(params, get_backend(backend))
    bp = BootstrapParameters()
    t0 = time.perf_counter()
    client = Client(ctx)
    keys = client.keygen.evaluation_keys(**bp.key_request(params))
    keygen_s = time.perf_counter() - t0
    echo(f"bootstrap keys: {keys.nbytes / 2**30:.2f} GiB in {keygen_s:.0f} s")
    ev = Evaluator(ctx, keys)                   # the server holds evaluation keys only
    t0 = time.perf_counter()
    boot = Bootstrapper(ev, bp)
    prep_s = time.perf_counter() - t0
    rng = np.random.default_rng(2)
    times, errs, out = [], [], None
    phases: dict[str, list[float]] = {}
    for k in range(max(vectors, repeats)):
        x = rng.uniform(-1, 1, params.slots)
        ct = client.encrypt(x, level=1)
        ctx.backend.synchronize()
        t0 = time.perf_counter()
        out = boot.bootstrap(ct)
        ctx.backend.synchronize()
        times.append(time.perf_counter() - t0)
        errs.append(float(np.max(np.abs(client.decrypt(out) - x))))
        for ph, sec in boot.phase_seconds.items():
            phases.setdefault(ph, []).append(sec)
        echo(f"bootstrap {k + 1}: {times[-1]:.1f} s, {-math.log2(errs[-1]):.2f} bits ("
             + ", ".join(f"{ph} {sec:.1f} s" for ph, sec in boot.phase_seconds.items()) + ")")
    phase_note = ", ".join(f"{ph} {statistics.median(v):.2f} s" for ph, v in phases.items())
    return BenchRecord(op="bootstrap", n=params.n, limbs=params.q_count, backend=backend,
                       median_s=statistics.median(times), precision_bits=round(-math.log2(max(errs)), 2),
                       params=params.describe(), levels_after=out.level,
                       notes=(f"keys {keys.nbytes / 2**30:.2f} GiB ({len(bp.rotations(params))} rotation keys, "
                              f"conjugation, relinearisation, encapsulation) generated in {keygen_s:.0f} s; "
                              f"DFT plaintexts {boot.plaintext_bytes / 2**30:.2f} GiB encoded in {prep_s:.0f} s; "
                              f"depth {bp.depth} (CoeffToSlot {bp.cts_levels}, EvalMod {bp.evalmod.depth}, "
                              f"SlotToCoeff {bp.stc_levels}); {max(vectors, repeats)} vectors; median time per phase: "
                              f"{phase_note}; {get_threads()} kernel thread(s)"))


def run_bootstrap(name: str = "n16-boot", backend: str = "numpy", repeats: int = 1, vs: str | None = None,
                  json_path: str | Path | None = None, echo: Callable[[str], None] = print,
                  insecure: bool = False, threads: int = 1) -> list[BenchRecord]:
    """``aegis bench fhe --bootstrap``: our bootstrap, and a peer's on its own parameters in the same run
    (``insecure``: allow a ``toy-*`` preset, from ``--insecure``; ``threads``: for our kernels and the peer)."""
    with using_threads(threads):
        rec = bench_bootstrap(name, backend, repeats, echo=echo, insecure=insecure)
    echo(f"ours : {rec.params}")
    if vs:
        from .peers import PeerUnavailable, run_peer_bootstrap

        try:
            desc, peer = run_peer_bootstrap(vs, repeats=repeats, threads=threads)
            echo(f"peer : {desc}")
            rec.peer, rec.peer_median_s = vs, peer["median_s"]
            rec.peer_precision_bits = peer["precision_bits"]
            rec.ratio = rec.median_s / peer["median_s"]
            echo(f"peer bootstrap: {peer['median_s']:.1f} s, {peer['precision_bits']:.2f} bits, "
                 f"{peer['levels_after']} levels after")
        except PeerUnavailable as exc:
            echo(f"peer {vs} skipped: {exc}")
    echo(format_table([rec]))
    echo(f"levels after bootstrapping: {rec.levels_after}; {rec.notes}")
    if json_path:
        write_text(json_path, json.dumps([asdict(rec)], indent=1))
        echo(f"wrote {json_path}")
    return [rec]


def run(log_ns: Sequence[int], backend: str = "numpy", repeats: int = 5, vs: str | None = None,
        json_path: str | Path | None = None, echo: Callable[[str], None] = print, threads: int = 1) -> list[BenchRecord]:
    """Bench each N = 2**log_n on its secure preset; optionally against a peer; print a table.

    ``threads``: threads for our compiled CPU kernels and for the peer (1 by default, so ratios compare one
    core against one core)."""
    records: list[BenchRecord] = []
    for log_n in log_ns:
        if log_n not in SECURE_PRESET_BY_LOG_N:
            raise ValueError(f"no secure preset for N=2^{log_n}; choose from {sorted(SECURE_PRESET_BY_LOG_N)}")
        name = SECURE_PRESET_BY_LOG_N[log_n]
        with using_threads(threads):
            recs = bench_preset(name, backend, repeats)
        echo(f"ours : {recs[0].params}; {threads} kernel thread(s)")
        if vs:
            from .peers import PeerUnavailable, run_peer

            p = preset(name)
            try:
                setup, peer_times = run_peer(vs, p.n, p.q_bits, p.p_bits, p.scale_bits, OPS, repeats=repeats,
                                             threads=threads)
                echo(f"peer : {setup.description}")
                for r in recs:
                    if r.op in peer_times:
                        r.peer, r.peer_median_s = vs, peer_times[r.op]
                        r.ratio = r.median_s / peer_times[r.op]
            except PeerUnavailable as exc:
                echo(f"peer {vs} skipped: {exc}")
        records += recs
        if log_n == 16:
            with using_threads(threads):
                records.append(precision_chain(name, backend, depth=8))
    echo(format_table(records))
    if json_path:
        write_text(json_path, json.dumps([asdict(r) for r in records], indent=1))
        echo(f"wrote {json_path}")
    return records


def format_table(records: Sequence[BenchRecord]) -> str:
    head = f"{'op':8} {'N':>6} {'limbs':>5} {'backend':7} {'median ms':>10} {'prec bits':>9} {'peer':>9} {'peer ms':>8} {'ratio':>6}"
    lines = [head, "-" * len(head)]
    for r in records:
        prec = f"{r.precision_bits:.1f}" if r.precision_bits is not None else "-"
        peer_ms = f"{r.peer_median_s * 1e3:8.2f}" if r.peer_median_s is not None else f"{'-':>8}"
        ratio = f"{r.ratio:6.2f}" if r.ratio is not None else f"{'-':>6}"
        lines.append(f"{r.op:8} {r.n:>6} {r.limbs:>5} {r.backend:7} {r.median_s * 1e3:10.2f} {prec:>9} "
                     f"{(r.peer or '-'):>9} {peer_ms} {ratio}")
    return "\n".join(lines)
