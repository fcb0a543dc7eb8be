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

#: Smallest Hamming weight h of bootstrapping's ephemeral sparse secret s' on a secure parameter set.
#:
#: The sparse-secret encapsulation key (:class:`fhe.rlwe.keys.EncapsulationKeys`, ``to_sparse``) is an
#: RLWE sample under s' modulo q_0 * p_0 only, and the server holds it: its security is that of
#: sparse-ternary RLWE at dimension N, modulus q_0 * p_0 (100 bits for ``n16-boot``), sigma 3.2.
#: The HE standard's tables (HomomorphicEncryption.org, 2018) assume a *uniform* ternary secret and
#: warn that sparse secrets must be assessed against the attacks that exploit sparsity (hybrid
#: lattice reduction / meet-in-the-middle: Cheon, Hhan, Hong, Son, "A hybrid of dual and
#: meet-in-the-middle attack on sparse and ternary secret LWE", IEEE Access 2019).
#:
#: What this library relies on is a *citation*, not its own lattice estimate:
#: Bossuat, Troncoso-Pastoriza, Hubaux ("Bootstrapping for approximate homomorphic encryption with
#: negligible failure-probability by using sparse-secret encapsulation", ACNS 2022) introduce this
#: key with h = 32 at N = 2^16; Lattigo's default bootstrapping parameters use
#: ``EphemeralSecretWeight: 32`` with the sparse key over Q_0 * P_0 of 60 + 61 = 121 bits at
#: N = 2^16; Bossuat et al., "Security guidelines for implementing homomorphic encryption"
#: (2024) recommend h >= 32 for such an ephemeral secret at N = 2^16 with a small log(q_0 p_0).
#: For a fixed dimension and noise, a smaller modulus only makes LWE harder, so a key at
#: N = 2^16 over at most 121 bits with h >= 32 is no weaker than those parameters.  Outside that
#: regime (smaller N, larger q_0 * p_0) no estimate is claimed and secure sets are refused.
#:
#: What is *computed* here (:func:`sparse_secret_log2_count`) is only a combinatorial floor:
#: log2(C(N, h) 2^h) secrets of weight h, 426 bits at N = 2^16, h = 32 (so exhaustive search costs
#: 2^426 and a meet-in-the-middle search about 2^213); it is not a lattice-attack estimate.  With
#: h = 1 there are only 2N = 2^17 secrets: s' is found at once, and then the key's first digit,
#: b_0 + a_0 s' = e + p_0 s (mod q_0), gives the dense secret s coefficient by coefficient.
MIN_SPARSE_HAMMING_WEIGHT = 32
#: The regime the cited weight-32 figure covers: ring degree at least 2^16 ...
SPARSE_SECRET_MIN_LOG_N = 16
#: ... and the encapsulation key's modulus q_0 * p_0 at most 2^121 (Lattigo's default).
SPARSE_SECRET_MAX_LOG_Q0P0 = 121


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
        scale_bits: log2 of the scale at the top level (of the application's levels when
            ``boot_levels`` is set).
        name: preset name; insecure sets must be named ``toy-*``.
        insecure: set True (with a ``toy-*`` name) to skip the security bound.
        boot_levels: number of *composite* levels at the top of the chain, each made of two
            primes (the top ``2 * boot_levels`` Q primes) and rescaled by their product, at the
            scale ``2**boot_scale_bits`` (composite scaling): bootstrapping's CoeffToSlot and
            EvalMod run there, because they carry the message's 10 bits below q_0 plus the
            precision wanted, more than a 50-bit word prime allows (0: no such region).
        boot_scale_bits: log2 of the scale in that region (about the bits of a prime pair).
    """

    log_n: int
    q_bits: tuple[int, ...]
    p_bits: tuple[int, ...]
    dnum: int
    scale_bits: int
    name: str = "custom"
    insecure: bool = False
    sigma: float = ERROR_SIGMA
    boot_levels: int = 0
    boot_scale_bits: int = 0
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
        if self.boot_levels:
            if not 1 <= 2 * self.boot_levels <= self.max_level - 1:
                raise ParameterError(f"boot_levels={self.boot_levels} composite levels need {2 * self.boot_levels} "
                                     f"primes above q_0 and one application level; there are {self.max_level}")
            if not self.scale_bits < self.boot_scale_bits <= 2 * MAX_PRIME_BITS - 2:
                raise ParameterError(f"boot_scale_bits={self.boot_scale_bits} must be above scale_bits={self.scale_bits} "
                                     f"and at most {2 * MAX_PRIME_BITS - 2} (a pair of word primes)")
        object.__setattr__(self, "primes", tuple(_generate_primes(n, self.q_bits, self.p_bits, self._target_scales(), self.boot_levels)))
        self._check_security()
        self._check_digits()

    def _check_digits(self) -> None:
        """P must cover the largest key-switching digit, or every key switch adds noise of digit / P."""
        digit = max(sum(math.log2(self.primes[i]) for i in d) for d in self.digits(self.max_level))
        p_bits = sum(math.log2(q) for q in self.p_primes)
        if p_bits < digit - 1:
            raise ParameterError(
                f"the special primes P ({p_bits:.0f} bits) do not cover the largest key-switching digit "
                f"({digit:.0f} bits): key switches would add noise of 2^{digit - p_bits:.0f}; add special primes "
                f"or raise dnum (now {self.dnum})")

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

    # ---- composite-scaling region -------------------------------------------------------
    @property
    def boot_region_bottom(self) -> int:
        """Lowest resting level of the composite region (``max_level + 1`` when there is none).

        Resting levels are L, L-2, ..., boot_region_bottom; a rescale there drops two primes.
        """
        return self.max_level + 2 - 2 * self.boot_levels if self.boot_levels else self.max_level + 1

    def in_boot_region(self, level: int) -> bool:
        """True for a resting level of the composite region."""
        return self.boot_levels > 0 and level >= self.boot_region_bottom and (self.max_level - level) % 2 == 0

    def rescale_width(self, level: int) -> int:
        """Primes one rescale at ``level`` drops: 2 at a resting level of the composite region, else 1."""
        return 2 if self.in_boot_region(level) else 1

    def level_below(self, level: int) -> int:
        """Level after one rescale from ``level``."""
        return level - self.rescale_width(level)

    def level_above(self, level: int) -> int:
        """The level whose rescale lands on ``level``."""
        up = level + 2
        return up if up <= self.max_level and self.in_boot_region(up) else level + 1

    def rescale_modulus(self, level: int) -> int:
        """The product of the primes a rescale at ``level`` divides by."""
        return math.prod(self.q_primes[level - self.rescale_width(level) + 1: level + 1])

    @property
    def application_top(self) -> int:
        """Highest level with the application's scale and one prime per rescale: below the composite
        region when there is one (bootstrapping's own levels), else the top level."""
        return self.boot_region_bottom - 2 if self.boot_levels else self.max_level

    def depth_left(self, level: int) -> int:
        """Rescales (multiplicative depth) a ciphertext at ``level`` can still take."""
        d = 0
        while level > 0:
            level = self.level_below(level)
            d += 1
        return d if level == 0 else d - 1

    def _target_scales(self) -> list[float | None]:
        """Per level: the exact scale a region starts with (its top level), else None (follows the chain)."""
        t: list[float | None] = [None] * self.q_count
        if self.boot_levels:
            t[self.max_level] = float(2 ** self.boot_scale_bits)
            t[self.boot_region_bottom - 2] = float(2 ** self.scale_bits)
        else:
            t[self.max_level] = float(2 ** self.scale_bits)
        return t

    @cached_property
    def level_scales(self) -> tuple[float, ...]:
        """The scale every ciphertext has at each level (index = level).

        Top level: 2**scale_bits.  Rescaling by q_l maps scale s to s**2 / q_l, so
        scale_{l-1} = scale_l**2 / q_l; the Q primes were chosen so that this stays
        within a prime gap of 2**scale_bits (scaling-factor-aware prime choice).

        With a composite region (``boot_levels``), its resting levels follow the same rule
        with the prime pair's product from 2**boot_scale_bits (the level between two resting
        levels keeps the scale above it: a ciphertext only passes there when dropped), and
        the level just below the region starts again at exactly 2**scale_bits: a ciphertext
        crosses that boundary only through a plaintext product whose scale is chosen to land
        there (bootstrapping's first SlotToCoeff transform).
        """
        targets = self._target_scales()
        scales = [0.0] * self.q_count
        s = 0.0
        lvl = self.max_level
        while lvl >= 0:
            if targets[lvl] is not None:
                s = targets[lvl]
            scales[lvl] = s
            w = self.rescale_width(lvl)
            if w == 2:
                scales[lvl - 1] = s
            nxt = lvl - w
            if nxt >= 0 and targets[nxt] is None:
                s = s * s / self.rescale_modulus(lvl)
            lvl = nxt
        return tuple(scales)

    def scale_at(self, level: int) -> float:
        """Scale of a ciphertext at ``level`` (see :attr:`level_scales`)."""
        self.check_level(level)
        return self.level_scales[level]

    def describe(self) -> str:
        """One line: N, limbs, bits, digits, scale, security."""
        sec = "128-bit secure" if self.is_secure else "INSECURE (toy)"
        boot = (f", top {self.boot_levels} composite levels (prime pairs) at scale 2^{self.boot_scale_bits}"
                if self.boot_levels else "")
        return (f"{self.name}: N=2^{self.log_n}, Q {self.q_count} limbs {list(self.q_bits)}, "
                f"P {self.p_count} limbs {list(self.p_bits)}, dnum={self.dnum} (alpha={self.alpha}), "
                f"scale=2^{self.scale_bits}{boot}, log2(QP)={self.log_qp:.1f}, {sec}")


def _generate_primes(n: int, q_bits: tuple[int, ...], p_bits: tuple[int, ...],
                     targets: list[float | None], boot_levels: int = 0) -> list[int]:
    """Q primes (base, then scaling primes chosen top-down to keep level scales stable), then P primes.

    ``targets[l]`` is the exact scale a region starts with at level l (None: the scale follows
    the chain).  A prime whose size equals its level's scale size is chosen nearest
    s_l^2 / 2^bits, so the scale stays within a prime gap of 2^bits; in the composite region
    the second prime of a pair is chosen so that the pair's product is nearest s_l^2 / s_target.
    Other primes are the largest of their size.
    """
    taken: list[int] = []
    q0 = ntt_primes_below(q_bits[0], n, 1)[0]
    taken.append(q0)
    top = len(q_bits) - 1
    chain: dict[int, int] = {0: q0}
    pair_levels = {top - 2 * i for i in range(boot_levels)}
    s = 0.0
    lvl = top
    while lvl > 0:
        if targets[lvl] is not None:
            s = targets[lvl]
        if lvl in pair_levels:
            hi = ntt_primes_below(q_bits[lvl], n, 1, exclude=taken)[0]
            taken.append(hi)
            if targets[lvl - 2] is None:
                lo = ntt_prime_nearest(s * s / 2 ** round(math.log2(s)) / hi, n, exclude=taken)
            else:
                lo = ntt_primes_below(q_bits[lvl - 1], n, 1, exclude=taken)[0]
            taken.append(lo)
            chain[lvl], chain[lvl - 1] = hi, lo
            s = s * s / (hi * lo)
            lvl -= 2
            continue
        bits = q_bits[lvl]
        if bits == round(math.log2(s)) and targets[lvl - 1] is None:
            q = ntt_prime_nearest(s * s / 2 ** bits, n, exclude=taken)
            if q >= 1 << MAX_PRIME_BITS:
                q = ntt_primes_below(MAX_PRIME_BITS, n, 1, exclude=taken)[0]
        else:
            q = ntt_primes_below(bits, n, 1, exclude=taken)[0]
        chain[lvl] = q
        taken.append(q)
        s = s * s / q
        lvl -= 1
    out = [chain[i] for i in range(len(q_bits))]
    for b in p_bits:
        p = ntt_primes_below(b, n, 1, exclude=out)[0]
        out.append(p)
    return out


# name -> (log_n, q_bits, p_bits, dnum, scale_bits, insecure[, boot_levels, boot_scale_bits])
_PRESETS: dict[str, tuple] = {
    # 128-bit secure sets (log2 QP within the standard's bound)
    "n13": (13, (50, 40, 40), (50,), 3, 40, False),
    "n14": (14, (50,) + (40,) * 5, (50, 50), 3, 40, False),
    "n15": (15, (50,) + (40,) * 14, (50,) * 5, 3, 40, False),
    "n16": (16, (50,) + (40,) * 29, (50,) * 10, 3, 40, False),
    # bootstrapping: 15 composite levels of two 32-bit primes at scale 2^64 (CoeffToSlot 3, EvalMod 9,
    # SlotToCoeff 3) and 9 levels for the application at 2^40; log2 QP = 1702 <= 1760
    "n16-boot": (16, (50,) + (40,) * 9 + (32,) * 30, (50,) + (47,) * 6, 5, 40, False, 15, 64),
    # The level budget as a choice: the same bootstrapping region (so the same circuit and precision)
    # with more levels for the application, paid for by a smaller P -- more key-switching digits (dnum),
    # so each digit, which P must cover, is smaller.  The price: one more ModUp/inner-product term per
    # digit in every key switch, and keys of dnum x (Q + P limbs) x 2 limbs.
    # 11 levels (the attention chain mask-QK-pack-exp-expand-AV, so the T x T scores are not
    # bootstrapped): dnum 6 (alpha 7, largest digit q_0 + 6 x 40 = 290 bits), P = 50 + 5 x 48 = 290 bits;
    # log2 QP = 1740 <= 1760; keys 6 x 48 limb pairs (1.23x n16-boot's 5 x 47)
    "n16-boot-11": (16, (50,) + (40,) * 11 + (32,) * 30, (50,) + (48,) * 5, 6, 40, False, 15, 64),
    # 13 levels (a BERT layer's attention with the hidden state refreshed before it and the AV partials
    # still holding the normalisation's product): dnum 9 (alpha 5, largest digit 50 + 4 x 40 = 210 bits),
    # P = 50 + 4 x 40 = 210 bits; log2 QP = 1740 <= 1760; keys 9 x 49 limb pairs (1.88x n16-boot's)
    "n16-boot-13": (16, (50,) + (40,) * 13 + (32,) * 30, (50,) + (40,) * 4, 9, 40, False, 15, 64),
    # insecure sets for fast tests only
    "toy-n10": (10, (50, 40, 40, 40), (50, 50), 2, 40, True),
    "toy-n11-deep": (11, (50,) + (40,) * 12, (50,) * 5, 3, 40, True),
    "toy-n12": (12, (50, 40, 40, 40, 40), (50, 50), 3, 40, True),
    # the n16-boot layout at N = 2^10
    "toy-n10-boot": (10, (50,) + (40,) * 9 + (32,) * 30, (50,) + (47,) * 6, 5, 40, True, 15, 64),
    # the n16-boot-11 and n16-boot-13 layouts at N = 2^10
    "toy-n10-boot-11": (10, (50,) + (40,) * 11 + (32,) * 30, (50,) + (48,) * 5, 6, 40, True, 15, 64),
    "toy-n10-boot-13": (10, (50,) + (40,) * 13 + (32,) * 30, (50,) + (40,) * 4, 9, 40, True, 15, 64),
}

DEFAULT_PRESET = "n16"


def sparse_secret_log2_count(n: int, h: int) -> float:
    """log2 of the number of ternary secrets of dimension ``n`` with exactly ``h`` non-zeros: C(n, h) 2^h (bits).

    A combinatorial floor on attacks on a weight-h secret (exhaustive search), not a lattice estimate.
    """
    if not 0 <= h <= n:
        raise ParameterError(f"Hamming weight h={h} must be between 0 and N={n}")
    return (math.lgamma(n + 1) - math.lgamma(h + 1) - math.lgamma(n - h + 1)) / math.log(2) + h


def check_sparse_secret(params: "CKKSParameters", hamming_weight: int) -> None:
    """Refuse an ephemeral sparse secret (bootstrapping's encapsulation) too weak for ``params``.

    Any set: 1 <= h <= N.  A secure set (``insecure`` False) also needs h >= MIN_SPARSE_HAMMING_WEIGHT,
    N >= 2^SPARSE_SECRET_MIN_LOG_N and log2(q_0 p_0) <= SPARSE_SECRET_MAX_LOG_Q0P0 (the regime the
    cited estimate covers; see :data:`MIN_SPARSE_HAMMING_WEIGHT`).  Toy sets may use any weight.

    Raises:
        ParameterError: h outside 1..N.
        SecurityError: a secure set with a weaker sparse secret.
    """
    h, n = int(hamming_weight), params.n
    if not 1 <= h <= n:
        raise ParameterError(f"sparse-secret Hamming weight h={h} must be between 1 and N={n}")
    if params.insecure:
        return
    if h < MIN_SPARSE_HAMMING_WEIGHT:
        raise SecurityError(
            f"sparse-secret Hamming weight h={h} is below the minimum {MIN_SPARSE_HAMMING_WEIGHT} for secure "
            f"parameters ({params.name}): the encapsulation key the server receives would reveal the secret "
            f"(only 2^{sparse_secret_log2_count(n, h):.0f} weight-{h} secrets); use h >= {MIN_SPARSE_HAMMING_WEIGHT}")
    log_q0p0 = math.log2(params.q_primes[0] * params.p_primes[0])
    if params.log_n < SPARSE_SECRET_MIN_LOG_N or log_q0p0 > SPARSE_SECRET_MAX_LOG_Q0P0:
        raise SecurityError(
            f"{params.name}: no security estimate covers a weight-{h} sparse secret at N = 2^{params.log_n} with "
            f"log2(q_0 p_0) = {log_q0p0:.0f}; the cited one needs N >= 2^{SPARSE_SECRET_MIN_LOG_N} and "
            f"log2(q_0 p_0) <= {SPARSE_SECRET_MAX_LOG_Q0P0} (use n16-boot)")


def preset_names(include_toy: bool = True) -> list[str]:
    """Names of the presets (secure first)."""
    return [k for k, v in _PRESETS.items() if include_toy or not v[5]]


def preset(name: str = DEFAULT_PRESET, allow_insecure: bool = False) -> CKKSParameters:
    """Build a named preset.  ``toy-*`` sets need ``allow_insecure=True``."""
    if name not in _PRESETS:
        raise ParameterError(f"unknown preset {name!r}; valid presets: {', '.join(_PRESETS)}")
    log_n, qb, pb, dnum, sb, insecure, *boot = _PRESETS[name]
    if insecure and not allow_insecure:
        raise SecurityError(f"preset {name!r} is insecure (below 128-bit security); it is for tests only — "
                            "ask for it explicitly (allow_insecure=True, or --insecure on the CLI)")
    extra = {"boot_levels": boot[0], "boot_scale_bits": boot[1]} if boot else {}
    return CKKSParameters(log_n, qb, pb, dnum, sb, name=name, insecure=insecure, **extra)
