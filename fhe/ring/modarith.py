"""Vectorised modular arithmetic on uint64 residues (any array module).

Residues are ``uint64`` arrays of shape ``(limbs, N)``; moduli arrive as
column vectors ``p`` (``uint64``, shape ``(limbs, 1)``) with ``pinv = 1.0 / p``
in float64.  Every prime is below 2**51, so for ``a, b < p``:

* the exact product ``a*b`` wraps mod 2**64 in uint64 arithmetic, and
* ``floor(float(a) * float(b) * pinv)`` is within 1 of the true quotient,

so ``a*b - q*p`` (wrapping) is the remainder up to one correction of ``+-p``.
This "float-assisted Barrett" reduction runs unchanged on NumPy and CuPy.
"""
from __future__ import annotations

from typing import Any

Array = Any


def _fix_signed(r: Array, p: Array, xp: Any) -> Array:
    """Map r in [-p, 2p) (held as wrapped uint64) to [0, p)."""
    ri = r.view(xp.int64)
    pi = p.view(xp.int64)
    ri += (ri >> 63) & pi  # r < 0  -> r + p
    ri -= pi
    ri += (ri >> 63) & pi  # r >= p -> r - p
    return r


def mulmod(a: Array, b: Array, p: Array, pinv: Array, xp: Any) -> Array:
    """``a * b mod p`` elementwise (a, b in [0, p))."""
    q = (a.astype(xp.float64) * b.astype(xp.float64) * pinv).astype(xp.uint64)
    r = a * b - q * p
    return _fix_signed(r, p, xp)


def mulmod_shoup(a: Array, w: Array, w_over_p: Array, p: Array, xp: Any) -> Array:
    """``a * w mod p`` for a fixed operand ``w`` with precomputed ``w_over_p = w / p`` (float64)."""
    q = (a.astype(xp.float64) * w_over_p).astype(xp.uint64)
    r = a * w - q * p
    return _fix_signed(r, p, xp)


def addmod(a: Array, b: Array, p: Array, xp: Any) -> Array:
    """``a + b mod p`` (a, b in [0, p))."""
    r = a + b
    r -= p
    ri = r.view(xp.int64)
    ri += (ri >> 63) & p.view(xp.int64)
    return r


def submod(a: Array, b: Array, p: Array, xp: Any) -> Array:
    """``a - b mod p`` (a, b in [0, p))."""
    r = a - b
    ri = r.view(xp.int64)
    ri += (ri >> 63) & p.view(xp.int64)
    return r


def negmod(a: Array, p: Array, xp: Any) -> Array:
    """``-a mod p`` (0 stays 0)."""
    return xp.where(a == 0, a, p - a)


def reduce_wide(x: Array, p: Array, pinv: Array, xp: Any) -> Array:
    """Reduce ``x`` < 2**63 (e.g. a sum of up to 8192 residues) modulo p.

    float64 rounding of x shifts the quotient estimate by less than one unit
    (x / p < 2**43), so one signed correction suffices.
    """
    q = (x.astype(xp.float64) * pinv).astype(xp.uint64)
    return _fix_signed(x - q * p, p, xp)
