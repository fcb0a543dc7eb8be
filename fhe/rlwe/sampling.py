"""Randomness for keys and encryption, from the operating system's CSPRNG.

Every sample comes from ``os.urandom`` (the kernel's cryptographically secure
generator); nothing secret is seeded or reproducible by design.  The one exception is public:
:func:`uniform_mod_from_seed` expands a CSPRNG seed into the uniform half of a seed-compressed key.  Sampling happens
on the host and the result is copied to the backend once.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np


def _u64(count: int) -> np.ndarray:
    return np.frombuffer(os.urandom(8 * count), dtype=np.uint64).copy()


def uniform_mod(primes: Sequence[int], n: int) -> np.ndarray:
    """Uniform residues, shape ``(len(primes), n)``, limb i uniform in [0, primes[i]) (rejection sampling)."""
    out = np.empty((len(primes), n), dtype=np.uint64)
    for row, q in enumerate(primes):
        mask = np.uint64((1 << int(q).bit_length()) - 1)
        filled = 0
        while filled < n:
            cand = _u64(2 * (n - filled)) & mask
            cand = cand[cand < np.uint64(q)][: n - filled]
            out[row, filled: filled + cand.size] = cand
            filled += cand.size
    return out


def uniform_mod_from_seed(seed: bytes, primes: Sequence[int], n: int) -> np.ndarray:
    """Uniform residues expanded from a public ``seed`` (SHAKE-256), shape ``(len(primes), n)``.

    Row i is a function of ``(seed, primes[i])`` only (rejection sampling on its own XOF stream; the primes
    of one key are distinct), so a key cut to fewer limbs expands to the same rows for the primes it keeps.  Used for the uniform
    half ``a`` of seed-compressed switching keys: the seed comes from the OS CSPRNG and is public, as
    ``a`` is (the same technique as SEAL's serialised keys)."""
    out = np.empty((len(primes), n), dtype=np.uint64)
    for row, q in enumerate(primes):
        mask = np.uint64((1 << int(q).bit_length()) - 1)
        filled, block = 0, 0
        while filled < n:
            xof = hashlib.shake_256(seed + int(q).to_bytes(8, "little") + block.to_bytes(4, "little"))
            cand = np.frombuffer(xof.digest(8 * 2 * (n - filled)), dtype=np.uint64) & mask
            cand = cand[cand < np.uint64(q)][: n - filled]
            out[row, filled: filled + cand.size] = cand
            filled += cand.size
            block += 1
    return out


def seed() -> bytes:
    """A fresh 32-byte seed from the OS CSPRNG."""
    return os.urandom(32)


def ternary(n: int) -> np.ndarray:
    """Uniform ternary coefficients in {-1, 0, 1}, shape ``(n,)``, int64 (rejection on bytes < 255)."""
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        b = np.frombuffer(os.urandom(2 * (n - filled)), dtype=np.uint8)
        b = b[b < 255][: n - filled]
        out[filled: filled + b.size] = (b % 3).astype(np.int64) - 1
        filled += b.size
    return out


def gaussian(n: int, sigma: float, bound_sigmas: float = 6.0) -> np.ndarray:
    """Rounded Gaussian coefficients (std ``sigma``, clipped at ``bound_sigmas * sigma``), int64 shape ``(n,)``."""
    u = (_u64(2 * n) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    u1, u2 = u[:n], u[n:]
    z = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
    z = np.clip(z * sigma, -bound_sigmas * sigma, bound_sigmas * sigma)
    return np.rint(z).astype(np.int64)


def signed_to_rns(x: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """Reduce small signed integers (int64, shape ``(n,)``) into residues, shape ``(len(primes), n)``."""
    q = np.array(primes, dtype=np.int64).reshape(-1, 1)
    return np.mod(x.reshape(1, -1), q).astype(np.uint64)


def sparse_ternary(n: int, h: int) -> np.ndarray:
    """Ternary coefficients with exactly ``h`` non-zeros (+-1, uniform positions and signs), int64 ``(n,)``.

    Positions come from a partial Fisher-Yates shuffle driven by :mod:`secrets` (the OS CSPRNG).
    """
    import secrets

    if not 1 <= h <= n:
        raise ValueError(f"Hamming weight h={h} must be between 1 and N={n}")
    pos = list(range(n))
    for i in range(h):
        j = i + secrets.randbelow(n - i)
        pos[i], pos[j] = pos[j], pos[i]
    out = np.zeros(n, dtype=np.int64)
    signs = np.frombuffer(os.urandom(h), dtype=np.uint8) & 1
    out[np.array(pos[:h])] = 1 - 2 * signs.astype(np.int64)
    return out
