"""The `aegis` command line.  Subcommands grow with the project; this module only dispatches."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np


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

        log_ns = [int(v) for v in args.n.split(",") if v]
        fhe_bench.run(log_ns, backend=args.backend, repeats=args.repeats, vs=args.vs, json_path=args.json)
        return 0
    raise SystemExit(f"unknown benchmark {args.what!r}; valid: fhe")


def build_parser() -> argparse.ArgumentParser:
    from fhe.params import DEFAULT_PRESET, preset_names

    p = argparse.ArgumentParser(prog="aegis", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="encrypt, compute and decrypt on one CKKS preset")
    d.add_argument("--params", default="n14", choices=preset_names(),
                   help=f"CKKS preset (secure: {', '.join(preset_names(False))}; default n14; library default {DEFAULT_PRESET})")
    d.add_argument("--insecure", action="store_true", help="allow insecure toy-* presets (tests only)")
    d.add_argument("--seed", type=int, default=0, help="seed of the random *inputs* (keys always use the OS CSPRNG)")
    d.set_defaults(func=_demo)

    b = sub.add_parser("bench", help="benchmarks that print figures")
    b.add_argument("what", choices=["fhe"])
    b.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    b.add_argument("--n", default="13,14,15,16", help="comma-separated log2 N values (13..16)")
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--vs", default=None, help="peer library to compare with: seal, desilofhe or openfhe")
    b.add_argument("--json", default=None, help="write one record per (op, N, backend) to this path")
    b.set_defaults(func=_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, RuntimeError) as exc:  # bad input: say what is wrong, no traceback
        print(f"aegis: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
