"""Ciphertext x ciphertext attention products in head-major diagonal packing, baby-step giant-step.

The per-tile attention of :mod:`aegis.program` (tiles of tokens x channels, channel-major) reduces
the head dimension *inside* each ciphertext: every score diagonal costs a rotate-and-sum of
log2(head_dim) rotations plus a move, and every (query block, key block) pair redoes the key and
value token rotations.  Here the head dimension runs *across* ciphertexts instead, so the
reduction over it is additions, and the token diagonals are reached with baby-step giant-step
rotations shared by every head and every channel.  This is the diagonal-major ciphertext-ciphertext
matrix product with baby-step giant-step of THOR (Moon, Yoo, Jiang, Kim, "THOR: Secure Transformer
Inference with Homomorphic Encryption", IACR ePrint 2024/1881), in the layout below.

**Layout** (:class:`HeadMajor`).  ``heads`` heads (padded to a power of two ``Hp``) each own a
segment of ``seg = slots / Hp`` slots; one ciphertext per head channel c holds, for every head h and
token t < ``tokens`` <= seg::

    slot(h, t) = h * seg + t        value X_h[t, c]

so Q, K and V of a layer are ``head_dim`` ciphertexts each (per token group of ``seg`` tokens).

**Masked token rotation** ``M_s`` (:func:`token_rotations`): every segment rotated cyclically by s
tokens modulo ``tokens``, ``M_s(x)[h, t] = x[h, (t + s) mod tokens]`` (zero on padding):
``rot_s(x) * lo_s + rot_(s - tokens)(x) * hi_s``, two rotations (hoisted together when one
ciphertext is rotated by several s) and one level.

**Scores** (:func:`diagonal_scores`): diagonal r holds ``S_r[h, t] = sum_c Q_h[t, c] K_h[(t + r)
mod tokens, c]`` (unscaled).  With r = a + n1 b,
``S_r = M_(n1 b)( sum_c M_(-n1 b)(Q_c) * M_a(K_c) )``: n1 key baby steps and n2 query giant steps per
channel, products summed over the channels *before* one relinearisation per diagonal, one giant
rotation per diagonal.  Depth 3 (mask, product, mask).

**Context** (:func:`diagonal_context`): ``C_c[h, t] = sum_r P_r[h, t] V_h[(t + r) mod tokens, c]`` with
``C_c = sum_b M_(n1 b)( sum_a M_(-n1 b)(P_(a + n1 b)) * M_a(V_c) )``: per (giant step, channel)
one relinearisation and one giant rotation.  Depth 3.

Row sums of P are additions (every diagonal holds the same (head, query) slots), and the
normalisation multiplies each ``C_c`` by the inverse row sums slot for slot: no broadcast.

:func:`attention_counts` gives the primitive counts of both products for a sequence of any length
(token groups of ``seg`` tokens: every (query group, key group) pair is one diagonal product; key
and value baby steps are computed once per key group, query giant steps once per query group).
The tests check it against what the functions here do on a counting evaluator, and check the
products against NumPy on plaintext and on real CKKS.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CT = Any


def _pow2_at_least(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


@dataclass(frozen=True)
class HeadMajor:
    """Head-major packing of per-head (tokens x channels) matrices, one ciphertext per channel.

    Attributes:
        slots: CKKS slots (N/2).
        heads: attention heads (padded to a power of two ``padded_heads`` in the slots).
        tokens: tokens per ciphertext (<= ``segment``).
    """

    slots: int
    heads: int
    tokens: int

    def __post_init__(self) -> None:
        if self.heads < 1 or self.tokens < 1:
            raise ValueError(f"need at least one head and one token, got heads={self.heads}, tokens={self.tokens}")
        if self.padded_heads > self.slots:
            raise ValueError(f"{self.heads} heads do not fit {self.slots} slots")
        if self.tokens > self.segment:
            raise ValueError(f"{self.tokens} tokens exceed the {self.segment}-slot segment of each of "
                             f"{self.padded_heads} heads; split the sequence into token groups of {self.segment}")

    @property
    def padded_heads(self) -> int:
        return _pow2_at_least(self.heads)

    @property
    def segment(self) -> int:
        """Slots per head (the most tokens one ciphertext holds)."""
        return self.slots // self.padded_heads

    def pack(self, per_head: np.ndarray) -> list[np.ndarray]:
        """(heads, tokens, channels) -> one slot vector per channel."""
        h, t, c = per_head.shape
        if h != self.heads or t != self.tokens:
            raise ValueError(f"expected ({self.heads}, {self.tokens}, channels), got {per_head.shape}")
        out = []
        for ch in range(c):
            v = np.zeros(self.slots)
            for hd in range(h):
                v[hd * self.segment: hd * self.segment + t] = per_head[hd, :, ch]
            out.append(v)
        return out

    def unpack(self, vec: np.ndarray) -> np.ndarray:
        """One slot vector -> (heads, tokens)."""
        v = np.asarray(vec).real
        return np.stack([v[h * self.segment: h * self.segment + self.tokens] for h in range(self.heads)])

    def masks(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """(lo_s, hi_s) of :func:`token_rotations` for a shift s in [0, tokens)."""
        t = np.arange(self.segment)
        lo_seg = (t < self.tokens - s).astype(np.float64)
        hi_seg = ((t >= self.tokens - s) & (t < self.tokens)).astype(np.float64)
        lo, hi = np.zeros(self.slots), np.zeros(self.slots)
        for h in range(self.heads):
            lo[h * self.segment:(h + 1) * self.segment] = lo_seg
            hi[h * self.segment:(h + 1) * self.segment] = hi_seg
        return lo, hi


#: ``plain(ct, key, vector)``: ct times the plaintext ``vector()`` (not rescaled); ``key`` names the vector so a
#: caller can encode it once (the executor caches its masks this way)
PlainMul = Callable[[CT, tuple, Callable[[], np.ndarray]], CT]


def token_rotations(ev: Any, ct: CT, shifts: Sequence[int], lay: HeadMajor,
                    plain: PlainMul | None = None) -> dict[int, CT]:
    """``{s: M_s(ct)}`` for every shift (tokens, any sign; taken modulo ``tokens``), one level down.

    All rotations of ``ct`` share one ModUp (``rotate_hoisted``); M_0 is the valid-slot mask alone."""
    mul = plain or (lambda c, key, vec: ev.mul_plain(c, vec()))
    norm = {s: s % lay.tokens for s in shifts}
    steps = shift_steps(norm.values(), lay.tokens)
    rots = ev.rotate_hoisted(ct, steps) if steps else {}
    out: dict[int, CT] = {}
    for s, s0 in norm.items():
        if s0 == 0:
            out[s] = ev.rescale(mul(ct, ("hm-lo", lay, 0), lambda: lay.masks(0)[0]))
            continue
        lo = mul(rots[s0], ("hm-lo", lay, s0), lambda: lay.masks(s0)[0])
        hi = mul(rots[s0 - lay.tokens], ("hm-hi", lay, s0), lambda: lay.masks(s0)[1])
        out[s] = ev.rescale(ev.add(lo, hi))
    return out


def bsgs_split(tokens: int, baby: int | None = None) -> tuple[int, int]:
    """(n1, n2) baby and giant steps covering ``tokens`` diagonals (n1 * n2 >= tokens); default n1 ~ sqrt."""
    n1 = baby or _pow2_at_least(max(1, math.isqrt(tokens)))
    n1 = max(1, min(n1, tokens))
    return n1, -(-tokens // n1)


def shift_steps(shifts: Iterable[int], tokens: int) -> list[int]:
    """Slot rotation steps of masked token rotations by ``shifts`` (any sign, modulo ``tokens``): s and s - tokens
    for every non-zero s (:func:`token_rotations`)."""
    return sorted({x for s in shifts if s % tokens for x in (s % tokens, s % tokens - tokens)})


def rotation_steps(lay: HeadMajor, baby: int | None = None) -> list[int]:
    """Slot rotation steps (Galois keys) :func:`diagonal_scores` and :func:`diagonal_context` use."""
    n1, n2 = bsgs_split(lay.tokens, baby)
    return shift_steps([*range(1, n1), *(s * n1 * b for b in range(1, n2) for s in (1, -1))], lay.tokens)


def sum_of_products(ev: Any, pairs: list[tuple[CT, CT]]) -> CT:
    """sum a_i * b_i: tensor products added as 3-part ciphertexts, then one relinearisation and one rescale."""
    acc = None
    for a, b in pairs:
        t = ev.mul(a, b)
        acc = t if acc is None else ev.add(acc, t)
    return ev.rescale(ev.relinearize(acc))


def diagonal_scores(ev: Any, q: Sequence[CT], k: Sequence[CT], lay: HeadMajor, baby: int | None = None) -> list[CT]:
    """``[S_0 .. S_(tokens-1)]``: diagonal r of Q K^T for every head (module docstring), three levels below Q/K.

    ``q``, ``k``: one ciphertext per head channel, same level."""
    if len(q) != len(k) or not q:
        raise ValueError(f"Q and K need the same number (>= 1) of channel ciphertexts, got {len(q)} and {len(k)}")
    n1, n2 = bsgs_split(lay.tokens, baby)
    kb = [token_rotations(ev, kc, range(n1), lay) for kc in k]
    out: list[CT] = [None] * lay.tokens
    for b in range(n2):
        qg = [token_rotations(ev, qc, [-n1 * b], lay)[-n1 * b] for qc in q]
        for a in range(n1):
            r = a + n1 * b
            if r >= lay.tokens:
                break
            s = sum_of_products(ev, [(qg[c], kb[c][a]) for c in range(len(q))])
            out[r] = token_rotations(ev, s, [n1 * b], lay)[n1 * b]
    return out


def diagonal_context(ev: Any, p: Sequence[CT], v: Sequence[CT], lay: HeadMajor, baby: int | None = None) -> list[CT]:
    """``[C_0 .. C_(channels-1)]``: sum_r P_r x (V rotated by r tokens), per head channel (module docstring).

    ``p``: the ``tokens`` diagonals (same level); ``v``: one ciphertext per head channel."""
    if len(p) != lay.tokens:
        raise ValueError(f"expected {lay.tokens} diagonals, got {len(p)}")
    n1, n2 = bsgs_split(lay.tokens, baby)
    vb = [token_rotations(ev, vc, range(n1), lay) for vc in v]
    out: list[CT] = [None] * len(v)
    for b in range(n2):
        rs = [a + n1 * b for a in range(n1) if a + n1 * b < lay.tokens]
        pg = [token_rotations(ev, p[r], [-n1 * b], lay)[-n1 * b] for r in rs]
        for c in range(len(v)):
            s = sum_of_products(ev, [(pg[i], vb[c][r - n1 * b]) for i, r in enumerate(rs)])
            t = token_rotations(ev, s, [n1 * b], lay)[n1 * b]
            out[c] = t if out[c] is None else ev.add(out[c], t)
    return out


def attention_counts(tokens: int, heads: int, head_dim: int, slots: int, baby: int | None = None) -> dict[str, int]:
    """Primitive counts of Q K^T and P V for a sequence of ``tokens`` tokens (all heads, one layer).

    One token group when ``tokens`` fits a segment (exact: the tests check it against what
    :func:`diagonal_scores` and :func:`diagonal_context` do on a counting evaluator); otherwise
    G = ceil(tokens / segment) groups, each padded to the segment, and G^2 (query group, key group)
    diagonal products, with key/value baby steps once per key group and query giant steps once per
    query group.  Keys: ``key_switches`` (rotations + relinearisations), ``rotations``, ``relins``,
    ``tensors``, ``pmuls``, ``depth`` (levels each product uses), ``token_groups``, ``segment``."""
    seg = HeadMajor(slots, heads, 1).segment
    g = -(-tokens // seg)
    t = tokens if g == 1 else seg
    n1, n2 = bsgs_split(t, baby)
    nb = min(n1, t)                          # baby shifts 0 .. nb-1 (shift 0: a mask only)

    def masked(shifts: int, zeros: int) -> tuple[int, int]:
        """(rotations, plaintext multiplies) of token_rotations with ``shifts`` non-zero and ``zeros`` zero shifts."""
        return 2 * shifts, 2 * shifts + zeros

    per_key_group = [masked(nb - 1, 1)] * (2 * head_dim)                  # K and V baby steps
    per_query_group = [masked(n2 - 1, 1)] * head_dim                      # Q giant steps
    per_pair = [masked(t - nb, nb),                                      # scores: giant M per diagonal
                masked(t - nb, nb),                                      # context: P giant steps
                masked((n2 - 1) * head_dim, head_dim)]                   # context: giant M per (b, channel)
    rot = g * sum(r for r, _ in per_key_group + per_query_group) + g * g * sum(r for r, _ in per_pair)
    pmul = g * sum(p for _, p in per_key_group + per_query_group) + g * g * sum(p for _, p in per_pair)
    relin = g * g * (t + n2 * head_dim)
    tens = g * g * 2 * t * head_dim
    return {"key_switches": rot + relin, "rotations": rot, "relins": relin, "tensors": tens, "pmuls": pmul,
            "depth": 3, "token_groups": g, "segment": seg}
