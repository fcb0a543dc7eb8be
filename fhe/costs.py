"""Bytes and modular operations of every kernel and of the operations built from them.

One source of truth: the planner (aegis/) and the simulator (sim/) cost
operations with these functions, and tests check them against what the
kernels really read and write (:func:`fhe.ring.counters.count_kernels`).

Units: bytes (64-bit words, ``WORD_BYTES`` = 8 per residue), modular
operations (one modular multiply or add counts as one), limbs = rows of N
residues.  ``n`` is the ring degree N.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .params import WORD_BYTES, CKKSParameters


@dataclass(frozen=True)
class Cost:
    """Work of a kernel or operation: bytes read, bytes written, modular operations, kernel calls."""

    bytes_read: int = 0
    bytes_written: int = 0
    mod_ops: int = 0
    calls: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.bytes_read + other.bytes_read, self.bytes_written + other.bytes_written,
                    self.mod_ops + other.mod_ops, self.calls + other.calls)

    def __mul__(self, k: int) -> "Cost":
        return Cost(self.bytes_read * k, self.bytes_written * k, self.mod_ops * k, self.calls * k)

    __rmul__ = __mul__

    @property
    def bytes_moved(self) -> int:
        return self.bytes_read + self.bytes_written


def limb_bytes(n: int) -> int:
    """Bytes of one limb of one polynomial."""
    return n * WORD_BYTES


def poly_bytes(n: int, limbs: int) -> int:
    return limbs * limb_bytes(n)


def ciphertext_bytes(n: int, limbs: int, parts: int = 2) -> int:
    """Bytes of a ciphertext with ``limbs`` Q limbs (level + 1)."""
    return parts * poly_bytes(n, limbs)


def plaintext_bytes(n: int, limbs: int) -> int:
    return poly_bytes(n, limbs)


def switching_key_bytes(params: CKKSParameters) -> int:
    """One switching key (relinearisation or one rotation): dnum x 2 x (L+1+K) limbs."""
    return params.dnum * 2 * poly_bytes(params.n, params.q_count + params.p_count)


#: bytes of the public seed a seed-compressed switching key keeps per digit (the uniform half ``a_j`` is
#: regenerated from it with SHAKE-256: :func:`fhe.rlwe.sampling.uniform_mod_from_seed`)
KEY_SEED_BYTES = 32


def switching_key_bytes_at(params: CKKSParameters, level: int, seeded: bool = False) -> int:
    """One switching key cut to ``level`` (the digits of ``level``, Q rows 0..level, every P row), bytes.

    Whole: ``2 x digits(level) x (level+1+K)`` limbs.  Seed-compressed: the ``b`` half plus a
    ``KEY_SEED_BYTES`` seed per digit (``a`` is expanded from the seed where the key is used)."""
    dn = len(params.digits(level))
    half = dn * poly_bytes(params.n, level + 1 + params.p_count)
    return half + dn * KEY_SEED_BYTES if seeded else 2 * half


def key_expand(params: CKKSParameters, level: int) -> Cost:
    """Regenerating the uniform half of one seed-compressed key at ``level`` on the device: the XOF output is
    reduced into ``digits x (level+1+K)`` limbs and written (one kernel; the inner product then reads it as it
    reads a stored key)."""
    words = len(params.digits(level)) * (level + 1 + params.p_count) * params.n
    return Cost(0, words * WORD_BYTES, words, 1)


# ---- kernels (match fhe.ring.RNSRing one to one) ------------------------------------------
def _elementwise(n: int, limbs: int, operands: int, ops_per: int) -> Cost:
    b = poly_bytes(n, limbs)
    return Cost(operands * b, b, ops_per * n * limbs, 1)


def add(n: int, limbs: int) -> Cost:
    return _elementwise(n, limbs, 2, 1)


sub = add


def neg(n: int, limbs: int) -> Cost:
    return _elementwise(n, limbs, 1, 1)


def mul(n: int, limbs: int) -> Cost:
    return _elementwise(n, limbs, 2, 1)


def mac(n: int, limbs: int) -> Cost:
    return _elementwise(n, limbs, 3, 2)


def mul_scalar(n: int, limbs: int) -> Cost:
    return _elementwise(n, limbs, 1, 1)


def automorphism(n: int, limbs: int) -> Cost:
    return _elementwise(n, limbs, 1, 0)


def ntt(n: int, limbs: int) -> Cost:
    """Forward NTT: (N/2) log2 N butterflies per limb (one modular multiply, two adds each)."""
    b = poly_bytes(n, limbs)
    return Cost(b, b, limbs * (n // 2) * int(math.log2(n)) * 3, 1)


def intt(n: int, limbs: int) -> Cost:
    """Inverse NTT: the butterflies plus the N^{-1} scaling."""
    c = ntt(n, limbs)
    return Cost(c.bytes_read, c.bytes_written, c.mod_ops + n * limbs, 1)


def base_convert(n: int, src: int, dst: int) -> Cost:
    """Fast base conversion from ``src`` limbs to ``dst`` limbs (coefficient form)."""
    return Cost(poly_bytes(n, src), poly_bytes(n, dst), n * src + 2 * n * src * dst, 1)


def rescale(n: int, limbs: int) -> Cost:
    """The rescale kernel itself (its INTT/NTT/sub/mul_scalar are costed separately)."""
    return Cost(poly_bytes(n, limbs), poly_bytes(n, limbs - 1), 2 * n * (limbs - 1), 1)


def rescale_total(n: int, limbs: int) -> Cost:
    """One polynomial's rescale with the kernels it calls: INTT of 1 limb, NTT and two passes on limbs-1."""
    k = limbs - 1
    return rescale(n, limbs) + intt(n, 1) + ntt(n, k) + sub(n, k) + mul_scalar(n, k)


