"""Bytes and modular operations of every kernel and of the operations built from them.

One source of truth: the planner (aegis/) and the simulator (sim/) cost
operations with these functions, and tests check them against what the
kernels really read and write (:func:`fhe.ring.counters.count_kernels`).

Units: bytes (64-bit words, ``WORD_BYTES`` = 8 per residue), modular
operations (one modular multiply or add counts as one), limbs = rows of N
residues.  ``n`` is the ring degree N.

Two kernel styles share the arithmetic (modular operations) but not the traffic or the launches:

* *unfused* (the functions down to :func:`hoisted_rotations`): every step is its own kernel, as
  our NumPy / CuPy rings run it (:func:`fhe.ring.counters.count_kernels` checks them exactly);
* *fused* (:class:`FusedCosts`): a fused GPU library (100x, Phantom, Cheddar, Cerium) issues each
  of NTT, ModUp, inner product, ModDown and rescale as one or two kernels (:data:`FUSED_LAUNCHES`),
  so intermediate limbs stay on chip and only inputs, keys and outputs cross HBM; its residues may
  be 32-bit words with more, smaller primes (:class:`WordSize`, :func:`shape`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

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


# ---- fused GPU library (kernel model of the state of the art) ----------------------------------
@dataclass(frozen=True)
class WordSize:
    """How a library stores residues: ``word_bytes`` per residue, primes of at most ``prime_bits`` bits.

    ``prime_bits`` = 0 keeps the parameter set's own primes (one limb per prime, 8-byte words: our
    rings).  A 32-bit library (Cheddar, Cerium) at the same log2 Q_l and log2 P needs
    ``ceil(log2 Q_l / prime_bits)`` Q limbs and ``ceil(log2 P / prime_bits)`` P limbs of 4 bytes
    (:func:`shape`): for ``n16-boot`` at the top level, Q and P (1702 bits) in 47 limbs of 8 bytes
    (23.5 MiB per polynomial at N = 2^16) become 46 + 12 = 58 limbs of 4 bytes (14.5 MiB): 0.62x the
    bytes, 1.23x the limbs (and about as many more modular operations, each on a 32-bit word)."""

    word_bytes: int = 8
    prime_bits: int = 0

    def __post_init__(self) -> None:
        if self.word_bytes not in (4, 8):
            raise ValueError(f"word_bytes must be 4 or 8, got {self.word_bytes}")
        if not 0 <= self.prime_bits <= 8 * self.word_bytes - 1:
            raise ValueError(f"prime_bits must be in 0..{8 * self.word_bytes - 1}, got {self.prime_bits}")


#: our rings: 64-bit words, the parameter set's primes
WORD64 = WordSize(8, 0)
#: a 32-bit library: 30-bit primes in 4-byte words.  Cheddar (arXiv 2407.13055) runs 32-bit words with
#: what it calls a 25-30 prime system (primes of about 25 and 30 bits); 30 is the upper end, so the limb
#: counts here are a lower bound on a library with smaller primes
WORD32 = WordSize(4, 30)


@dataclass(frozen=True)
class Shape:
    """Limb counts of one key-switching level as a library with some word size lays it out.

    ``q``: Q limbs, ``p``: special (P) limbs, ``digits``: Q limbs per key-switching digit,
    ``drop``: limbs that dividing by the parameter set's prime q_level removes (one of ours; one or two
    30-bit limbs), ``word_bytes``: bytes per residue."""

    n: int
    q: int
    p: int
    digits: tuple[int, ...]
    drop: int
    word_bytes: int

    @property
    def limb(self) -> int:
        """Bytes of one limb of one polynomial."""
        return self.n * self.word_bytes


def _bits(primes: tuple[int, ...]) -> float:
    return sum(math.log2(q) for q in primes)


def shape(params: CKKSParameters, level: int, word: WordSize = WORD64) -> Shape:
    """The limbs of ``level`` in ``word``'s layout (same log2 Q_l, log2 P and number of digits)."""
    n = params.n
    if word.prime_bits == 0:
        digs = tuple(len(d) for d in params.digits(level))
        return Shape(n, level + 1, params.p_count, digs, 1 if level > 0 else 0, word.word_bytes)
    qs = params.q_primes
    q = math.ceil(_bits(qs[:level + 1]) / word.prime_bits)
    p = math.ceil(_bits(params.p_primes) / word.prime_bits)
    dn = len(params.digits(level))
    alpha = math.ceil(q / dn)
    digs = tuple(min(alpha, q - i) for i in range(0, q, alpha))
    drop = q - math.ceil(_bits(qs[:level]) / word.prime_bits) if level > 0 else 0
    return Shape(n, q, p, digs, max(drop, 0), word.word_bytes)


