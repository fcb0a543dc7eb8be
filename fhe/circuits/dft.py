"""The homomorphic DFT of CKKS bootstrapping: the special FFT as a few sparse diagonal matrices.

Decoding maps coefficients to slots by ``z = V u`` with ``u_k = t_k + i t_{k+n}`` (n slots,
k < n) and ``V[j, k] = zeta^(5^j k)``, zeta = exp(i pi / (2 n)) for full packing.  Splitting
even and odd coefficients gives the Cooley-Tukey recursion

    V_n = B_n (I_2 (x) B_{n/2}) ... (I_{n/2} (x) B_2) P,

with P the bit-reversal permutation and B_m the butterfly on blocks of m slots:
``out_j = in_j + w_j in_{j+m/2}``, ``out_{j+m/2} = in_j - w_j in_{j+m/2}`` for j < m/2,
``w_j = exp(i pi 5^j / (2 m))``.  Each butterfly has three non-zero *diagonals* (slot
rotations by 0, +m/2 and -m/2), so it costs two rotations; merging k consecutive butterflies
gives at most 2^(k+1) - 1 diagonals at multiples of one stride.

Bootstrapping never applies P: SlotToCoeff computes ``B_n ... B_2 w`` from bit-reversed
coefficients w and CoeffToSlot computes ``B_2^-1 ... B_n^-1 z`` = bit-reversed u; EvalMod
between them works slot by slot, so the order does not matter.

A matrix is held as *diagonals*: ``{offset: d}`` with ``(M v)_j = sum_k d_k[j] v[j + k]``
(offsets in slots, 0 <= k < slots).  :class:`DiagonalTransform` evaluates one on a
ciphertext with baby-step giant-step and hoisted baby steps (one level).

Sparse packing (``n`` used slots < N/2 slots): the vectors repeat with period n, so every
diagonal is tiled over the N/2 slots and the same rotations act on each copy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..ckks.context import Ciphertext, Plaintext
from ..ckks.evaluator import Evaluator
from .linear import bsgs_split

Diagonals = dict[int, np.ndarray]


def _roots(m: int) -> np.ndarray:
    """w_j = exp(i pi 5^j / (2 m)) for j < m / 2 (5^j reduced mod 4m)."""
    e = np.array([pow(5, j, 4 * m) for j in range(m // 2)], dtype=np.float64)
    return np.exp(1j * np.pi * e / (2 * m))


def butterfly(n: int, m: int, inverse: bool = False) -> Diagonals:
    """``I_{n/m} (x) B_m`` (or its inverse) on n slots as three diagonals."""
    if m < 2 or m > n or m & (m - 1) or n & (n - 1):
        raise ValueError(f"butterfly needs powers of two 2 <= m <= n, got m={m}, n={n}")
    h = m // 2
    r = np.arange(n) % m
    w = _roots(m)
    top = r < h
    wr = w[np.where(top, r, r - h)]
    if not inverse:
        d0 = np.where(top, 1.0 + 0j, -wr)
        dp = np.where(top, wr, 0j)
        dm = np.where(top, 0j, 1.0 + 0j)
    else:  # in_top = (o_top + o_bot) / 2 ; in_bot = conj(w) (o_top - o_bot) / 2
        d0 = np.where(top, 0.5 + 0j, -np.conj(wr) / 2)
        dp = np.where(top, 0.5 + 0j, 0j)
        dm = np.where(top, 0j, np.conj(wr) / 2)
    out = {0: d0, h % n: dp}
    out[(-h) % n] = out.get((-h) % n, 0) + dm
    return out


def compose(a: Diagonals, b: Diagonals, n: int) -> Diagonals:
    """Diagonals of ``A B`` (B applied first): sum over (ka, kb) of ``a_ka * rot(b_kb, ka)`` at ka + kb."""
    out: Diagonals = {}
    for ka, da in a.items():
        for kb, db in b.items():
            k = (ka + kb) % n
            term = da * np.roll(db, -ka)
            out[k] = out[k] + term if k in out else term
    return {k: d for k, d in out.items() if np.any(np.abs(d) > 1e-300)}


def scale_diagonals(a: Diagonals, c: complex) -> Diagonals:
    return {k: d * c for k, d in a.items()}


def dense(a: Diagonals, n: int) -> np.ndarray:
    """The n x n matrix of a diagonal form (tests and small sizes only)."""
    m = np.zeros((n, n), dtype=np.complex128)
    rows = np.arange(n)
    for k, d in a.items():
        m[rows, (rows + k) % n] += d
    return m


def stage_groups(stages: int, levels: int) -> list[int]:
    """How many butterfly stages each of ``levels`` merged matrices holds (earlier groups larger)."""
    if not 1 <= levels <= stages:
        raise ValueError(f"cannot merge {stages} butterfly stages into {levels} levels; use 1..{stages}")
    base, extra = divmod(stages, levels)
    return [base + (1 if i < extra else 0) for i in range(levels)]


def dft_matrices(used: int, levels: int, inverse: bool) -> list[Diagonals]:
    """The merged factors in the order they are applied, on ``used`` slots.

    ``inverse=False`` (SlotToCoeff): ``B_2, B_4, ..., B_used`` merged into ``levels`` groups;
    ``inverse=True`` (CoeffToSlot): ``B_used^-1, ..., B_2^-1``.
    """
    ms = [1 << s for s in range(1, int(math.log2(used)) + 1)]
    if inverse:
        ms = ms[::-1]
    out: list[Diagonals] = []
    pos = 0
    for k in stage_groups(len(ms), levels):
        acc: Diagonals | None = None
        for m in ms[pos: pos + k]:
            b = butterfly(used, m, inverse)
            acc = b if acc is None else compose(b, acc, used)
        pos += k
        out.append(acc)
    return out


def tile_diagonals(a: Diagonals, used: int, slots: int) -> Diagonals:
    """Repeat every diagonal of a ``used``-slot matrix over ``slots`` (sparse packing)."""
    if slots == used:
        return a
    return {k: np.tile(d, slots // used) for k, d in a.items()}


@dataclass
class BSGSShape:
    """Baby-step giant-step layout of a diagonal set: offset = stride * (n1 * g + b)."""

    stride: int
    n1: int
    terms: dict[int, dict[int, int]] = field(default_factory=dict)   # g -> {b: offset}

    @property
    def babies(self) -> list[int]:
        """Baby rotation steps (slots), 0 excluded."""
        return sorted({self.stride * b for g in self.terms.values() for b in g} - {0})

    def giants(self, slots: int) -> list[int]:
        """Giant rotation steps (slots), 0 excluded."""
        return sorted({(self.stride * self.n1 * g) % slots for g in self.terms} - {0})


def bsgs_shape(offsets: list[int], slots: int) -> BSGSShape:
    """Split signed offsets (multiples of one power-of-two stride) into baby and giant steps."""
    signed = [k - slots if k > slots // 2 else k for k in offsets]
    nz = [abs(k) for k in signed if k]
    stride = math.gcd(*nz) if nz else 1
    n1, _ = bsgs_split(len(offsets))
    shape = BSGSShape(stride, n1)
    for k, s in zip(offsets, signed):
        t = s // stride
        b = t % n1
        shape.terms.setdefault((t - b) // n1, {})[b] = k
    return shape


class DiagonalTransform:
    """A diagonal-form matrix applied to ciphertexts in one level (BSGS, hoisted baby steps).

    Args:
        evaluator: server-side evaluator (its encoder encodes the diagonals).
        diagonals: ``{offset: complex (slots,)}``.
        name: for errors and profiles.
    Plaintexts are encoded at the scale that lands the rescaled result exactly on the table
    scale of the level below (``scale_{l-1} * q_l / ct.scale``), so an input at any scale
    (ModRaise's q_0) comes out on the table; :meth:`prepare` precomputes them for one
    (level, input scale), otherwise they are encoded at each use.
    """

    def __init__(self, evaluator: Evaluator, diagonals: Diagonals, name: str = "dft") -> None:
        self.ev = evaluator
        self.slots = evaluator.params.slots
        self.name = name
        self.diagonals = diagonals
        self.shape = bsgs_shape(sorted(diagonals), self.slots)
        self._prepared: tuple[int, float] | None = None
        self._plain: dict[tuple[int, int], Plaintext] = {}

    @property
    def nnz(self) -> int:
        return len(self.diagonals)

    def rotations(self) -> list[int]:
        """Rotation steps (slots) whose keys :meth:`apply` needs."""
        return sorted(set(self.shape.babies) | set(self.shape.giants(self.slots)))

    def _pt_scale(self, level: int, in_scale: float) -> float:
        p = self.ev.params
        return p.scale_at(p.level_below(level)) * p.rescale_modulus(level) / in_scale

    def _encode(self, g: int, b: int, level: int, in_scale: float) -> Plaintext:
        sh = self.shape
        d = np.roll(self.diagonals[sh.terms[g][b]], sh.stride * sh.n1 * g)
        return self.ev.encoder.encode(d, level=level, scale=self._pt_scale(level, in_scale))

    def prepare(self, level: int, in_scale: float) -> int:
        """Encode every diagonal for inputs at ``level`` and ``in_scale``; returns the bytes held."""
        self._plain = {(g, b): self._encode(g, b, level, in_scale)
                       for g, bs in self.shape.terms.items() for b in bs}
        self._prepared = (level, in_scale)
        return sum(int(pt.data.nbytes) for pt in self._plain.values())

    def apply(self, ct: Ciphertext, rescale: bool = True) -> Ciphertext:
        """M x in the slots of ``ct`` -> one (possibly composite) level lower, on that level's table scale.

        ``rescale=False`` returns the product before its rescale (at the input's level, scale
        ``scale_{l-1} * q_l``): a key switch applied there adds noise 2^50 times smaller
        relative to the message; finish with :meth:`finish`.
        """
        ev, sh = self.ev, self.shape
        if ct.level < 1:
            raise ValueError(f"{self.name}: the input is at level 0; a diagonal transform needs one level")
        ready = self._prepared is not None and self._prepared[0] == ct.level and \
            abs(self._prepared[1] - ct.scale) <= 1e-12 * ct.scale
        babies = ev.rotate_hoisted(ct, sorted({sh.stride * b for bs in sh.terms.values() for b in bs}))
        groups: dict[int, list[int]] = {}              # giant steps equal modulo the slots share one rotation
        for g in sorted(sh.terms):
            groups.setdefault((sh.stride * sh.n1 * g) % self.slots, []).append(g)
        out = None
        for step, gs in groups.items():
            inner = None
            for g in gs:
                for b in sorted(sh.terms[g]):
                    pt = self._plain[(g, b)] if ready else self._encode(g, b, ct.level, ct.scale)
                    x = babies[sh.stride * b]
                    inner = ev.mul_plain(x, pt) if inner is None else ev.mul_plain_add(inner, x, pt)
            if step:
                inner = ev.rotate(inner, step)
            out = inner if out is None else ev.add(out, inner)
        return self.finish(out) if rescale else out

    def finish(self, ct: Ciphertext) -> Ciphertext:
        """Rescale a product from :meth:`apply` (``rescale=False``) onto the table scale below."""
        res = self.ev.rescale(ct)
        res.scale = self.ev.params.scale_at(res.level)   # exact up to float rounding of the chosen pt scale
        return res