# ---- key switching (fhe.rlwe.keyswitch) ---------------------------------------------------
def mod_up(params: CKKSParameters, level: int) -> Cost:
    """INTT of the input, then per digit: base conversion to the other limbs of Q_l and P, NTT."""
    n, l1, k = params.n, level + 1, params.p_count
    c = intt(n, l1)
    for d in params.digits(level):
        tgt = l1 - len(d) + k
        c = c + base_convert(n, len(d), tgt) + ntt(n, tgt)
    return c


def inner_product(params: CKKSParameters, level: int) -> Cost:
    """sum_j ext_j * (b_j, a_j) over Q_l and P: per half, one mul and (digits-1) mac on each of Q_l, P."""
    n, l1, k = params.n, level + 1, params.p_count
    dn = len(params.digits(level))
    half = mul(n, l1) + mul(n, k) + (mac(n, l1) + mac(n, k)) * (dn - 1)
    return half * 2


def mod_down(params: CKKSParameters, level: int) -> Cost:
    """One polynomial: INTT of P limbs, conversion P -> Q_l, NTT, subtract, multiply by P^{-1}."""
    n, l1, k = params.n, level + 1, params.p_count
    return intt(n, k) + base_convert(n, k, l1) + ntt(n, l1) + sub(n, l1) + mul_scalar(n, l1)


def key_switch(params: CKKSParameters, level: int) -> Cost:
    """ModUp + inner product + two ModDowns."""
    return mod_up(params, level) + inner_product(params, level) + mod_down(params, level) * 2


# ---- CKKS operations (fhe.ckks.Evaluator) -------------------------------------------------
def hmul(params: CKKSParameters, level: int) -> Cost:
    """Multiply + relinearise + rescale at ``level``."""
    n, l1 = params.n, level + 1
    tensor = mul(n, l1) * 3 + mac(n, l1)
    relin = key_switch(params, level) + add(n, l1) * 2
    return tensor + relin + rescale_total(n, l1) * 2


def pmul(params: CKKSParameters, level: int) -> Cost:
    """Ciphertext x plaintext (no rescale)."""
    return mul(params.n, level + 1) * 2


def rotate(params: CKKSParameters, level: int) -> Cost:
    """One rotation: automorphism of both parts, key switch of c1, one add."""
    n, l1 = params.n, level + 1
    return automorphism(n, l1) * 2 + key_switch(params, level) + add(n, l1)


def hoisted_rotation_each(params: CKKSParameters, level: int) -> Cost:
    """The per-rotation part of a hoisted group: permute the extended digits, inner product, ModDown x2."""
    n, l1, k = params.n, level + 1, params.p_count
    dn = len(params.digits(level))
    return (automorphism(n, l1) + automorphism(n, k)) * dn + inner_product(params, level) \
        + mod_down(params, level) * 2 + automorphism(n, l1) + add(n, l1)


def hoisted_rotations(params: CKKSParameters, level: int, count: int) -> Cost:
    """``count`` rotations of one ciphertext sharing one ModUp."""
    return mod_up(params, level) + hoisted_rotation_each(params, level) * count
