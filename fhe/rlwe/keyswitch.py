"""Hybrid key switching as separately callable steps (Han-Ki / Lattigo layout).

For a polynomial c at level l (Q limbs q_0..q_l, NTT form) and a switching key:

1. ``mod_up``: INTT, then for each digit D_j base-convert its limbs to every
   other limb of Q_l and to P, NTT -> one extended polynomial per digit over
   Q_l and P.
2. ``inner_product``: sum_j ext_j * (b_j, a_j) over Q_l and P.
3. ``mod_down``: (x - BaseConv_{P->Q_l}([x]_P)) * P^{-1} on Q_l, for both halves.

Every step takes the limbs it works on explicitly, so a placement can run any
device's share; :func:`key_switch` chains them for one device holding all.
``p_idx`` (default: every special prime) lets a key live over a subset of P, as
bootstrapping's level-0 dense-to-sparse key does (modulus q_0 * p_0 only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..params import CKKSParameters
from ..ring import RNSRing
from .keys import GadgetKey, SwitchingKey

Array = Any


@dataclass
class Extended:
    """One digit after ModUp: limbs over Q_l (``q``) and over P (``p``), NTT form."""

    q: Array
    p: Array


def mod_up_digit(ring: RNSRing, params: CKKSParameters, c_coeff_digit: Array, c_ntt_digit: Array,
                 digit: tuple[int, ...], level: int, p_idx: tuple[int, ...] | None = None) -> Extended:
    """Extend one digit (its limbs in coefficient and NTT form) to Q_l and P (NTT form)."""
    q_idx = params.q_indices(level)
    others = tuple(i for i in q_idx if i not in digit)
    target = others + (params.p_indices if p_idx is None else p_idx)
    ext = ring.ntt(ring.base_convert(c_coeff_digit, digit, target), target)
    xp = ring.xp
    out_q = xp.empty((level + 1, params.n), dtype=xp.uint64)
    out_q[list(digit)] = c_ntt_digit
    if others:
        out_q[list(others)] = ext[: len(others)]
    return Extended(q=out_q, p=ext[len(others):])


def mod_up(ring: RNSRing, params: CKKSParameters, c_ntt: Array, level: int,
           p_idx: tuple[int, ...] | None = None) -> list[Extended]:
    """Decompose c (NTT form, level l) into its extended digits: one INTT, dnum(l) base conversions."""
    q_idx = params.q_indices(level)
    coeff = ring.intt(c_ntt, q_idx)
    return [mod_up_digit(ring, params, coeff[list(d)], c_ntt[list(d)], d, level, p_idx) for d in params.digits(level)]


def inner_product(ring: RNSRing, params: CKKSParameters, exts: list[Extended], key: SwitchingKey,
                  level: int, p_idx: tuple[int, ...] | None = None) -> tuple[Extended, Extended]:
    """(sum_j ext_j * b_j, sum_j ext_j * a_j) over Q_l and P."""
    q_idx = params.q_indices(level)
    p_idx = params.p_indices if p_idx is None else p_idx
    out = []
    for kq, kp in ((key.bq, key.bp), (key.aq, key.ap)):
        acc_q = acc_p = None
        for j, e in enumerate(exts):
            if acc_q is None:
                acc_q = ring.mul(e.q, kq[j][: level + 1], q_idx)
                acc_p = ring.mul(e.p, kp[j], p_idx)
            else:
                acc_q = ring.mac(acc_q, e.q, kq[j][: level + 1], q_idx)
                acc_p = ring.mac(acc_p, e.p, kp[j], p_idx)
        out.append(Extended(q=acc_q, p=acc_p))
    return out[0], out[1]


def mod_down(ring: RNSRing, params: CKKSParameters, x: Extended, level: int,
             p_idx: tuple[int, ...] | None = None) -> Array:
    """Divide an (Q_l, P) polynomial by P with rounding: result over Q_l, NTT form."""
    q_idx = params.q_indices(level)
    p_prod = params.p_product
    if p_idx is None:
        p_idx = params.p_indices
    else:
        p_prod = math.prod(params.primes[i] for i in p_idx)
    xp_coeff = ring.intt(x.p, p_idx)
    conv = ring.ntt(ring.base_convert(xp_coeff, p_idx, q_idx), q_idx)
    p_inv = [pow(p_prod % q, -1, q) for q in params.q_primes[: level + 1]]
    return ring.mul_scalar(ring.sub(x.q, conv, q_idx), p_inv, q_idx)


def key_switch(ring: RNSRing, params: CKKSParameters, c_ntt: Array, key: SwitchingKey,
               level: int, p_idx: tuple[int, ...] | None = None) -> tuple[Array, Array]:
    """Switch polynomial c (under s_from) to a pair (d0, d1) with d0 + d1 s = c s_from + small."""
    exts = mod_up(ring, params, c_ntt, level, p_idx)
    b, a = inner_product(ring, params, exts, key, level, p_idx)
    return mod_down(ring, params, b, level, p_idx), mod_down(ring, params, a, level, p_idx)


def permute_extended(ring: RNSRing, exts: list[Extended], g: int) -> list[Extended]:
    """Apply X -> X^g to extended digits (NTT form: a slot permutation), for hoisted rotations."""
    return [Extended(q=ring.automorphism_ntt(e.q, g), p=ring.automorphism_ntt(e.p, g)) for e in exts]


def gadget_key_switch(ring: RNSRing, params: CKKSParameters, c_ntt: Array, key: GadgetKey) -> tuple[Array, Array]:
    """Switch a level-0 polynomial with a :class:`GadgetKey`: signed base-2^w digits of its centred
    q_0 residue, inner product over q_0 and the key's special primes, ModDown -> (d0, d1) on q_0."""
    xp = ring.xp
    idx = (0,) + key.p_idx
    q0 = params.q_primes[0]
    c = ring.intt(c_ntt[:1], (0,)).astype(xp.int64)[0]
    c = xp.where(c > q0 // 2, c - q0, c)
    mods = xp.asarray(np.array([params.primes[i] for i in idx], dtype=np.int64).reshape(-1, 1))
    half, base = 1 << (key.base_bits - 1), 1 << key.base_bits
    acc_b = acc_a = None
    for b_j, a_j in zip(key.b, key.a):
        d = ((c + half) % base) - half                      # signed digit in [-2^(w-1), 2^(w-1))
        c = (c - d) // base
        dn = ring.ntt(xp.mod(d[None, :], mods).astype(xp.uint64), idx)
        if acc_b is None:
            acc_b, acc_a = ring.mul(dn, b_j, idx), ring.mul(dn, a_j, idx)
        else:
            acc_b, acc_a = ring.mac(acc_b, dn, b_j, idx), ring.mac(acc_a, dn, a_j, idx)
    return tuple(mod_down(ring, params, Extended(q=x[:1], p=x[1:]), 0, key.p_idx) for x in (acc_b, acc_a))
