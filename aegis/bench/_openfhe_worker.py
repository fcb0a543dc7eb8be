"""Standalone OpenFHE timing worker used by ``aegis.bench.peers`` (run it, don't import it).

The PyPI ``openfhe`` wheel only ships a CPython 3.10 extension, so the bench runs this script
under a separate interpreter. Protocol: one JSON request on stdin::

    {"n": 16384, "q_bits": [50, 40, ...], "p_bits": [50, 50], "scale_bits": 40,
     "ops": ["encrypt", ...], "repeats": 5}

and one JSON line on stdout (the last line): ``{"description", "n", "q_bits", "p_bits",
"scale_bits", "timings": {op: median seconds}}``, or ``{"error": "..."}`` with exit status 1.
Thread count is set by the caller through ``OMP_NUM_THREADS`` in the environment.
This file must stay self-contained (standard library + openfhe + numpy only).
"""
from __future__ import annotations

import json
import math
import statistics
import sys
import time
from typing import Any, Callable

AUX_BITS = 60  # OpenFHE's AUXMODSIZE: bit size of each special prime P for HYBRID key switching


def _median(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` calls, after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _q_prime_bits(openfhe: Any, cc: Any) -> list[int]:
    """Bit sizes of the Q primes OpenFHE actually generated (read from the context's JSON)."""
    doc = json.loads(openfhe.Serialize(cc, openfhe.JSON))
    found: list[int] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("p"), list) and "rd" not in node:  # ILDCRTParams tower list
                for tower in node["p"]:
                    mod = tower["ptr_wrapper"]["data"]["value0"]["cm"]["v"]
                    found.append(int(mod).bit_length())
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return found


def run(n: int, q_bits: list[int], p_bits: list[int], scale_bits: int,
        ops: list[str], repeats: int) -> dict[str, Any]:
    """Build an OpenFHE CKKS context close to the request and time ``ops`` (seconds)."""
    import numpy as np
    import openfhe as ofhe

    depth = len(q_bits) - 1
    dnum = max(1, math.ceil(len(q_bits) / max(1, len(p_bits))))  # alpha = number of P primes
    notes: list[str] = []
    cc = None
    for sec_name in ("HEStd_128_classic", "HEStd_NotSet"):
        params = ofhe.CCParamsCKKSRNS()
        params.SetRingDim(n)
        params.SetBatchSize(n // 2)
        params.SetMultiplicativeDepth(depth)
        params.SetFirstModSize(q_bits[0])
        params.SetScalingModSize(scale_bits)
        params.SetScalingTechnique(ofhe.FIXEDMANUAL)
        params.SetKeySwitchTechnique(ofhe.HYBRID)
        params.SetNumLargeDigits(dnum)
        params.SetSecurityLevel(getattr(ofhe, sec_name))
        try:
            cc = ofhe.GenCryptoContext(params)
            break
        except Exception as exc:  # OpenFHE raises if N is too small for 128-bit security
            notes.append(f"{sec_name} rejected ({exc}); ")
    if cc is None:
        raise RuntimeError("OpenFHE rejected the parameters: " + "".join(notes))
    for feature in (ofhe.PKE, ofhe.KEYSWITCH, ofhe.LEVELEDSHE):
        cc.Enable(feature)
    security = "128-bit security check" if not notes else "security check DISABLED (HEStd_NotSet)"

    keys = cc.KeyGen()
    cc.EvalMultKeyGen(keys.secretKey)
    cc.EvalRotateKeyGen(keys.secretKey, [1])
    slots = cc.GetRingDimension() // 2
    rng = np.random.default_rng(1)
    vec = rng.uniform(-1.0, 1.0, slots)
    ct1 = cc.Encrypt(keys.publicKey, cc.MakeCKKSPackedPlaintext(vec))
    ct2 = cc.Encrypt(keys.publicKey, cc.MakeCKKSPackedPlaintext(vec[::-1].copy()))
    ptxt = cc.MakeCKKSPackedPlaintext(vec)
    prod = cc.EvalMult(ct1, ct2)  # FIXEDMANUAL: relinearised, scale^2, not rescaled

    def decrypt() -> object:
        out = cc.Decrypt(keys.secretKey, ct1)
        out.SetLength(slots)
        return out.GetRealPackedValue()

    table: dict[str, Callable[[], object]] = {
        "encrypt": lambda: cc.Encrypt(keys.publicKey, cc.MakeCKKSPackedPlaintext(vec)),
        "add": lambda: cc.EvalAdd(ct1, ct2),
        "pmul": lambda: cc.EvalMult(ct1, ptxt),
        "hmul": lambda: cc.Rescale(cc.EvalMult(ct1, ct2)),
        "rotate": lambda: cc.EvalRotate(ct1, 1),
        "rescale": lambda: cc.Rescale(prod),
        "decrypt": decrypt,
        # "ntt": openfhe-python exposes no NTT on ciphertext elements, so it is not timed.
    }
    timings = {op: _median(table[op], repeats) for op in ops if op in table}

    try:
        used_q = _q_prime_bits(ofhe, cc)
    except Exception:  # serialisation layout changed: fall back to the nominal sizes
        used_q = []
    if len(used_q) != len(q_bits):
        used_q = [q_bits[0]] + [scale_bits] * depth
    alpha = math.ceil(len(used_q) / dnum)
    digit_bits = max(sum(used_q[i:i + alpha]) for i in range(0, len(used_q), alpha))
    used_p = [AUX_BITS] * math.ceil(digit_bits / AUX_BITS)
    version = getattr(ofhe, "__version__", "?")
    description = (
        f"OpenFHE {version} (openfhe-python, CPython {sys.version_info[0]}.{sys.version_info[1]}"
        f" subprocess): CKKS N={cc.GetRingDimension()}, Q primes {used_q} bits"
        f" (log2 Q={math.log2(cc.GetModulus()):.1f}; OpenFHE uses one size for all non-base"
        f" primes), HYBRID key switching dnum={dnum}, P ~ {used_p} bits (chosen by OpenFHE),"
        f" scale 2^{scale_bits}, FIXEDMANUAL rescaling, {security}, public-key encryption"
    )
    return {"description": description, "n": cc.GetRingDimension(), "q_bits": used_q,
            "p_bits": used_p, "scale_bits": scale_bits, "timings": timings}


def main() -> int:
    """Read the request from stdin, print the JSON result as the last stdout line."""
    try:
        req = json.load(sys.stdin)
        result = run(int(req["n"]), [int(b) for b in req["q_bits"]],
                     [int(b) for b in req["p_bits"]], int(req["scale_bits"]),
                     list(req["ops"]), int(req["repeats"]))
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
