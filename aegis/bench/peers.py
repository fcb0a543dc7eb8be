"""Time established CKKS libraries ("peers") on parameters close to AEGIS's own.

Every peer is optional and imported lazily, so this module imports with none installed:

* ``"seal"``      -- Microsoft SEAL through ``tenseal.sealapi``, in process (``pip install tenseal``).
* ``"desilofhe"`` -- DESILO FHE, CPU mode, in process (``pip install desilofhe``).
* ``"openfhe"``   -- OpenFHE through ``openfhe-python``. Its PyPI wheel only carries a CPython 3.10
  extension, so it runs in a subprocess (``_openfhe_worker.py``) under an interpreter that can
  ``import openfhe``: ``$AEGIS_OPENFHE_PYTHON``, this interpreter, ``python3.10`` on PATH,
  pyenv's 3.10 builds, or ``uv python find 3.10``.

Ops (all times are median wall-clock seconds over ``repeats`` runs after one warm-up):
``encrypt`` encode+public-key encrypt of one full slot vector; ``add`` ct+ct; ``pmul`` ct x
plaintext without rescale; ``hmul`` ct x ct + relinearise + rescale; ``rotate`` rotation by one
slot with its key switch; ``ntt`` forward NTT of every limb of one ciphertext; ``rescale`` of a
freshly multiplied ciphertext; ``decrypt`` decrypt+decode. An op a peer cannot time is omitted
from its result; ``PeerSetup.description`` says how each peer differs from the request.
"""
from __future__ import annotations

import glob
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import import_module, metadata
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

__all__ = ["OPS", "PEERS", "PeerSetup", "PeerUnavailable", "run_peer", "run_peer_bootstrap"]

PEERS: tuple[str, ...] = ("seal", "desilofhe", "openfhe")
OPS: tuple[str, ...] = ("encrypt", "add", "pmul", "hmul", "rotate", "ntt", "rescale", "decrypt")
SEAL_MAX_PRIME_BITS = 60  # SEAL's CoeffModulus primes are at most 60 bits
_WORKER = Path(__file__).with_name("_openfhe_worker.py")
_WORKER_TIMEOUT_S = 1800


class PeerUnavailable(RuntimeError):
    """A peer cannot be timed here (not installed, no suitable interpreter, rejected parameters)."""


@dataclass(frozen=True)
class PeerSetup:
    """The parameters a peer actually ran with.

    ``q_bits``/``p_bits`` are prime sizes in bits (empty when the peer does not expose them),
    ``scale_bits`` is log2 of the CKKS scale (0 when not exposed), ``n`` the ring degree used.
    """

    name: str
    n: int
    q_bits: tuple[int, ...]
    p_bits: tuple[int, ...]
    scale_bits: int
    description: str