@dataclass(frozen=True)
class Launches:
    """Kernels a fused library issues per step (both polynomials of a ciphertext unless said).

    Our reading of the fusion the GPU libraries describe -- 100x (Jung et al., TCHES 2021: key
    switching's base conversions, NTTs and element-wise steps fused), Phantom (Yang et al., IEEE TDSC
    2024) and Cheddar (Choi, Kim, Ahn, ASPLOS 2026, arXiv 2407.13055 v2: "extensive kernel fusion" and
    reordered operation sequences) -- not counts copied from their tables: ModUp as the input's INTT
    plus one kernel for every digit's base conversion and NTTs, the inner product as one kernel,
    ModDown as the P part's INTT plus one kernel for conversion, NTT, subtraction and P^-1 scaling,
    automorphisms folded into the key-switching kernels' reads.  Counts are per step, whatever the
    number of limbs or digits."""

    ntt: int = 1             # one NTT of any number of limbs (encoding)
    elementwise: int = 1     # a chain of element-wise operations on one or more ciphertexts
    mod_up: int = 2          # INTT of the input; base conversion + NTT of every digit
    inner_product: int = 1   # all digits, both halves, the key streamed once
    mod_down: int = 2        # INTT of the P part; base conversion + NTT + subtract + scale by P^-1
    rescale: int = 2         # INTT of the dropped limbs; NTT + subtract + scale
    modraise: int = 2        # INTT of the level-0 limb; NTT onto every limb
    key_expand: int = 1


#: the launch counts of the fused kernel model (data, not code: see :class:`Launches`)
FUSED_LAUNCHES = Launches()


