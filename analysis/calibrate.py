"""Calibration: time every primitive and the device-to-device copy, write a hardware profile.

Each primitive of :mod:`aegis.prims` is timed with the real kernels (:class:`fhe.Evaluator`
on the chosen backend) at every level (the best of interleaved rounds; the samples are
kept and :mod:`sim.compute` interpolates them); ``fixed_s + per_limb_s x limbs`` is fitted
by least squares for other limb counts.  Limb-split primitives are timed on 2 and 4 virtual
devices (:mod:`exec.calibrate_limb`).  Copies between virtual devices are timed over sizes
for the link bandwidth and latency, and concurrent workers for their slowdown.  The result
is the base profile (``cpu`` for numpy) with a ``kernel_table`` and its provenance
(machine, backend, parameters, date), which :mod:`sim.compute` uses instead of the roofline.
"""
from __future__ import annotations

import datetime
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from aegis.hardware import HARDWARE_DIR
from fhe import CKKSContext, Client, Evaluator
from fhe.rlwe import keyswitch as ks

from aegis.safeio import write_text

from exec.calibrate_limb import time_limb_prims
from exec.comm import make_communicator


def _best(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _sync(backend: str) -> None:
    if backend == "cupy":
        import cupy

        cupy.cuda.Device().synchronize()


def time_prims(ctx: CKKSContext, levels: list[int], repeats: int = 3, backend: str = "numpy") -> dict[str, list]:
    """Seconds per primitive at each level: ``{prim: [(limbs, seconds), ...]}``.

    Every (primitive, level) is timed once per round and the best of ``repeats`` rounds is
    kept: the figure is the machine's own speed.  The rounds spread each figure's samples over
    the whole calibration, so a burst of load from other processes spoils one round, not every
    sample of one primitive.  (A median would not follow the load either: calls of a few
    milliseconds mostly fit in one time slice and miss it, while a run of many seconds gets
    only its share of the cores.)  ``hrot`` is (four hoisted rotations - their ModUp) / 4.
    """
    p = ctx.params
    client = Client(ctx, rotations=[1, 2, 3, 4])
    ev = Evaluator(ctx, client.evaluation_keys)
    rng = np.random.default_rng(0)
    jobs: dict[tuple[str, int], Any] = {}
    for lvl in levels:
        a = client.encrypt(rng.uniform(-1, 1, p.slots), level=lvl)
        b = client.encrypt(rng.uniform(-1, 1, p.slots), level=lvl)
        pt = ev.encoder.encode(rng.uniform(-1, 1, p.slots), level=lvl)
        prod = ev.mul(a, b)
        vals = rng.uniform(-1, 1, p.slots)
        jobs |= {
            ("add", lvl): lambda a=a, b=b: ev.add(a, b),
            ("pmul", lvl): lambda a=a, pt=pt: ev.mul_plain(a, pt),
            ("tensor", lvl): lambda a=a, b=b: ev.mul(a, b),
            ("relin", lvl): lambda prod=prod: ev.relinearize(prod),
            ("rot", lvl): lambda a=a: ev.rotate(a, 1),
            ("giant", lvl): lambda a=a: ev.rotate(a, 2),
            ("hoist", lvl): lambda a=a, lvl=lvl: ks.mod_up(ctx.ring, p, a.parts[1], lvl),
            ("hoist4", lvl): lambda a=a: ev.rotate_hoisted(a, [1, 2, 3, 4]),
            ("encode", lvl): lambda vals=vals, lvl=lvl: ev.encoder.encode(vals, level=lvl),
        }
        if lvl >= 1:
            jobs[("rescale", lvl)] = lambda a=a: ev.rescale(a)

    def call(fn: Any) -> float:
        t0 = time.perf_counter()
        fn()
        _sync(backend)
        return time.perf_counter() - t0

    for fn in jobs.values():                               # warm-up (numba compilation, caches)
        call(fn)
    samples: dict[tuple[str, int], list[float]] = {k: [] for k in jobs}
    for _ in range(max(repeats, 1)):
        for k, fn in jobs.items():
            samples[k].append(call(fn))
    best = {k: min(v) for k, v in samples.items()}
    out: dict[str, list] = {}
    for lvl in levels:
        best[("hrot", lvl)] = max(best.pop(("hoist4", lvl)) - best[("hoist", lvl)], 0.0) / 4
    for (name, lvl), sec in sorted(best.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        out.setdefault(name, []).append((lvl + 1, sec))
    return out


def time_concurrency(ctx: CKKSContext, threads: list[int], work: int = 6, backend: str = "numpy",
                     rounds: int = 3) -> dict[str, float]:
    """How much slower each of t concurrent device workers runs than one alone (same work per worker).

    Virtual devices are threads of one process: on a CPU they share cores, memory bandwidth
    and the interpreter lock, so t workers rarely run t times the work of one.  The thread
    counts are timed in turn for ``rounds`` rounds and the best times compared.
    """
    import threading

    p = ctx.params
    client = Client(ctx, rotations=[1])
    ev = Evaluator(ctx, client.evaluation_keys)
    ct = client.encrypt(np.zeros(p.slots), level=p.max_level)

    def job() -> None:
        for _ in range(work):
            ev.rescale(ev.mul_relin_rescale(ev.rotate(ct, 1), ct))
        _sync(backend)

    job()
    counts = sorted(set([1] + threads))
    times: dict[int, list[float]] = {t: [] for t in counts}
    for _ in range(max(rounds, 1)):
        for t in counts:
            ths = [threading.Thread(target=job) for _ in range(t)]
            t0 = time.perf_counter()
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            times[t].append(time.perf_counter() - t0)
    base = min(times[1])
    return {str(t): min(times[t]) / base for t in counts}


def time_rendezvous(devices: int = 2, rounds: int = 300) -> float:
    """Seconds one exchange among virtual-device threads takes (exec.limb.LimbGroup): a collective's latency."""
    import threading

    from exec.comm import NumpyCommunicator
    from exec.limb import LimbGroup

    group = LimbGroup(tuple(range(devices)), NumpyCommunicator(devices))

    def worker(pos: int) -> None:
        for _ in range(rounds):
            group.exchange(pos, pos)

    ths = [threading.Thread(target=worker, args=(p,)) for p in range(devices)]
    t0 = time.perf_counter()
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    return (time.perf_counter() - t0) / rounds


def fit(samples: list[tuple[int, float]]) -> dict[str, float]:
    """Least-squares ``fixed_s + per_limb_s * limbs`` (both clipped at 0)."""
    x = np.array([s[0] for s in samples], dtype=float)
    y = np.array([s[1] for s in samples], dtype=float)
    if len(set(x)) < 2:
        return {"fixed_s": float(y.mean()), "per_limb_s": 0.0}
    A = np.stack([np.ones_like(x), x], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, y, rcond=None)
    if b < 0:
        return {"fixed_s": float(y.mean()), "per_limb_s": 0.0}
    if a < 0:
        return {"fixed_s": 0.0, "per_limb_s": float((y / x).mean())}
    return {"fixed_s": float(a), "per_limb_s": float(b)}


def time_copies(backend: str, sizes: list[int], repeats: int = 3) -> tuple[float, float]:
    """Link (bytes/s, latency s) from timed device-to-device copies of ``sizes`` bytes."""
    comm = make_communicator(backend, 2)
    xs, ys = [], []
    for n in sizes:
        arr = np.zeros(n // 8, dtype=np.uint64)
        if backend == "cupy":
            import cupy

            arr = cupy.asarray(arr)
        t = _best(lambda: (comm._copy(arr, 1), _sync(backend)), repeats)
        xs.append(n)
        ys.append(t)
    A = np.stack([np.ones(len(xs)), np.array(xs, float)], axis=1)
    (lat, inv_bw), *_ = np.linalg.lstsq(A, np.array(ys), rcond=None)
    return 1.0 / max(inv_bw, 1e-15), max(float(lat), 0.0)


def calibrate(params_name: str, backend: str = "numpy", base: str = "cpu", insecure: bool = False,
              levels: list[int] | None = None, repeats: int = 3,
              limb_groups: list[int] | None = None, in_situ: bool = True, launcher: str = "threads") -> dict[str, Any]:
    """A hardware profile dict with a fitted ``kernel_table`` for ``params_name``'s ring degree.

    ``in_situ`` adds ``executor_factor``, ``executor_factor_by_kind`` and ``executor_factor_limb``
    (:func:`time_in_situ`).

    On the numpy backend the table also holds ``limb``: limb-split primitives timed on
    ``limb_groups`` (default 2 and 4) virtual devices (:mod:`exec.calibrate_limb`).
    ``launcher="mpi"`` calibrates for the MPI executor (one process per device): link latency and
    bandwidth from MPI ping-pongs (:mod:`exec.calibrate_mpi`), no thread-concurrency slowdown, and the
    in-situ factors from MPI runs on each op's CPU time (so that they hold whatever else runs here).
    """
    ctx = CKKSContext.from_preset(params_name, backend=backend, allow_insecure=insecure)
    p = ctx.params
    levels = levels or list(range(p.max_level + 1))
    samples = time_prims(ctx, levels, repeats, backend)
    mpi = launcher == "mpi"
    if mpi:
        from exec.calibrate_mpi import time_mpi_links

        bw, lat, link_samples = time_mpi_links([8, 1 << 12, 1 << 16, 1 << 20, 1 << 23], max(repeats, 3))
    else:
        bw, lat = time_copies(backend, [1 << 16, 1 << 20, 1 << 23], repeats)
    concurrency = time_concurrency(ctx, [2, 4], backend=backend, rounds=max(repeats, 1)) \
        if backend == "numpy" and not mpi else {}
    limb = {}
    if backend == "numpy":
        limb = time_limb_prims(ctx, [2, 4] if limb_groups is None else limb_groups, levels, repeats, backend=backend)
    profile = json.loads((HARDWARE_DIR / f"{base}.json").read_text())
    profile["name"] = f"{base}-calibrated"
    profile["kernel_table"] = {
        "log_n": p.log_n,
        "prims": {k: fit(v) for k, v in samples.items()},
        "samples": {k: [[lim, s] for lim, s in v] for k, v in samples.items()},
        "provenance": {"machine": platform.node(), "processor": platform.processor() or platform.machine(),
                       "backend": backend, "params": p.name, "date": datetime.datetime.now().isoformat(timespec="seconds"),
                       "method": f"every level; best of {repeats} rounds over all (primitive, level); the simulator "
                                 "interpolates the samples (least-squares fit over limbs outside them)"},
    }
    if limb:
        profile["kernel_table"]["limb"] = {
            g: {"prims": {k: fit(v) for k, v in rec.items()}, "samples": {k: [[lim, s] for lim, s in v]
                                                                         for k, v in rec.items()}}
            for g, rec in limb.items()}
        profile["kernel_table"]["provenance"]["limb_method"] = (
            "limb-split primitives on G worker threads with exec.limb.LimbEvaluator, wall time of the group per "
            f"call (best of {repeats} rounds of about 10 ms), exchanges and concurrency included; "
            "fit over the ciphertext's limbs")
    if concurrency:
        profile["device"]["concurrency_slowdown"] = concurrency
    profile["topology"]["link_bytes_per_s"] = bw
    profile["topology"]["collective_efficiency"] = 1.0
    if mpi:
        # one process per device: a collective is direct point-to-point messages (exec.mpi_group)
        profile["topology"]["collective_algorithm"] = "direct"
        profile["kernel_table"]["provenance"]["link_method"] = (
            "MPI ping-pong between two ranks through exec.wire (best of rounds, one way = half the round trip), "
            "least squares latency + bytes / bandwidth; one-way seconds by bytes: "
            + ", ".join(f"{n}: {t:.2e}" for n, t in sorted(link_samples.items())))
    elif backend == "numpy":
        # virtual devices exchange through memory in one step; a collective costs one thread rendezvous,
        # i.e. two hops of the switch topology
        profile["topology"]["collective_algorithm"] = "direct"
        lat = max(lat, time_rendezvous() / 2)
    profile["topology"]["link_latency_s"] = lat
    if in_situ:
        try:
            situ = time_in_situ(profile, params_name, insecure, backend, rounds=max(1, min(repeats, 3)),
                                limb_groups=sorted(int(g) for g in limb), concurrency=not mpi, launcher=launcher)
        except ValueError as exc:          # the calibration workload needs more levels than this set has
            profile["kernel_table"]["provenance"]["executor_factor_method"] = (
                f"not measured: the calibration workload does not run on {p.name} ({exc}); factor 1")
        else:
            profile["kernel_table"]["executor_factor"] = situ["factor"]
            profile["kernel_table"]["executor_factor_by_kind"] = situ["by_kind"]
            if situ["limb"]:
                profile["kernel_table"]["executor_factor_limb"] = situ["limb"]
            if situ["concurrency"]:
                slow = profile["device"].setdefault("concurrency_slowdown", {"1": 1.0})
                profile["kernel_table"]["provenance"]["concurrency_microbenchmark"] = dict(slow)
                slow |= situ["concurrency"]
                profile["kernel_table"]["provenance"]["concurrency_method"] = (
                    "device.concurrency_slowdown: 4 from the microbenchmark (identical key-switching loops on "
                    "concurrent threads); 2 measured in situ: the slowest busy device's time over its prediction "
                    f"in {situ['workload']}")
            profile["kernel_table"]["provenance"]["executor_factor_method"] = (
                f"sum of the executor's measured op {'CPU times (MPI executor)' if mpi else 'times'} over the "
                f"table's prediction, in all and per op kind "
                f"(one device) and per limb group, "
                f"on {situ['workload']} ({situ['ops']} ops; warm run discarded; best of {situ['rounds']} runs)")
    profile.setdefault("sources", []).append(f"kernel_table and link figures measured by `aegis calibrate` "
                                             f"({backend}, {p.name}) on {platform.node()}")
    return profile


#: op kinds run by the client (encrypting the input, client-aided refresh): no server time to calibrate
CLIENT_KINDS = ("input", "refresh_client")


def _lowest_ratio(pairs: list[tuple[float, float]]) -> float:
    """The lowest measured/predicted ratio among ``(measured, predicted)`` pairs (1 if any prediction is 0)."""
    return min(m / p for m, p in pairs) if pairs and all(p > 0 for _, p in pairs) else 1.0


def _in_situ_runs(plan: Any, km: Any, backend: str, rounds: int, warm: bool,
                  launcher: str = "threads") -> list[dict[tuple[str, int], list[float]]]:
    """Run ``plan`` (once first to warm up if ``warm``), then ``rounds`` times; per run, the measured and
    table-predicted busy seconds of its server ops by (op kind, device): ``{(kind, device): [measured,
    predicted]}``.  A limb-split op is predicted on each device of its group as the simulator does
    (:meth:`sim.compute.KernelModel.work_time` with the group's size and the device's position);
    client-side ops (``input``, ``refresh_client``) are left out."""
    from exec.runner import Executor

    def run() -> Any:
        if launcher == "mpi":
            from exec.launch import run_mpi

            return run_mpi(plan, backend=backend)
        return Executor(plan, backend=backend).run()

    if warm:
        run()                                                 # JIT, caches
    runs = []
    for _ in range(max(rounds, 1)):
        out = run()
        cpu = out.result.op_cpu
        sums: dict[tuple[str, int], list[float]] = {}
        for j, (op_id, kind, _phase, _layer, dev, start, end, _bm) in enumerate(out.result.ops):
            if kind in CLIENT_KINDS:
                continue
            devs, work = plan.assign[op_id], plan.ops[op_id].work
            acc = sums.setdefault((kind, dev), [0.0, 0.0])
            acc[0] += cpu[j] if cpu is not None else end - start       # MPI runs: the op's CPU time
            if plan.mode[op_id] == "limb" and len(devs) > 1:
                acc[1] += km.work_time(work, len(devs), devs.index(dev), kind=kind)
            else:
                acc[1] += km.work_time(work, kind=kind)
        runs.append(sums)
    return runs


def _total(sums: dict[tuple[str, int], list[float]], keep: Any = None) -> tuple[float, float]:
    items = [v for k, v in sums.items() if keep is None or keep(k)]
    return sum(m for m, _ in items), sum(p for _, p in items)


def time_in_situ(profile: dict[str, Any], params_name: str, insecure: bool, backend: str = "numpy",
                 seq: int = 32, rounds: int = 3, limb_groups: list[int] | None = None,
                 concurrency: bool = True, launcher: str = "threads") -> dict[str, Any]:
    """The executor's time per op over what the calibrated table predicts for it, measured in situ.

    Microbenchmarks time each primitive in a tight loop; inside the executor the same primitives run
    among others (cold caches, allocation, the worker's bookkeeping, several rotations of one op
    sharing a limb exchange, device threads contending for the interpreter lock).  This runs a
    calibration workload -- the ``tiny`` model, one layer, ``seq`` tokens, client-aided refresh: not
    a configuration ``aegis reproduce`` checks -- through the executor, once to warm up and then
    ``rounds`` times per plan, each ratio below the best (lowest) of its rounds, as the table's own
    times are:

    * ``factor`` and ``by_kind`` {op kind: ratio}: measured over predicted busy seconds of ``single``
      on one device, over all its server ops and per op kind;
    * ``limb`` {group size: ratio}: the same over ``limb`` on each of ``limb_groups`` devices where
      the table has limb-split times for that group;
    * ``concurrency`` {"2": ratio} (with ``concurrency``, on the numpy backend): ``aegis`` on two
      devices, both busy; the slowest device's measured busy time over its prediction with the
      per-kind factors -- how much slower a device on the critical path runs while two compute.

    Also ``ops`` (server ops of the one-device run) and ``workload`` (what ran).  The simulator
    applies them (:meth:`sim.compute.KernelModel.situ`, ``device.concurrency_slowdown``).
    """
    from aegis.bootstrap_model import BootstrapConfig
    from aegis.plan import build_plan
    from aegis.workloads import Workload, get_model
    from sim.compute import KernelModel
    from sim.profile import parse_spec

    from exec.model import TINY_APPROX

    wl = Workload(get_model("tiny", layers=1), seq, params_name=params_name, insecure=insecure, approx=TINY_APPROX)
    refresh = BootstrapConfig(mode="client_aided")
    table = {k: v for k, v in profile["kernel_table"].items()
             if k not in ("executor_factor", "executor_factor_by_kind", "executor_factor_limb")}
    spec = parse_spec({**profile, "kernel_table": table}, "calibration")
    plan = build_plan(wl, "single", 1, "cpu", bootstrap=refresh)
    runs = _in_situ_runs(plan, KernelModel(spec, plan.params), backend, rounds, warm=True, launcher=launcher)
    kinds = sorted({k for k, _ in runs[0]})
    by_kind = {k: _lowest_ratio([_total(r, lambda key, k=k: key[0] == k) for r in runs]) for k in kinds}
    factor = _lowest_ratio([_total(r) for r in runs])
    server_ops = sum(1 for o in plan.ops if o.kind not in CLIENT_KINDS)
    what = [f"single on one device ({server_ops} server ops)"]
    limb: dict[str, float] = {}
    for g in limb_groups or []:
        if str(g) not in (table.get("limb") or {}):
            continue
        lplan = build_plan(wl, "limb", g, "cpu", bootstrap=refresh)
        lruns = _in_situ_runs(lplan, KernelModel(spec, lplan.params, g), backend, rounds, warm=False,
                              launcher=launcher)
        limb[str(g)] = _lowest_ratio([_total(r) for r in lruns])
        what.append(f"limb on {g}")
    shared: dict[str, float] = {}
    if concurrency and backend == "numpy":
        cplan = build_plan(wl, "aegis", 2, "cpu", bootstrap=refresh)
        busy = sorted({d for d, order in enumerate(cplan.orders) if order})
        if len(busy) == 2:
            kspec = parse_spec({**profile, "kernel_table": {**table, "executor_factor": factor,
                                                            "executor_factor_by_kind": by_kind}}, "calibration")
            cruns = _in_situ_runs(cplan, KernelModel(kspec, cplan.params), backend, rounds, warm=False)
            shared["2"] = min(max(_lowest_ratio([_total(r, lambda key, d=d: key[1] == d)]) for d in busy)
                              for r in cruns)
            what.append("aegis on 2 (both busy)")
    return {"factor": factor, "by_kind": by_kind, "limb": limb, "concurrency": shared,
            "ops": server_ops,
            "rounds": max(rounds, 1),
            "workload": f"tiny, 1 layer, {seq} tokens, {params_name}, client-aided refresh: " + ", ".join(what)}


def write_profile(profile: dict[str, Any], path: str | Path) -> None:
    write_text(path, json.dumps(profile, indent=2) + "\n")
