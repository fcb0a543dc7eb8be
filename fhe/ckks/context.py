"""A CKKS context: parameters + the ring tables on one backend.  Public: holds no key."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..backend import Backend, get_backend
from ..params import CKKSParameters, preset
from ..ring import RNSRing

Array = Any


@dataclass
class Plaintext:
    """An encoded message: NTT-form limbs q_0..q_level, shape ``(level+1, N)``, at ``scale``."""

    data: Array
    level: int
    scale: float


@dataclass
class Ciphertext:
    """A CKKS ciphertext: 2 (or 3 before relinearisation) NTT-form polynomials at ``level``.

    Each part has shape ``(level+1, N)`` (uint64); it decrypts to
    ``sum_i parts[i] * s^i`` = message * ``scale`` + noise.
    """

    parts: list[Array]
    level: int
    scale: float

    @property
    def nbytes(self) -> int:
        return int(sum(p.nbytes for p in self.parts))

    def copy(self) -> "Ciphertext":
        return Ciphertext([p.copy() for p in self.parts], self.level, self.scale)


@dataclass
class CKKSContext:
    """Parameters and the :class:`RNSRing` over all of their primes on ``backend``."""

    params: CKKSParameters
    backend: Backend = field(default_factory=Backend)

    def __post_init__(self) -> None:
        self.ring = RNSRing(self.params.n, self.params.primes, self.backend)

    @property
    def xp(self) -> Any:
        return self.backend.xp

    @classmethod
    def from_preset(cls, name: str, backend: str = "numpy", allow_insecure: bool = False) -> "CKKSContext":
        """Context for a named preset (``toy-*`` sets need ``allow_insecure``)."""
        return cls(preset(name, allow_insecure=allow_insecure), get_backend(backend))
