"""Client side: encryption (public or secret key) and decryption. Holds key material."""
from __future__ import annotations

from typing import Any

from ..rlwe import sampling
from ..rlwe.keys import PublicKey, SecretKey
from .context import CKKSContext, Ciphertext, Plaintext
from .encoder import Encoder


class Encryptor:
    """Encrypts plaintexts under a public key (or the secret key, if given instead)."""

    def __init__(self, ctx: CKKSContext, key: PublicKey | SecretKey) -> None:
        self.ctx = ctx
        self.key = key

    def _small(self, coeffs: Any, idx: tuple[int, ...]) -> Any:
        rns = self.ctx.backend.asarray(sampling.signed_to_rns(coeffs, [self.ctx.params.primes[i] for i in idx]))
        return self.ctx.ring.ntt(rns, idx)

    def encrypt(self, pt: Plaintext) -> Ciphertext:
        """Fresh encryption of ``pt`` at the plaintext's level and scale."""
        p, ring = self.ctx.params, self.ctx.ring
        idx = p.q_indices(pt.level)
        k = len(idx)
        if isinstance(self.key, PublicKey):
            v = self._small(sampling.ternary(p.n), idx)
            e0 = self._small(sampling.gaussian(p.n, p.sigma), idx)
            e1 = self._small(sampling.gaussian(p.n, p.sigma), idx)
            c0 = ring.add(ring.add(ring.mul(self.key.b[:k], v, idx), e0, idx), pt.data, idx)
            c1 = ring.add(ring.mul(self.key.a[:k], v, idx), e1, idx)
        else:
            a = self.ctx.backend.asarray(sampling.uniform_mod([p.primes[i] for i in idx], p.n))
            e = self._small(sampling.gaussian(p.n, p.sigma), idx)
            c0 = ring.add(ring.sub(e, ring.mul(a, self.key.ntt[:k], idx), idx), pt.data, idx)
            c1 = a
        return Ciphertext([c0, c1], pt.level, pt.scale)


class Decryptor:
    """Decrypts with the secret key (client side only)."""

    def __init__(self, ctx: CKKSContext, secret_key: SecretKey) -> None:
        self.ctx = ctx
        self.sk = secret_key

    def decrypt(self, ct: Ciphertext) -> Plaintext:
        ring = self.ctx.ring
        idx = self.ctx.params.q_indices(ct.level)
        k = len(idx)
        s = self.sk.ntt[:k]
        acc = ct.parts[-1]
        for part in reversed(ct.parts[:-1]):  # Horner: c0 + s (c1 + s c2)
            acc = ring.add(ring.mul(acc, s, idx), part, idx)
        return Plaintext(acc, ct.level, ct.scale)


class Client:
    """Convenience bundle for the key owner: keys, encoder, encryptor, decryptor.

    ``evaluation_keys`` is what may be sent to a server; the secret stays here.
    """

    def __init__(self, ctx: CKKSContext, rotations: tuple[int, ...] | list[int] = (), conjugate: bool = False,
                 encapsulation: bool = False, hamming_weight: int | None = None, seeded_keys: bool = False) -> None:
        """``seeded_keys``: seed-compressed switching keys.  ``hamming_weight``: weight of bootstrapping's ephemeral sparse secret (``encapsulation``; default
        :data:`fhe.params.MIN_SPARSE_HAMMING_WEIGHT`, the floor on secure sets)."""
        from ..params import MIN_SPARSE_HAMMING_WEIGHT
        from ..rlwe.keys import KeyGenerator

        self.ctx = ctx
        self.keygen = KeyGenerator(ctx.params, ctx.ring)
        self.public_key = self.keygen.public_key()
        h = MIN_SPARSE_HAMMING_WEIGHT if hamming_weight is None else hamming_weight
        self.evaluation_keys = self.keygen.evaluation_keys(rotations=rotations, conjugate=conjugate,
                                                           encapsulation=encapsulation, hamming_weight=h,
                                                           seeded=seeded_keys)
        self.encoder = Encoder(ctx)
        self.encryptor = Encryptor(ctx, self.public_key)
        self.decryptor = Decryptor(ctx, self.keygen.secret_key)

    def encrypt(self, values: Any, level: int | None = None) -> Ciphertext:
        """Encode and encrypt up to N/2 values."""
        return self.encryptor.encrypt(self.encoder.encode(values, level=level))

    def decrypt(self, ct: Ciphertext) -> Any:
        """Decrypt and decode to N/2 complex slots (host NumPy array)."""
        return self.ctx.backend.to_host(self.encoder.decode(self.decryptor.decrypt(ct)))
