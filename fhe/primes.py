"""NTT-friendly primes and primitive roots (exact Python integers, no arrays).

A prime ``q`` supports the negacyclic NTT of size ``N`` when ``q = 1 (mod 2N)``:
then a primitive ``2N``-th root of unity ``psi`` exists modulo ``q``.
"""
from __future__ import annotations

from collections.abc import Iterable

# Deterministic Miller-Rabin bases for every n < 3.3e24 (covers all 64-bit words).
_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)


def is_prime(n: int) -> bool:
    """Deterministic primality test for ``n < 3.3e24``."""
    if n < 2:
        return False
    for p in _MR_BASES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in _MR_BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def ntt_primes_below(bits: int, n: int, count: int, exclude: Iterable[int] = ()) -> list[int]:
    """The ``count`` largest primes ``q < 2**bits`` with ``q = 1 (mod 2n)``, skipping ``exclude``."""
    step = 2 * n
    q = ((1 << bits) - 1) // step * step + 1
    taken = set(exclude)
    out: list[int] = []
    while len(out) < count:
        if q < step:
            raise ValueError(f"not enough {bits}-bit primes that are 1 mod {step}")
        if q not in taken and is_prime(q):
            out.append(q)
        q -= step
    return out


def ntt_prime_nearest(target: float, n: int, exclude: Iterable[int] = ()) -> int:
    """A prime ``q = 1 (mod 2n)`` within one lattice step ``2n`` of the nearest to ``target``."""
    step = 2 * n
    taken = set(exclude)
    base = int(round(target)) // step * step + 1
    for k in range(1 << 30):
        cands = [c for c in {base + k * step, base - k * step} if c > step and c not in taken and is_prime(c)]
        if cands:
            return min(cands, key=lambda c: abs(c - target))
    raise ValueError(f"no NTT prime found near {target}")  # pragma: no cover


def _factorize_small(m: int) -> list[int]:
    out, d = [], 2
    while d * d <= m:
        if m % d == 0:
            out.append(d)
            while m % d == 0:
                m //= d
        d += 1 if d == 2 else 2
    if m > 1:
        out.append(m)
    return out


def primitive_root_2n(q: int, n: int) -> int:
    """A primitive ``2n``-th root of unity modulo prime ``q`` (requires ``q = 1 mod 2n``).

    Returns the smallest such root obtained from the smallest generator of
    ``Z_q^*``, so the result is deterministic.
    """
    if (q - 1) % (2 * n):
        raise ValueError(f"{q} is not 1 mod {2 * n}")
    factors = _factorize_small(q - 1)
    for g in range(2, q):
        if all(pow(g, (q - 1) // f, q) != 1 for f in factors):
            psi = pow(g, (q - 1) // (2 * n), q)
            assert pow(psi, n, q) == q - 1
            return psi
    raise ValueError(f"no generator for {q}")  # pragma: no cover
