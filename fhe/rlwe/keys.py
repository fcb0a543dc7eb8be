"""Keys: secret, public, and switching keys (relinearisation, rotation, conjugation).

Client side only: :class:`KeyGenerator` holds the secret.  What a server may
receive is :class:`EvaluationKeys`, which holds switching keys and parameters
and no secret material.

Switching keys use the hybrid (dnum-digit) gadget: for digit j holding Q limbs
D_j, ``b_j = -a_j * s + e_j + [i in D_j] * P * s'`` limb by limb over Q_L and P.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..params import MIN_SPARSE_HAMMING_WEIGHT, CKKSParameters, check_sparse_secret
from ..ring import RNSRing
from . import sampling

Array = Any


@dataclass
class SecretKey:
    """The ternary secret s (client only): coefficients and NTT form over every prime."""

    coeffs: np.ndarray   # (N,) int64 in {-1, 0, 1}
    ntt: Array           # (L+1+K, N) NTT form over Q_L and P


@dataclass
class PublicKey:
    """RLWE public key (b = -a s + e, a) over Q_L, NTT form."""

    b: Array
    a: Array


@dataclass
class SwitchingKey:
    """Key switching s_from -> s: per digit j, (b_j, a_j) split into Q_L rows and P rows (NTT form)."""

    bq: list[Array]
    bp: list[Array]
    aq: list[Array]
    ap: list[Array]

    @property
    def nbytes(self) -> int:
        return int(sum(x.nbytes for part in (self.bq, self.bp, self.aq, self.ap) for x in part))


@dataclass
class SeededSwitchingKey:
    """A seed-compressed switching key: the ``b`` halves, and per digit a public 32-byte seed from which the
    uniform half ``a_j`` (NTT form, over ``q_primes`` then ``p_primes``) is regenerated on every use."""

    bq: list[Array]
    bp: list[Array]
    seeds: list[bytes]
    q_primes: tuple[int, ...]
    p_primes: tuple[int, ...]
    backend: Any = None

    def _expand(self) -> tuple[list[Array], list[Array]]:
        n = int(self.bq[0].shape[-1])
        nq = len(self.q_primes)
        aq, ap = [], []
        for sd in self.seeds:
            a = sampling.uniform_mod_from_seed(sd, self.q_primes + self.p_primes, n)
            a = self.backend.asarray(a) if self.backend is not None else a
            aq.append(a[:nq])
            ap.append(a[nq:])
        return aq, ap

    @property
    def aq(self) -> list[Array]:
        return self._expand()[0]

    @property
    def ap(self) -> list[Array]:
        return self._expand()[1]

    @property
    def nbytes(self) -> int:
        return int(sum(x.nbytes for part in (self.bq, self.bp) for x in part)) + 32 * len(self.seeds)


def key_at_level(key: "SwitchingKey | SeededSwitchingKey", params: CKKSParameters,
                 level: int) -> "SwitchingKey | SeededSwitchingKey":
    """``key`` cut to ``level``: the digits of ``level``, Q rows 0..level, every P row (what a key switch at
    ``level`` or below reads; :func:`fhe.costs.switching_key_bytes_at` bytes)."""
    dn = len(params.digits(level))
    if isinstance(key, SeededSwitchingKey):
        return SeededSwitchingKey([x[: level + 1] for x in key.bq[:dn]], list(key.bp[:dn]), list(key.seeds[:dn]),
                                  key.q_primes[: level + 1], key.p_primes, key.backend)
    return SwitchingKey([x[: level + 1] for x in key.bq[:dn]], list(key.bp[:dn]),
                        [x[: level + 1] for x in key.aq[:dn]], list(key.ap[:dn]))


@dataclass
class EvaluationKeys:
    """Everything a server needs to evaluate: parameters and switching keys. No secret.

    ``galois`` maps a Galois element g (X -> X^g) to its key; rotation by k slots
    uses g = 5^k mod 2N, conjugation g = 2N - 1.
    """

    params: CKKSParameters
    relin: SwitchingKey | None = None
    galois: dict[int, SwitchingKey] = field(default_factory=dict)
    encapsulation: "EncapsulationKeys | None" = None

    @property
    def nbytes(self) -> int:
        """Total key bytes held."""
        return ((self.relin.nbytes if self.relin else 0) + sum(k.nbytes for k in self.galois.values())
                + (self.encapsulation.nbytes if self.encapsulation else 0))

    def galois_key(self, g: int, what: str) -> SwitchingKey:
        key = self.galois.get(g % (2 * self.params.n))
        if key is None:
            raise KeyError(f"no evaluation key for {what} (Galois element {g}); generate it with "
                           "KeyGenerator.evaluation_keys(rotations=[...], conjugate=...)")
        return key


@dataclass
class GadgetKey:
    """A level-0 switching key over q_0 and the special primes ``p_idx`` with a power-of-two gadget.

    Digit j of a polynomial (signed base ``2**base_bits`` digits of its centred q_0 residue)
    multiplies ``(b[j], a[j])``, ``b_j = -a_j s_to + e_j + P 2^(j base_bits) s_from``; rows are
    q_0 then ``p_idx``, NTT form.  Small digits keep the switching noise far below one unit
    while the key's modulus stays q_0 * P (about 100 bits).
    """

    base_bits: int
    p_idx: tuple[int, ...]
    b: list[Array]
    a: list[Array]

    @property
    def nbytes(self) -> int:
        return int(sum(x.nbytes for x in self.b + self.a))


@dataclass
class EncapsulationKeys:
    """Sparse-secret encapsulation for bootstrapping (Bossuat et al. 2022), no secret inside.

    ``to_sparse`` switches a level-0 ciphertext from s to an ephemeral sparse secret s'
    (Hamming weight ``hamming_weight``); it exists only modulo q_0 * p_0 (100 bits for
    n16-boot; Lattigo's default keeps this key at Q_0 * P_0 of 121 bits with h = 32), with a
    power-of-two gadget so its noise stays tiny.  The weight has a floor on secure sets
    (:data:`fhe.params.MIN_SPARSE_HAMMING_WEIGHT`, with the estimate and its sources).
    ``to_dense`` switches back from s' to s at the top level (an ordinary key over Q_L and
    P: s' is its message, under the dense s).  ModRaise in between sees the small s', so the
    overflow q_0 * I(X) it adds has |I| of about sqrt(h / 12) instead of sqrt(N / 18).
    """

    hamming_weight: int
    to_sparse: GadgetKey
    to_dense: SwitchingKey

    @property
    def nbytes(self) -> int:
        return self.to_sparse.nbytes + self.to_dense.nbytes


def galois_element(params: CKKSParameters, steps: int) -> int:
    """Galois element of a left rotation by ``steps`` slots: 5^steps mod 2N."""
    return pow(5, steps % params.slots, 2 * params.n)


def conjugation_element(params: CKKSParameters) -> int:
    return 2 * params.n - 1


class KeyGenerator:
    """Generates a fresh secret from the OS CSPRNG and keys derived from it (client side)."""

    def __init__(self, params: CKKSParameters, ring: RNSRing) -> None:
        self.params = params
        self.ring = ring
        self._all = tuple(range(len(params.primes)))
        coeffs = sampling.ternary(params.n)
        s_rns = ring.backend.asarray(sampling.signed_to_rns(coeffs, params.primes))
        self.secret_key = SecretKey(coeffs=coeffs, ntt=ring.ntt(s_rns, self._all))

    def _small_ntt(self, coeffs: np.ndarray, idx: tuple[int, ...]) -> Array:
        rns = self.ring.backend.asarray(sampling.signed_to_rns(coeffs, [self.params.primes[i] for i in idx]))
        return self.ring.ntt(rns, idx)

    def _uniform(self, idx: tuple[int, ...]) -> Array:
        return self.ring.backend.asarray(sampling.uniform_mod([self.params.primes[i] for i in idx], self.params.n))

    def public_key(self) -> PublicKey:
        """pk = (-a s + e, a) over Q_L."""
        q = self.params.q_indices(self.params.max_level)
        a = self._uniform(q)
        e = self._small_ntt(sampling.gaussian(self.params.n, self.params.sigma), q)
        s = self.secret_key.ntt[: len(q)]
        b = self.ring.sub(e, self.ring.mul(a, s, q), q)
        return PublicKey(b=b, a=a)

    def switching_key(self, s_from_q: Array, target: Array | None = None, level: int | None = None,
                      p_idx: tuple[int, ...] | None = None, seeded: bool = False) -> SwitchingKey:
        """Key from secret ``s_from`` (NTT form, rows q_0..q_level) to ``target`` (default: this secret).

        ``level`` (default top) and ``p_idx`` (default every special prime) bound the modulus the key
        lives over; ``target`` is in NTT form over those Q rows followed by the ``p_idx`` rows.
        """
        p = self.params
        ring = self.ring
        level = p.max_level if level is None else level
        p_idx = p.p_indices if p_idx is None else tuple(p_idx)
        q_idx = p.q_indices(level)
        idx = q_idx + p_idx
        nq = len(q_idx)
        s = self.secret_key.ntt[list(idx)] if target is None else target
        p_prod = math.prod(p.primes[i] for i in p_idx)
        p_mod_q = [p_prod % q for q in p.q_primes]
        sk = SwitchingKey([], [], [], [])
        seeds = []
        for digit in p.digits(level):
            if seeded:
                seeds.append(sampling.seed())
                a = self.ring.backend.asarray(sampling.uniform_mod_from_seed(seeds[-1], [p.primes[i] for i in idx],
                                                                              p.n))
            else:
                a = self._uniform(idx)
            e = self._small_ntt(sampling.gaussian(p.n, p.sigma), idx)
            b = ring.sub(e, ring.mul(a, s, idx), idx)
            d = list(digit)
            gadget = ring.mul_scalar(s_from_q[d], [p_mod_q[i] for i in d], tuple(d))
            b[d] = ring.add(b[d], gadget, tuple(d))
            sk.bq.append(b[:nq])
            sk.bp.append(b[nq:])
            sk.aq.append(a[:nq])
            sk.ap.append(a[nq:])
        if seeded:
            return SeededSwitchingKey(sk.bq, sk.bp, seeds, tuple(p.primes[i] for i in q_idx),
                                      tuple(p.primes[i] for i in p_idx), self.ring.backend)
        return sk

    def gadget_key(self, s_from_q0: Array, target: Array, p_idx: tuple[int, ...], base_bits: int) -> GadgetKey:
        """Level-0 key s_from -> target over q_0 and ``p_idx`` with base-``2**base_bits`` digits."""
        p, ring = self.params, self.ring
        idx = (0,) + tuple(p_idx)
        q0 = p.q_primes[0]
        p_prod = math.prod(p.primes[i] for i in p_idx)
        digits = -(-(q0.bit_length() + 1) // base_bits)
        key = GadgetKey(base_bits, tuple(p_idx), [], [])
        for j in range(digits):
            a = self._uniform(idx)
            e = self._small_ntt(sampling.gaussian(p.n, p.sigma), idx)
            b = ring.sub(e, ring.mul(a, target, idx), idx)
            b[:1] = ring.add(b[:1], ring.mul_scalar(s_from_q0, [p_prod * (1 << (j * base_bits)) % q0], (0,)), (0,))
            key.b.append(b)
            key.a.append(a)
        return key

    def encapsulation_keys(self, hamming_weight: int = MIN_SPARSE_HAMMING_WEIGHT,
                           base_bits: int = 25) -> EncapsulationKeys:
        """Fresh ephemeral sparse secret s' (discarded here) and the two keys bootstrapping needs.

        Raises :class:`fhe.params.SecurityError` for a weight below the minimum on a secure set
        (:func:`fhe.params.check_sparse_secret`): the ``to_sparse`` key is what the server receives.
        """
        p = self.params
        check_sparse_secret(p, hamming_weight)
        p_idx = p.p_indices[:1]
        sparse = sampling.sparse_ternary(p.n, hamming_weight)
        low = p.q_indices(0) + p_idx
        to_sparse = self.gadget_key(self.secret_key.ntt[:1], self._small_ntt(sparse, low), p_idx, base_bits)
        to_dense = self.switching_key(self._small_ntt(sparse, p.q_indices(p.max_level)))
        return EncapsulationKeys(hamming_weight, to_sparse, to_dense)

    def relinearization_key(self, seeded: bool = False) -> SwitchingKey:
        q = self.params.q_indices(self.params.max_level)
        s = self.secret_key.ntt[: len(q)]
        return self.switching_key(self.ring.mul(s, s, q), seeded=seeded)

    def galois_key(self, g: int, seeded: bool = False) -> SwitchingKey:
        """Key for X -> X^g: switches from s(X^g) back to s (``seeded``: seed-compressed)."""
        q = self.params.q_indices(self.params.max_level)
        s = self.secret_key.ntt[: len(q)]
        return self.switching_key(self.ring.automorphism_ntt(s, g), seeded=seeded)

    def evaluation_keys(self, rotations: list[int] | tuple[int, ...] = (), conjugate: bool = False,
                        relin: bool = True, encapsulation: bool = False,
                        hamming_weight: int = MIN_SPARSE_HAMMING_WEIGHT, seeded: bool = False) -> EvaluationKeys:
        """The server's key bundle: relinearisation key, rotation keys for ``rotations`` (slots), conjugation,
        and (``encapsulation``) bootstrapping's sparse-secret encapsulation keys; ``seeded``: the switching keys
        seed-compressed (:class:`SeededSwitchingKey`)."""
        ek = EvaluationKeys(params=self.params, relin=self.relinearization_key(seeded) if relin else None)
        if encapsulation:
            ek.encapsulation = self.encapsulation_keys(hamming_weight)
        for r in rotations:
            g = galois_element(self.params, r)
            if g not in ek.galois and r % self.params.slots:
                ek.galois[g] = self.galois_key(g, seeded)
        if conjugate:
            g = conjugation_element(self.params)
            ek.galois[g] = self.galois_key(g, seeded)
        return ek