def _median(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` calls, after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _time_ops(table: dict[str, Callable[[], object]], ops: Sequence[str], repeats: int) -> dict[str, float]:
    """Time the requested ops that appear in ``table``; returns ``{op: median seconds}``."""
    return {op: _median(table[op], repeats) for op in ops if op in table}


def _require(module: str, package: str) -> ModuleType:
    """Import ``module`` or raise PeerUnavailable naming the pip package to install."""
    try:
        return import_module(module)
    except ImportError as exc:
        raise PeerUnavailable(f"{package} is not installed ({exc}): pip install {package}") from exc


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def _slot_vector(slots: int) -> list[float]:
    """A deterministic full vector of ``slots`` reals in [-1, 1]."""
    return [math.sin(0.001 * i + 0.5) for i in range(slots)]


def _run_seal(n: int, q_bits: Sequence[int], p_bits: Sequence[int], scale_bits: int,
              ops: Sequence[str], repeats: int) -> tuple[PeerSetup, dict[str, float]]:
    """SEAL CKKS via tenseal.sealapi; SEAL uses the last prime of the chain as its one special prime."""
    seal = _require("tenseal.sealapi", "tenseal")
    notes = []
    q_used = tuple(min(int(b), SEAL_MAX_PRIME_BITS) for b in q_bits)
    special = min(max(p_bits) if p_bits else max(q_bits), SEAL_MAX_PRIME_BITS)
    if q_used != tuple(q_bits) or (p_bits and special != max(p_bits)):
        notes.append(f"primes capped at {SEAL_MAX_PRIME_BITS} bits")
    if len(p_bits) > 1:
        notes.append(f"one {special}-bit special prime instead of P={list(p_bits)} "
                     "(SEAL key-switches per Q prime with a single special prime)")
    try:
        parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(n)
        parms.set_coeff_modulus(seal.CoeffModulus.Create(n, list(q_used) + [special]))
        bound = seal.CoeffModulus.MaxBitCount(n, seal.SEC_LEVEL_TYPE.TC128)
    except Exception as exc:  # e.g. N outside SEAL's range, not enough primes
        raise PeerUnavailable(f"SEAL rejected the parameters: {exc}") from exc
    total = sum(q_used) + special
    sec = seal.SEC_LEVEL_TYPE.TC128
    if total > bound:
        sec = seal.SEC_LEVEL_TYPE.NONE
        limit = f"SEAL's 128-bit bound {bound}" if bound else f"SEAL has no 128-bit bound for N={n}"
        notes.append(f"security check DISABLED: log2(QP)={total} bits, {limit}")
    ctx = seal.SEALContext(parms, True, sec)
    if not ctx.parameters_set():
        raise PeerUnavailable(f"SEAL rejected the parameters: {ctx.parameters_error_message()}")

    keygen = seal.KeyGenerator(ctx)
    public = seal.PublicKey()
    keygen.create_public_key(public)
    relin = seal.RelinKeys()
    keygen.create_relin_keys(relin)
    galois = seal.GaloisKeys()
    keygen.create_galois_keys([pow(3, 1, 2 * n)], galois)  # Galois element of a 1-slot rotation
    encoder, evaluator = seal.CKKSEncoder(ctx), seal.Evaluator(ctx)
    encryptor, decryptor = seal.Encryptor(ctx, public), seal.Decryptor(ctx, keygen.secret_key())
    scale = 2.0 ** scale_bits
    vec = _slot_vector(encoder.slot_count())

    def encrypt(values: list[float] = vec) -> object:
        pt, ct = seal.Plaintext(), seal.Ciphertext(ctx)
        encoder.encode(values, scale, pt)
        encryptor.encrypt(pt, ct)
        return ct

    ct1, ct2, ptxt = encrypt(), encrypt(vec[::-1]), seal.Plaintext()
    encoder.encode(vec, scale, ptxt)
    prod, out, coeff = seal.Ciphertext(ctx), seal.Ciphertext(ctx), seal.Ciphertext(ctx)
    evaluator.multiply(ct1, ct2, prod)
    evaluator.relinearize_inplace(prod, relin)
    evaluator.transform_from_ntt(ct1, coeff)  # SEAL CKKS ciphertexts live in NTT form

    def hmul() -> None:
        evaluator.multiply(ct1, ct2, out)
        evaluator.relinearize_inplace(out, relin)
        evaluator.rescale_to_next_inplace(out)

    def decrypt() -> list[float]:
        pt = seal.Plaintext()
        decryptor.decrypt(ct1, pt)
        return encoder.decode_double(pt)

    table: dict[str, Callable[[], object]] = {
        "encrypt": encrypt,
        "add": lambda: evaluator.add(ct1, ct2, out),
        "pmul": lambda: evaluator.multiply_plain(ct1, ptxt, out),
        "hmul": hmul,
        "rotate": lambda: evaluator.rotate_vector(ct1, 1, galois, out),
        "ntt": lambda: evaluator.transform_to_ntt(coeff, out),
        "rescale": lambda: evaluator.rescale_to_next(prod, out),
        "decrypt": decrypt,
    }
    timings = _time_ops(table, ops, repeats)
    actual_q = tuple(m.bit_count() for m in parms.coeff_modulus())
    desc = (f"SEAL via tenseal {_version('tenseal')} (in process, single-threaded): CKKS N={n}, "
            f"Q primes {list(actual_q[:-1])} bits, special prime {actual_q[-1]} bits, "
            f"scale 2^{scale_bits}, public-key encryption")
    if notes:
        desc += "; " + "; ".join(notes)
    return PeerSetup("seal", n, actual_q[:-1], actual_q[-1:], scale_bits, desc), timings


def _run_desilofhe(n: int, q_bits: Sequence[int], p_bits: Sequence[int], scale_bits: int,
                   ops: Sequence[str], repeats: int, threads: int) -> tuple[PeerSetup, dict[str, float]]:
    """DESILO FHE (CPU). Parameters come from ``Engine(max_level=L)``; N and primes are its own."""
    desilo = _require("desilofhe", "desilofhe")
    max_level = len(q_bits) - 1
    try:
        engine = desilo.Engine(max_level=max_level, mode="cpu", thread_count=threads)
    except Exception as exc:
        raise PeerUnavailable(f"desilofhe rejected max_level={max_level}: {exc}") from exc
    n_used = 2 * engine.slot_count
    np = import_module("numpy")  # a dependency of desilofhe
    secret = engine.create_secret_key()
    public = engine.create_public_key(secret)
    relin = engine.create_relinearization_key(secret)
    rot1 = engine.create_fixed_rotation_key(secret, 1)
    vec = np.asarray(_slot_vector(engine.slot_count))
    ct1, ct2 = engine.encrypt(vec, public), engine.encrypt(vec[::-1].copy(), public)
    ptxt = engine.encode(vec)
    coeff = engine.intt(ct1)  # fresh desilofhe ciphertexts are already in coefficient form
    words = ct1.nbytes // (ct1.polynomial_count * n_used * 8)

    table: dict[str, Callable[[], object]] = {
        "encrypt": lambda: engine.encrypt(vec, public),
        "add": lambda: engine.add(ct1, ct2),
        "pmul": lambda: engine.multiply(ct1, ptxt),
        "hmul": lambda: engine.multiply(ct1, ct2, relin),
        "rotate": lambda: engine.rotate(ct1, rot1),
        "ntt": lambda: engine.ntt(coeff),
        "decrypt": lambda: engine.decrypt(ct1, secret),
        # "rescale": multiply rescales internally and Engine.rescale does not drop a level,
        # so no separately timeable rescale exists.
    }
    timings = _time_ops(table, ops, repeats)
    mismatch = f" (requested N={n}; desilofhe picks N from max_level)" if n_used != n else ""
    desc = (f"desilofhe {_version('desilofhe')} Engine(max_level={max_level}, mode='cpu', "
            f"thread_count={threads}): CKKS N={n_used}{mismatch}, max_level={max_level}, "
            f"{words} 64-bit RNS words per coefficient in a fresh ciphertext; prime sizes, "
            f"scale and special primes are internal (not exposed); public-key encryption; "
            f"multiply() rescales by itself, so pmul includes a rescale and rescale is not timed; "
            f"rotate uses a fixed rotation key for 1 step")
    return PeerSetup("desilofhe", n_used, (), (), 0, desc), timings


def _python_candidates() -> list[str]:
    """Interpreters that might load the cp310-only openfhe wheel, most specific first."""
    found = [os.environ.get("AEGIS_OPENFHE_PYTHON", ""), sys.executable,
             shutil.which("python3.10") or ""]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found += sorted(glob.glob(os.path.join(root, "versions", "3.10*", "bin", "python3.10")), reverse=True)
    found += ["/usr/bin/python3.10", "/usr/local/bin/python3.10"]
    uv = shutil.which("uv")
    if uv:
        try:
            res = subprocess.run([uv, "python", "find", "3.10"], capture_output=True, text=True,
                                 timeout=60, env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})
            found.append(res.stdout.strip() if res.returncode == 0 else "")
        except (OSError, subprocess.SubprocessError):
            pass
    out: list[str] = []
    for path in found:
        if path and os.path.isfile(path) and path not in out:
            out.append(path)
    return out


@lru_cache(maxsize=1)
def _openfhe_python() -> str:
    """First interpreter that can ``import openfhe``; PeerUnavailable explains the failures."""
    tried = []
    for python in _python_candidates():
        try:
            res = subprocess.run([python, "-c", "import openfhe"], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            tried.append(f"{python}: {exc}")
            continue
        if res.returncode == 0:
            return python
        lines = (res.stderr.strip() or res.stdout.strip() or f"exit {res.returncode}").splitlines()
        tried.append(f"{python}: {lines[-1]}")
    raise PeerUnavailable(
        "no interpreter can import openfhe (its PyPI wheel only has a CPython 3.10 build; "
        "install it with `python3.10 -m pip install openfhe` or set AEGIS_OPENFHE_PYTHON). "
        "Tried: " + ("; ".join(tried) or "no candidate interpreter found"))


def _run_openfhe(n: int, q_bits: Sequence[int], p_bits: Sequence[int], scale_bits: int,
                 ops: Sequence[str], repeats: int, threads: int) -> tuple[PeerSetup, dict[str, float]]:
    """OpenFHE CKKS in a subprocess running ``_openfhe_worker.py`` with OMP_NUM_THREADS=threads."""
    python = _openfhe_python()
    request = {"n": n, "q_bits": list(q_bits), "p_bits": list(p_bits), "scale_bits": scale_bits,
               "ops": list(ops), "repeats": repeats}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    try:
        res = subprocess.run([python, str(_WORKER)], input=json.dumps(request), capture_output=True,
                             text=True, env=env, timeout=_WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise PeerUnavailable(f"openfhe worker timed out after {_WORKER_TIMEOUT_S} s") from exc
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    try:
        reply = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise PeerUnavailable(f"openfhe worker failed (exit {res.returncode}): "
                              f"{(res.stderr or res.stdout).strip()[-2000:]}") from None
    if "error" in reply:
        raise PeerUnavailable(f"openfhe worker ({python}): {reply['error']}")
    desc = f"{reply['description']}, OMP_NUM_THREADS={threads}"
    setup = PeerSetup("openfhe", int(reply["n"]), tuple(reply["q_bits"]), tuple(reply["p_bits"]),
                      int(reply["scale_bits"]), desc)
    return setup, {op: float(t) for op, t in reply["timings"].items()}


def run_peer(name: str, n: int, q_bits: Sequence[int], p_bits: Sequence[int], scale_bits: int,
             ops: Sequence[str], repeats: int = 5, threads: int = 1) -> tuple[PeerSetup, dict[str, float]]:
    """Time each op on the peer; returns the setup used and {op: median seconds}.

    ``n`` is the ring degree, ``q_bits``/``p_bits`` the bit sizes of the Q chain (base prime
    first) and of the special primes, ``scale_bits`` log2 of the CKKS scale. Ops the peer cannot
    time are left out of the dict. Raises PeerUnavailable when the peer can't run here (missing
    package or interpreter, parameters rejected) and ValueError for an unknown peer or op.
    """
    unknown = [op for op in ops if op not in OPS]
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; expected one of {PEERS}")
    if unknown:
        raise ValueError(f"unknown ops {unknown}; expected a subset of {OPS}")
    if len(q_bits) < 2 or repeats < 1 or threads < 1:
        raise ValueError("need at least 2 Q primes, repeats >= 1 and threads >= 1")
    if name == "seal":
        return _run_seal(n, q_bits, p_bits, scale_bits, ops, repeats)
    if name == "desilofhe":
        return _run_desilofhe(n, q_bits, p_bits, scale_bits, ops, repeats, threads)
    return _run_openfhe(n, q_bits, p_bits, scale_bits, ops, repeats, threads)


def run_peer_bootstrap(name: str, repeats: int = 1, threads: int = 1) -> tuple[str, dict[str, float]]:
    """Time one peer's CKKS bootstrapping on its own default bootstrapping parameters.

    Returns ``(description, {"median_s", "precision_bits", "levels_after"})`` for inputs uniform in
    [-1, 1] over every slot; precision is -log2 of the max abs error after one bootstrap.  Only
    ``desilofhe`` (in process) is wired; others raise PeerUnavailable.
    """
    if name != "desilofhe":
        raise PeerUnavailable(f"bootstrapping comparison is wired for desilofhe only, not {name!r}")
    desilo = _require("desilofhe", "desilofhe")
    np = import_module("numpy")
    engine = desilo.Engine(mode="cpu", bootstrap=True, thread_count=threads)
    secret = engine.create_secret_key()
    public = engine.create_public_key(secret)
    relin = engine.create_relinearization_key(secret)
    conj = engine.create_conjugation_key(secret)
    bkey = engine.create_bootstrap_key(secret)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, engine.slot_count)
    ct = engine.encrypt(x, public, level=0) if _accepts_level(engine) else engine.encrypt(x, public)
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = engine.bootstrap(ct, relin, conj, bkey)
        times.append(time.perf_counter() - t0)
    err = float(np.max(np.abs(np.asarray(engine.decrypt(out, secret)) - x)))
    desc = (f"desilofhe {_version('desilofhe')} Engine(mode='cpu', bootstrap=True, thread_count={threads}): "
            f"N={2 * engine.slot_count}, its default bootstrapping parameters and key (size 'medium'), "
            f"input at level {ct.level}")
    return desc, {"median_s": statistics.median(times), "precision_bits": round(-math.log2(err), 2),
                  "levels_after": int(out.level)}


def _accepts_level(engine) -> bool:
    import inspect

    try:
        return "level" in (engine.encrypt.__doc__ or "") or "level" in str(inspect.signature(engine.encrypt))
    except (TypeError, ValueError):
        return False