@dataclass(frozen=True)
class FusedCosts:
    """Bytes, modular operations and launches of each primitive in a fused library with ``word``.

    Modular operations are the unfused kernels' (same arithmetic on the shape's limbs); bytes are
    the inputs, keys and outputs of each fused kernel (intermediates stay in registers / shared
    memory); launches come from ``launches``.  One polynomial = ``shape.q`` limbs unless said."""

    params: CKKSParameters
    word: WordSize = WORD64
    launches: Launches = field(default_factory=Launches)

    def shape(self, level: int) -> Shape:
        return shape(self.params, level, self.word)

    def _c(self, s: Shape, read_limbs: int, written_limbs: int, mod_ops: int, calls: int) -> Cost:
        return Cost(read_limbs * s.limb, written_limbs * s.limb, mod_ops, calls)

    def mod_up(self, level: int) -> Cost:
        """INTT of the input (read, write q limbs); per digit, read its d limbs and write the
        q - d + p limbs it extends to (base conversion and NTT fused)."""
        s = self.shape(level)
        n, q, k = s.n, s.q, s.p
        ops = intt(n, q).mod_ops + sum(base_convert(n, d, q - d + k).mod_ops + ntt(n, q - d + k).mod_ops
                                       for d in s.digits)
        return self._c(s, q + q, q + sum(q - d + k for d in s.digits), ops, self.launches.mod_up)

    def inner_product(self, level: int) -> Cost:
        """Read every extended digit and both key halves once, write both halves (q + p limbs each)."""
        s = self.shape(level)
        dn, w = len(s.digits), s.q + s.p
        ops = 2 * s.n * w * (2 * dn - 1)
        return self._c(s, dn * w + 2 * dn * w, 2 * w, ops, self.launches.inner_product)

    def mod_down(self, level: int, extra_read: int = 0) -> Cost:
        """Both polynomials: INTT of the P part, then conversion, NTT, subtraction and scaling fused
        (reads the P part twice and the Q part once, writes q limbs each); ``extra_read`` polynomials
        (e.g. c0) are read and added in the same kernel."""
        s = self.shape(level)
        n, q, k = s.n, s.q, s.p
        one = mod_down_ops(n, q, k)
        return self._c(s, 2 * (k + k + q) + extra_read * q, 2 * (k + q), 2 * one + extra_read * n * q,
                       self.launches.mod_down)

    def key_switch(self, level: int, extra_read: int = 0) -> Cost:
        return self.mod_up(level) + self.inner_product(level) + self.mod_down(level, extra_read)

    def elementwise(self, level: int, read_polys: int, written_polys: int, ops_per_coeff: int) -> Cost:
        s = self.shape(level)
        return self._c(s, read_polys * s.q, written_polys * s.q, ops_per_coeff * s.n * s.q,
                       self.launches.elementwise)

    def rescale(self, level: int) -> Cost:
        """Both polynomials: INTT of the dropped limbs, then (conversion onto the rest,) NTT, subtract,
        scale -- the division by one of the parameter set's primes (:data:`aegis.prims` ``rescale``)."""
        s = self.shape(level)
        n, q, d = s.n, s.q, max(s.drop, 1)
        r = q - d
        conv = base_convert(n, d, r).mod_ops if d > 1 else 0
        ops = 2 * (intt(n, d).mod_ops + conv + ntt(n, r).mod_ops + 4 * n * r)   # lift, subtract, scale
        return self._c(s, 2 * (d + d + r), 2 * (d + r), ops, self.launches.rescale)

    def prim(self, prim: str, level: int) -> Cost:
        """One primitive of :mod:`aegis.prims` (same names and meaning) in the fused model."""
        n = self.params.n
        if prim in ("rot", "giant"):       # automorphism folded into ModUp's read and ModDown's epilogue
            return self.key_switch(level, extra_read=1)
        if prim == "relin":                # adds d0, d1 in ModDown's epilogue
            return self.key_switch(level, extra_read=2)
        if prim == "hoist":
            return self.mod_up(level)
        if prim == "hrot":                 # permuted digits read by the inner product; c0 in the epilogue
            return self.inner_product(level) + self.mod_down(level, extra_read=1)
        if prim == "gout":
            return Cost()
        if prim == "tensor":               # (a0, a1) x (b0, b1) -> d0, d1, d2 in one kernel
            return self.elementwise(level, 4, 3, 5)
        if prim == "pmul":                 # both parts times one plaintext
            return self.elementwise(level, 3, 2, 2)
        if prim == "add":
            return self.elementwise(level, 4, 2, 2)
        if prim == "rescale":
            return self.rescale(level)
        if prim == "encode":
            s = self.shape(level)
            c = ntt(n, s.q)
            return Cost(self.params.slots * 16, s.q * s.limb, c.mod_ops + n * s.q, self.launches.ntt)
        if prim == "keyexp":
            s = self.shape(level)
            words = len(s.digits) * (s.q + s.p) * n
            return Cost(0, words * s.word_bytes, words, self.launches.key_expand)
        if prim == "modraise":
            s = self.shape(self.params.max_level)
            top = s.q
            c0 = shape(self.params, 0, self.word).q
            ops = 2 * (intt(n, c0).mod_ops + ntt(n, top).mod_ops + n * top)
            return self._c(s, 2 * (c0 + c0), 2 * (c0 + top), ops, self.launches.modraise)
        raise ValueError(f"unknown primitive {prim!r}")


def mod_down_ops(n: int, q: int, k: int) -> int:
    """Modular operations of one polynomial's ModDown (INTT of k limbs, conversion k -> q, NTT, subtract,
    scale): the same count in both kernel styles."""
    return (intt(n, k).mod_ops + base_convert(n, k, q).mod_ops + ntt(n, q).mod_ops + add(n, q).mod_ops
            + mul_scalar(n, q).mod_ops)
