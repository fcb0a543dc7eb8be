"""CKKS parameter sets, their 128-bit security check, and named presets.

Word size: every residue is stored in a 64-bit word (``uint64``) and every
prime is below ``2**MAX_PRIME_BITS`` (50 bits).  Products are reduced with a
float64-assisted Barrett step (see :mod:`fhe.ring.modarith`), which is exact
for primes below 2**51; this keeps NumPy and CuPy on one code path.  One limb
of one polynomial therefore takes ``8 * N`` bytes (512 KiB at N = 2**16).

Security: the HomomorphicEncryption.org standard (ternary secret, error
sigma = 3.2, 128-bit classical) bounds log2(Q*P) per ring degree; see
:data:`MAX_LOG_QP_128`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

from .primes import ntt_prime_nearest, ntt_primes_below

#: Largest log2(QP) for 128-bit classical security with a uniform ternary secret
#: (HomomorphicEncryption.org standard, Table 1; N = 2**16 as used by Lattigo's
#: default set, log QP = 1761, rounded down here).
MAX_LOG_QP_128: dict[int, int] = {
    1 << 10: 27,
    1 << 11: 54,
    1 << 12: 109,
    1 << 13: 218,
    1 << 14: 438,
    1 << 15: 881,
    1 << 16: 1760,
}

MAX_PRIME_BITS = 50
WORD_BYTES = 8
ERROR_SIGMA = 3.2


class ParameterError(ValueError):
    """Parameters that cannot work (shape, sizes) -- the message says what would."""


class SecurityError(ParameterError):
    """Parameters below 128-bit security that were not explicitly marked as a toy set."""


@dataclass(frozen=True)
class CKKSParameters:
    """A CKKS parameter set with hybrid key switching.

    Attributes:
        log_n: log2 of the ring degree N (slots = N / 2).
        q_bits: bit sizes of the ciphertext primes q_0 (base) .. q_L.
        p_bits: bit sizes of the special primes p_0 .. p_{K-1} used in key switching.
        dnum: number of key-switching digits; each digit holds ``alpha`` Q limbs.
        scale_bits: log2 of the scale at the top level.
        name: preset name; insecure sets must be named ``toy-*``.
        insecure: set True (with a ``toy-*`` name) to skip the security bound.
    """

    log_n: int
    q_bits: tuple[int, ...]
    p_bits: tuple[int, ...]
    dnum: int
    scale_bits: int
    name: str = "custom"
    insecure: bool = False
    sigma: float = ERROR_SIGMA
    primes: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "q_bits", tuple(int(b) for b in self.q_bits))
        object.__setattr__(self, "p_bits", tuple(int(b) for b in self.p_bits))
        n = 1 << self.log_n
        if not 10 <= self.log_n <= 17:
            raise ParameterError(f"log_n={self.log_n} is out of range; use 10..17 (N = 1024 .. 131072)")
        if len(self.q_bits) < 1 or len(self.p_bits) < 1:
            raise ParameterError("need at least one Q prime and one special prime P")
        for b in self.q_bits + self.p_bits:
            if not 20 <= b <= MAX_PRIME_BITS:
                raise ParameterError(
                    f"prime size {b} bits is unsupported; each prime must have 20..{MAX_PRIME_BITS} bits "
                    "(64-bit words with float-assisted reduction)")
        if not 1 <= self.dnum <= len(self.q_bits):
            raise ParameterError(f"dnum={self.dnum} must be between 1 and the number of Q primes ({len(self.q_bits)})")
        if self.scale_bits >= self.q_bits[0]:
            raise ParameterError(
                f"scale 2^{self.scale_bits} must be below the base prime q_0 (2^{self.q_bits[0]}) to decode")
        object.__setattr__(self, "primes", tuple(_generate_primes(n, self.q_bits, self.p_bits, self.scale_bits)))
        self._check_security()

    # ---- security -------------------------------------------------------
    def _check_security(self) -> None:
        bound = MAX_LOG_QP_128.get(self.n)
        secure = bound is not None and self.log_qp <= bound
        if self.insecure:
            if not self.name.startswith("toy-"):
                raise SecurityError(f"insecure parameter sets must be named 'toy-*', got {self.name!r}")
            return
        if self.name.startswith("toy-"):
            raise SecurityError(f"{self.name!r} is named as a toy set; pass insecure=True to use it")
        if bound is None:
            raise SecurityError(f"no 128-bit bound is tabulated for N={self.n}; tabulated: "
                                + ", ".join(f"2^{int(math.log2(k))}" for k in MAX_LOG_QP_128))
        if not secure:
            larger = [k for k, v in MAX_LOG_QP_128.items() if v >= self.log_qp]
            hint = f", or raise N to 2^{int(math.log2(larger[0]))} (bound {MAX_LOG_QP_128[larger[0]]})" if larger else ""
            raise SecurityError(
                f"log2(QP) = {self.log_qp:.1f} exceeds the 128-bit security bound {bound} for N = 2^{self.log_n} "
                f"(HomomorphicEncryption.org, ternary secret); remove {math.ceil(self.log_qp - bound)} bits of "
                f"modulus{hint}")

    @property
    def is_secure(self) -> bool:
        """True when log2(QP) is within the 128-bit bound for N."""
        bound = MAX_LOG_QP_128.get(self.n)
        return bound is not None and self.log_qp <= bound

    # ---- sizes ------------------------------------------------------------
    @property
    def n(self) -> int:
        """Ring degree N."""
        return 1 << self.log_n

    @property
    def slots(self) -> int:
        """Complex slots, N / 2."""
        return self.n // 2

    @property
    def max_level(self) -> int:
        """Top level L (a fresh ciphertext has L + 1 Q limbs)."""
        return len(self.q_bits) - 1

    @property
    def q_count(self) -> int:
        return len(self.q_bits)

    @property
    def p_count(self) -> int:
        """K, the number of special primes."""
        return len(self.p_bits)

    @property
    def alpha(self) -> int:
        """Q limbs per key-switching digit, ceil((L + 1) / dnum)."""
        return -(-self.q_count // self.dnum)

    @property
    def q_primes(self) -> tuple[int, ...]:
        return self.primes[: self.q_count]

    @property
    def p_primes(self) -> tuple[int, ...]:
        return self.primes[self.q_count:]

    @property
    def log_qp(self) -> float:
        """log2 of Q * P, in bits."""
        return sum(math.log2(p) for p in self.primes)

    @cached_property
    def p_product(self) -> int:
        return math.prod(self.p_primes)

    def q_indices(self, level: int) -> tuple[int, ...]:
        """Prime indices of a ciphertext at ``level`` (limbs q_0 .. q_level)."""
        self.check_level(level)
        return tuple(range(level + 1))

    @property
    def p_indices(self) -> tuple[int, ...]:
        """Prime indices of the special primes (after every Q prime)."""
        return tuple(range(self.q_count, self.q_count + self.p_count))

    def digits(self, level: int) -> list[tuple[int, ...]]:
        """Key-switching digits at ``level``: groups of ``alpha`` consecutive Q limb indices.

        Digit j holds limbs ``j*alpha .. (j+1)*alpha - 1`` truncated to the level;
        at lower levels fewer (and a shorter last) digits remain.
        """
        idx = self.q_indices(level)
        return [idx[i: i + self.alpha] for i in range(0, len(idx), self.alpha)]

    def check_level(self, level: int) -> None:
        if not 0 <= level <= self.max_level:
            raise ParameterError(f"level {level} is outside 0..{self.max_level} for {self.name}")

    @cached_property
    def level_scales(self) -> tuple[float, ...]:
        """The scale every ciphertext has at each level (index = level).

        Top level: 2**scale_bits.  Rescaling by q_l maps scale s to s**2 / q_l, so
        scale_{l-1} = scale_l**2 / q_l; the Q primes were chosen so that this stays
        within a prime gap of 2**scale_bits (scaling-factor-aware prime choice).
        """
        scales = [0.0] * self.q_count
        s = float(2 ** self.scale_bits)
        scales[self.max_level] = s
        for lvl in range(self.max_level, 0, -1):
            s = s * s / self.q_primes[lvl]
            scales[lvl - 1] = s
        return tuple(scales)

    def scale_at(self, level: int) -> float:
        """Scale of a ciphertext at ``level`` (see :attr:`level_scales`)."""
        self.check_level(level)
        return self.level_scales[level]

    def describe(self) -> str:
        """One line: N, limbs, bits, digits, scale, security."""
        sec = "128-bit secure" if self.is_secure else "INSECURE (toy)"
        return (f"{self.name}: N=2^{self.log_n}, Q {self.q_count} limbs {list(self.q_bits)}, "
                f"P {self.p_count} limbs {list(self.p_bits)}, dnum={self.dnum} (alpha={self.alpha}), "
                f"scale=2^{self.scale_bits}, log2(QP)={self.log_qp:.1f}, {sec}")


def _generate_primes(n: int, q_bits: tuple[int, ...], p_bits: tuple[int, ...], scale_bits: int) -> list[int]:
    """Q primes (base, then scaling primes chosen top-down to keep level scales stable), then P primes."""
    taken: list[int] = []
    q0 = ntt_primes_below(q_bits[0], n, 1)[0]
    taken.append(q0)
    chain: dict[int, int] = {0: q0}
    s = float(2 ** scale_bits)
    for lvl in range(len(q_bits) - 1, 0, -1):
        if q_bits[lvl] == scale_bits:
            q = ntt_prime_nearest(s * s / 2 ** scale_bits, n, exclude=taken)
            if q >= 1 << MAX_PRIME_BITS:
                q = ntt_primes_below(MAX_PRIME_BITS, n, 1, exclude=taken)[0]
        else:
            q = ntt_primes_below(q_bits[lvl], n, 1, exclude=taken)[0]
        chain[lvl] = q
        taken.append(q)
        s = s * s / q
    out = [chain[i] for i in range(len(q_bits))]
    for b in p_bits:
        p = ntt_primes_below(b, n, 1, exclude=out)[0]
        out.append(p)
    return out


# name -> (log_n, q_bits, p_bits, dnum, scale_bits, insecure)
_PRESETS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...], int, int, bool]] = {
    # 128-bit secure sets (log2 QP within the standard's bound)
    "n13": (13, (50, 40, 40), (50,), 3, 40, False),
    "n14": (14, (50,) + (40,) * 5, (50, 50), 3, 40, False),
    "n15": (15, (50,) + (40,) * 14, (50,) * 5, 3, 40, False),
    "n16": (16, (50,) + (40,) * 29, (50,) * 10, 3, 40, False),
    # insecure sets for fast tests only
    "toy-n10": (10, (50, 40, 40, 40), (50, 50), 2, 40, True),
    "toy-n11-deep": (11, (50,) + (40,) * 12, (50,) * 5, 3, 40, True),
    "toy-n12": (12, (50, 40, 40, 40, 40), (50, 50), 3, 40, True),
}

DEFAULT_PRESET = "n16"


def preset_names(include_toy: bool = True) -> list[str]:
    """Names of the presets (secure first)."""
    return [k for k, v in _PRESETS.items() if include_toy or not v[5]]


def preset(name: str = DEFAULT_PRESET, allow_insecure: bool = False) -> CKKSParameters:
    """Build a named preset.  ``toy-*`` sets need ``allow_insecure=True``."""
    if name not in _PRESETS:
        raise ParameterError(f"unknown preset {name!r}; valid presets: {', '.join(_PRESETS)}")
    log_n, qb, pb, dnum, sb, insecure = _PRESETS[name]
    if insecure and not allow_insecure:
        raise SecurityError(f"preset {name!r} is insecure (below 128-bit security); it is for tests only — "
                            "ask for it explicitly (allow_insecure=True, or --insecure on the CLI)")
    return CKKSParameters(log_n, qb, pb, dnum, sb, name=name, insecure=insecure)
