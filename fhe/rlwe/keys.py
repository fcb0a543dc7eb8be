"""Keys: secret, public, and switching keys (relinearisation, rotation, conjugation).

Client side only: :class:`KeyGenerator` holds the secret.  What a server may
receive is :class:`EvaluationKeys`, which holds switching keys and parameters
and no secret material.

Switching keys use the hybrid (dnum-digit) gadget: for digit j holding Q limbs
D_j, ``b_j = -a_j * s + e_j + [i in D_j] * P * s'`` limb by limb over Q_L and P.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..params import CKKSParameters
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
class EvaluationKeys:
    """Everything a server needs to evaluate: parameters and switching keys. No secret.

    ``galois`` maps a Galois element g (X -> X^g) to its key; rotation by k slots
    uses g = 5^k mod 2N, conjugation g = 2N - 1.
    """

    params: CKKSParameters
    relin: SwitchingKey | None = None
    galois: dict[int, SwitchingKey] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Total key bytes held."""
        return (self.relin.nbytes if self.relin else 0) + sum(k.nbytes for k in self.galois.values())

    def galois_key(self, g: int, what: str) -> SwitchingKey:
        key = self.galois.get(g % (2 * self.params.n))
        if key is None:
            raise KeyError(f"no evaluation key for {what} (Galois element {g}); generate it with "
                           "KeyGenerator.evaluation_keys(rotations=[...], conjugate=...)")
        return key


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

    def switching_key(self, s_from_q: Array) -> SwitchingKey:
        """Key from secret ``s_from`` (NTT form over Q_L) to this generator's secret."""
        p = self.params
        ring = self.ring
        idx = self._all
        nq = p.q_count
        s = self.secret_key.ntt
        p_mod_q = [p.p_product % q for q in p.q_primes]
        sk = SwitchingKey([], [], [], [])
        for digit in p.digits(p.max_level):
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
        return sk

    def relinearization_key(self) -> SwitchingKey:
        q = self.params.q_indices(self.params.max_level)
        s = self.secret_key.ntt[: len(q)]
        return self.switching_key(self.ring.mul(s, s, q))

    def galois_key(self, g: int) -> SwitchingKey:
        """Key for X -> X^g: switches from s(X^g) back to s."""
        q = self.params.q_indices(self.params.max_level)
        s = self.secret_key.ntt[: len(q)]
        return self.switching_key(self.ring.automorphism_ntt(s, g))

    def evaluation_keys(self, rotations: list[int] | tuple[int, ...] = (), conjugate: bool = False,
                        relin: bool = True) -> EvaluationKeys:
        """The server's key bundle: relinearisation key, rotation keys for ``rotations`` (slots), conjugation."""
        ek = EvaluationKeys(params=self.params, relin=self.relinearization_key() if relin else None)
        for r in rotations:
            g = galois_element(self.params, r)
            if g not in ek.galois and r % self.params.slots:
                ek.galois[g] = self.galois_key(g)
        if conjugate:
            g = conjugation_element(self.params)
            ek.galois[g] = self.galois_key(g)
        return ek
