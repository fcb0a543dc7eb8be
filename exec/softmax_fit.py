"""The softmax of all-MiniLM-L6-v2 at 128, 512 and 2048 tokens: range control, fitted intervals, errors.

The encrypted softmax (:mod:`exec.ops`: ``attn_qk`` adds the shift, ``attn_exp``, ``attn_rowsum``,
``attn_norm``) computes, per query row i of (layer, head),

    e_ij = p(s_ij - c(i))^(2^s),   p ~ exp(x / 2^s) on [lo, hi],    prob_ij = e_ij * q(sum_j e_ij)

with q ~ 1/x on the row-sum interval.  This module chooses c, [lo, hi], s, the degrees and the
row-sum interval at one sequence length from measured activations, and measures the error of the
result against the exact softmax (``docs/softmax.md`` has the argument in full):

* **proven** (:func:`score_bounds`): every layer input of this post-LayerNorm model is
  g * z + b with z orthogonal to the all-ones vector and ||z||^2 = d var / (var + eps) < d, so
  |s_ij| <= B(layer, head) = d ||P A^T B_k P|| + sqrt(d) (||P A^T b_k'|| + ||P B_k^T a'||) + |a' . b_k'|
  for any input of any length (A, B_k: g-scaled query / key weights of the head, a', b_k' their
  offsets, P the projection off the ones vector).  The exp interval's lower end is
  -(max B + max c): no score of any input falls below it, where the polynomial would diverge;
* **measured** (at each length, on concatenated fit sentences): the shift c(i) is a polynomial in
  the query's relative position u = i / (T - 1) (degree ``POSITION_DEGREE``; heads such as
  layer 0's previous-token head have row maxima that grow with position), fitted to the row maxima
  and raised to their upper envelope + ``SHIFT_MARGIN``; the exp interval's upper end
  (``EXP_HI``) leaves 3.5 above that envelope; the row-sum interval is the measured range widened
  by ``ROWSUM_MARGIN`` (low end) and ``ROWSUM_HI_MARGIN`` (high end), cut to its top
  ``INV_LOG_RANGE`` (natural log) when no degree of ``INV_DEGREES`` inverts it within ``INV_TOL``
  (rows below are then outside the polynomial's interval: counted in the error table).  Exp takes
  the shallowest degree / squarings meeting ``EXP_TOL``; 1/x the lowest degree meeting ``INV_TOL``.

Inputs (:func:`token_ids`): the sentences of ``data/minilm/sentences.txt`` concatenated in seeded
random orders, cycled to the length, between one [CLS] and one [SEP].  MiniLM has 512 position
embeddings; a longer input (2048) takes position i * 511 / (T - 1) with the embedding linearly
interpolated between the two neighbouring rows (position interpolation): every position vector
stays inside the trained ones' convex hull, the whole score range of the model's positional heads
is swept, and each row has T keys, so the row sums are as long as the length makes them.  The
error table compares the approximation with the exact model on the same input, so the
construction needs realistic activation ranges, not a meaningful text.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.polynomial import chebyshev as C

from aegis.workloads import Approximations
from fhe.circuits import chebyshev_fit
from fhe.circuits.polynomial import chebyshev_depth

from . import minilm
from .minilm_fit import sentences
from .model import gelu_erf, layer_norm

#: the lengths of the error table
LENGTHS = (128, 512, 2048)
#: polynomial degree of the position-dependent shift (0: one constant per head)
POSITION_DEGREE = 2
#: the shift is the row maxima's upper envelope + this (scores units)
SHIFT_MARGIN = 0.5
#: upper end of the exp interval (shifted-score units): room for rows whose maximum passes the envelope
#: (held-out rows passed it by up to 1.3 at 32 tokens fitted on 3 inputs, 2.4 on one); exp(3) = 20 at most
EXP_HI = 3.0
#: the measured row-sum range is widened by these factors (low end divided, high end multiplied): a row
#: sum above the interval meets the polynomial's growth outside it (catastrophic), one below it is damped
ROWSUM_MARGIN, ROWSUM_HI_MARGIN = 2.0, 4.0
#: exp: largest |p^(2^s) - exp| relative to exp(x) where exp(x) >= e^-EXP_REL_FLOOR, absolute below it
EXP_TOL, EXP_REL_FLOOR = 1e-4, 20.0
#: 1/x: largest relative error on the row-sum interval
INV_TOL = 2.5e-3
EXP_CHOICES = tuple((d, s) for s in range(5, 10) for d in (7, 11, 15, 23, 31))
INV_DEGREES = (31, 63, 127, 255, 511)
#: when the measured row sums span more than the highest degree can invert within INV_TOL, the interval
#: is [hi e^-INV_LOG_RANGE, hi] (rows below it are left out: see docs/softmax.md).  Degree 511 on e^10:
#: 2.0e-3 (depth 11); at 512 tokens it left 3,653 of 36,864 held-out rows below against 9,446 for
#: degree 255 on e^8 (1.7e-4, depth 10), embedding cosine 0.9911 against 0.9802 (1023 on e^12: 1.2e-2,
#: depth 12, 0.9932)
INV_LOG_RANGE = 10.0


# ---- inputs ------------------------------------------------------------------------------------
def token_ids(texts: list[str], tokens: int, seed: int) -> np.ndarray:
    """[CLS] + the texts' tokens in seeded random orders, cycled to ``tokens`` - 2 + [SEP]."""
    if tokens < 3:
        raise ValueError(f"tokens must be >= 3, got {tokens}")
    rng = np.random.default_rng(seed)
    parts = [minilm.tokenize(t) for t in texts]
    cls, sep = int(parts[0][0]), int(parts[0][-1])
    body: list[int] = []
    while len(body) < tokens - 2:
        for i in rng.permutation(len(parts)):
            body.extend(int(t) for t in parts[i][1:-1])
    return np.asarray([cls] + body[: tokens - 2] + [sep], dtype=np.int64)


def position_ids(tokens: int, positions: int = 512) -> np.ndarray:
    """Position of each token: i up to the model's ``positions``, else i (positions - 1) / (tokens - 1)."""
    i = np.arange(tokens, dtype=np.float64)
    return i if tokens <= positions else i * (positions - 1) / (tokens - 1)


def embed(ids: np.ndarray) -> np.ndarray:
    """The embedding layer at :func:`position_ids` (interpolated position embeddings past 512)."""
    mdl = minilm.load()
    pos = position_ids(len(ids), mdl.position.shape[0])
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, mdl.position.shape[0] - 1)
    f = (pos - lo)[:, None]
    pe = (1 - f) * mdl.position[lo] + f * mdl.position[hi]
    return layer_norm(mdl.word[ids] + pe + mdl.token_type[0], mdl.emb_ln_g, mdl.emb_ln_b, mdl.eps)


# ---- the proven score bound ----------------------------------------------------------------------
def score_bounds() -> np.ndarray:
    """(layers, heads): B with |score| <= B for every input (module docstring; scores include the
    folded 1 / sqrt(head_dim))."""
    mdl, m = minilm.load(), minilm.MODEL
    d, dh = m.d_model, m.head_dim
    proj = np.eye(d) - 1.0 / d
    norms = [(mdl.emb_ln_g, mdl.emb_ln_b)] + [(lw.ln2_g, lw.ln2_b) for lw in mdl.layers[:-1]]
    out = np.zeros((m.layers, m.heads))
    for li, lw in enumerate(mdl.layers):
        g, b = norms[li]
        for h in range(m.heads):
            sl = slice(h * dh, (h + 1) * dh)
            a_w, a_c = g[:, None] * lw.wq[:, sl], b @ lw.wq[:, sl] + lw.bq[sl]
            k_w, k_c = g[:, None] * lw.wk[:, sl], b @ lw.wk[:, sl] + lw.bk[sl]
            out[li, h] = (d * np.linalg.norm(proj @ a_w @ k_w.T @ proj, 2)
                          + math.sqrt(d) * (np.linalg.norm(proj @ a_w @ k_c) + np.linalg.norm(proj @ k_w @ a_c))
                          + abs(a_c @ k_c))
    return out


# ---- the exact model, layer by layer -------------------------------------------------------------
def _qkv(x: np.ndarray, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lw = minilm.load().layers[layer]
    return x @ lw.wq + lw.bq, x @ lw.wk + lw.bk, x @ lw.wv + lw.bv


def _scores(q: np.ndarray, k: np.ndarray, h: int) -> np.ndarray:
    dh = minilm.MODEL.head_dim
    return q[:, h * dh:(h + 1) * dh] @ k[:, h * dh:(h + 1) * dh].T


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


SoftmaxFn = Callable[[np.ndarray, int, int], np.ndarray]


def attention_out(x: np.ndarray, layer: int, softmax: SoftmaxFn) -> np.ndarray:
    """The attention sublayer's output (ctx W_o + b_o) of ``layer`` on x with ``softmax(scores, layer, head)``."""
    lw, dh = minilm.load().layers[layer], minilm.MODEL.head_dim
    q, k, v = _qkv(x, layer)
    ctx = np.hstack([softmax(_scores(q, k, h), layer, h) @ v[:, h * dh:(h + 1) * dh]
                     for h in range(minilm.MODEL.heads)])
    return ctx @ lw.wo + lw.bo


def after_attention(x: np.ndarray, layer: int, attn: np.ndarray) -> np.ndarray:
    """The rest of a post-LN MiniLM layer, given its attention sublayer's output ``attn`` (exact FFN)."""
    mdl = minilm.load()
    lw = mdl.layers[layer]
    x = layer_norm(x + attn, lw.ln1_g, lw.ln1_b, mdl.eps)
    return layer_norm(x + gelu_erf(x @ lw.w1 + lw.b1) @ lw.w2 + lw.b2, lw.ln2_g, lw.ln2_b, mdl.eps)


def layer_forward(x: np.ndarray, layer: int, softmax: SoftmaxFn) -> np.ndarray:
    """One post-LN MiniLM layer with the given softmax (everything else exact)."""
    return after_attention(x, layer, attention_out(x, layer, softmax))


def exact_softmax(s: np.ndarray, layer: int, head: int) -> np.ndarray:
    return _softmax(s)


# ---- measuring and fitting ---------------------------------------------------------------------
@dataclass
class Measured:
    """What the fit inputs showed at one length (scores in model units, folded 1/sqrt(head_dim))."""

    tokens: int
    inputs: int
    score_range: tuple[float, float]
    shift_position: list[list[list[float]]]       # (layers, heads, POSITION_DEGREE + 1): c_0 .. c_k
    shifted_max: float                            # largest score - shift on the fit inputs
    row_sums: tuple[float, float]                 # sums of exp(score - shift) over each row
    bound: list[list[float]] = field(default_factory=list)


def _row_max(xs: list[np.ndarray], layer: int, head: int) -> tuple[np.ndarray, np.ndarray]:
    u, mx = [], []
    for x in xs:
        q, k, _ = _qkv(x, layer)
        s = _scores(q, k, head)
        u.append(np.arange(len(x)) / max(len(x) - 1, 1))
        mx.append(s.max(1))
    return np.concatenate(u), np.concatenate(mx)


def fit_shift(u: np.ndarray, row_max: np.ndarray, degree: int = POSITION_DEGREE) -> np.ndarray:
    """Coefficients c_0 .. c_degree of the shift c(u): least squares on the row maxima, raised so that
    no row maximum exceeds c(u) - SHIFT_MARGIN."""
    c = np.polynomial.polynomial.polyfit(u, row_max, degree) if degree else np.array([row_max.mean()])
    c[0] += float(np.max(row_max - np.polynomial.polynomial.polyval(u, c))) + SHIFT_MARGIN
    return c


def choose_exp(lo: float, hi: float) -> tuple[int, int, float]:
    """(degree, squarings, error) of the shallowest p^(2^s) meeting EXP_TOL on [lo, hi] (ties: lower degree)."""
    x = np.linspace(lo, hi, 20001)
    ref = np.exp(x)
    best = None
    for d, s in EXP_CHOICES:
        c = chebyshev_fit(lambda y: np.exp(y / 2.0 ** s), (lo, hi), d)
        y = C.chebval((2 * x - lo - hi) / (hi - lo), c)
        for _ in range(s):
            y = y * y
        err = float(np.max(np.abs(y - ref) / np.maximum(ref, math.exp(-EXP_REL_FLOOR))))
        key = (chebyshev_depth(d, (lo, hi)) + s, d)
        if err <= EXP_TOL and (best is None or key < best[0]):
            best = (key, d, s, err)
    if best is None:
        raise ValueError(f"no exp degree/squarings in {EXP_CHOICES} meets {EXP_TOL} on [{lo}, {hi}]")
    return best[1], best[2], best[3]


def inverse_error(degree: int, interval: tuple[float, float]) -> float:
    """Largest relative error of the degree-``degree`` Chebyshev fit of 1/x on ``interval``."""
    a, b = interval
    c = chebyshev_fit(lambda y: 1.0 / y, interval, degree)
    x = np.geomspace(a, b, 20001)
    return float(np.max(np.abs(C.chebval((2 * x - a - b) / (b - a), c) * x - 1.0)))


def choose_inverse(measured: tuple[float, float]) -> tuple[int, tuple[float, float], float]:
    """(degree, interval, error) for 1/x on the measured row-sum range widened by the margins: the
    lowest degree of INV_DEGREES meeting INV_TOL; if none does, the highest degree on the top
    INV_LOG_RANGE (natural log) of the range."""
    interval = (measured[0] / ROWSUM_MARGIN, measured[1] * ROWSUM_HI_MARGIN)
    for d in INV_DEGREES:
        err = inverse_error(d, interval)
        if err <= INV_TOL:
            return d, interval, err
    interval = (interval[1] * math.exp(-INV_LOG_RANGE), interval[1])
    return INV_DEGREES[-1], interval, inverse_error(INV_DEGREES[-1], interval)


def fit(tokens: int, seeds: tuple[int, ...] = (0, 1, 2), degree: int = POSITION_DEGREE,
        base: Approximations | None = None, progress: Callable[[str], None] | None = None
        ) -> tuple[Approximations, Measured]:
    """The softmax approximations for ``tokens`` tokens, measured on the fit sentences concatenated in
    the orders of ``seeds`` (other fields are kept from ``base``, default the MiniLM fit)."""
    from .minilm_fit import load_approximations

    base = base or load_approximations()
    m = minilm.MODEL
    xs = [embed(token_ids(sentences("fit"), tokens, seed)) for seed in seeds]
    bound = score_bounds()
    coef = np.zeros((m.layers, m.heads, degree + 1))
    smin, smax, shifted, rs = np.inf, -np.inf, -np.inf, [np.inf, -np.inf]
    for li in range(m.layers):
        for h in range(m.heads):
            u, mx = _row_max(xs, li, h)
            coef[li, h] = fit_shift(u, mx, degree)
        for x in xs:
            q, k, _ = _qkv(x, li)
            rows = np.arange(len(x)) / max(len(x) - 1, 1)
            for h in range(m.heads):
                s = _scores(q, k, h)
                c = np.polynomial.polynomial.polyval(rows, coef[li, h])[:, None]
                smin, smax = min(smin, float(s.min())), max(smax, float(s.max()))
                shifted = max(shifted, float((s - c).max()))
                r = np.exp(s - c).sum(1)
                rs = [min(rs[0], float(r.min())), max(rs[1], float(r.max()))]
        xs = [layer_forward(x, li, exact_softmax) for x in xs]
        if progress:
            progress(f"fit {tokens} tokens: layer {li + 1}/{m.layers} measured")
    lo = -math.ceil(float(np.max(bound)) + float(np.max([np.polynomial.polynomial.polyval(np.linspace(0, 1, 101), c)
                                                          for c in coef.reshape(-1, degree + 1)])))
    d_exp, squarings, _ = choose_exp(lo, EXP_HI)
    d_inv, inv_iv, _ = choose_inverse((rs[0], rs[1]))
    ap = replace(base, exp_degree=d_exp, exp_squarings=squarings, exp_interval=(float(lo), EXP_HI),
                 inverse_degree=d_inv, inverse_interval=inv_iv,
                 score_shift=tuple(tuple(float(c) for c in coef[li, :, 0]) for li in range(m.layers)),
                 score_shift_position=tuple(tuple(tuple(float(c) for c in coef[li, h, 1:]) for h in range(m.heads))
                                            for li in range(m.layers)) if degree else ())
    meas = Measured(tokens, len(seeds), (smin, smax), coef.tolist(), shifted, (rs[0], rs[1]), bound.tolist())
    return ap, meas


# ---- the approximated softmax ------------------------------------------------------------------
class ApproxSoftmax:
    """The softmax the encrypted program computes (same Chebyshev fits as :mod:`exec.ops`), in float64;
    records the inverse's relative error and the rows outside its interval."""

    def __init__(self, ap: Approximations) -> None:
        self.ap = ap
        lo, hi = ap.exp_interval
        self._exp = chebyshev_fit(lambda y: np.exp(y / 2.0 ** ap.exp_squarings), (lo, hi), ap.exp_degree)
        self._inv = chebyshev_fit(lambda y: 1.0 / y, ap.inverse_interval, ap.inverse_degree)
        self.inv_rel_err = 0.0
        self.rows_below = 0
        self.rows_above = 0
        self.scores_outside = 0
        self.shifted_max = -math.inf

    def exp(self, x: np.ndarray) -> np.ndarray:
        lo, hi = self.ap.exp_interval
        y = C.chebval((2 * x - lo - hi) / (hi - lo), self._exp)
        for _ in range(self.ap.exp_squarings):
            y = y * y
        return y

    def inverse(self, r: np.ndarray) -> np.ndarray:
        a, b = self.ap.inverse_interval
        return C.chebval((2 * r - a - b) / (b - a), self._inv)

    def __call__(self, s: np.ndarray, layer: int, head: int) -> np.ndarray:
        x = s - self.ap.shift(layer, head, np.arange(s.shape[0]), s.shape[0])[:, None]
        lo, hi = self.ap.exp_interval
        self.scores_outside += int(np.count_nonzero((x < lo) | (x > hi)))
        self.shifted_max = max(self.shifted_max, float(x.max()))
        with np.errstate(over="ignore", invalid="ignore"):
            e = self.exp(x)
            r = e.sum(1)
            a, b = self.ap.inverse_interval
            self.rows_below += int(np.count_nonzero(r < a))
            self.rows_above += int(np.count_nonzero(r > b))
            inv = self.inverse(r)
            rel = np.abs(inv * r - 1.0)
            self.inv_rel_err = max(self.inv_rel_err, float(np.nanmax(rel)) if np.isfinite(rel).any() else math.inf)
            if not np.isfinite(rel).all():
                self.inv_rel_err = math.inf
            return e * inv[:, None]


# ---- the error table ---------------------------------------------------------------------------
@dataclass
class ErrorRow:
    """Errors of the approximated softmax against the exact one on one evaluation input."""

    tokens: int
    shift: str                      # "position" (degree POSITION_DEGREE) or "constant"
    input: str
    prob_max_abs: float             # over every (layer, head, row, key), each layer on the exact input
    prob_mean_abs: float
    inv_max_rel: float              # |q(r) r - 1| over every row sum r
    rows_below: int                 # row sums below the inverse interval (of layers x heads x tokens): damped
    rows_above: int                 # row sums above it: the polynomial's growth outside (catastrophic)
    scores_outside: int             # shifted scores outside the exp interval
    shifted_max: float              # largest score - shift (the exp interval ends at EXP_HI)
    attn_cos_min: float             # per-token cosine of the attention sublayer output, worst (layer, token)
    hidden_cos_min: float           # per-token cosine of the 6-layer output (softmax approximated everywhere)
    embedding_cos: float            # mean-pooled, normalised sentence embedding cosine
    exp_degree: int
    exp_squarings: int
    exp_interval: tuple[float, float]
    inverse_degree: int
    inverse_interval: tuple[float, float]
    exp_depth: int
    inverse_depth: int
    damped_weight_max: float        # max of x q(x) on [0, a]: the most a row below the interval can weigh
    seconds: float


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def evaluate(ap: Approximations, ids: np.ndarray, label: str, shift: str) -> ErrorRow:
    """Every error of :class:`ErrorRow` for ``ap`` on the input ``ids``."""
    t0 = time.perf_counter()
    m = minilm.MODEL
    f = ApproxSoftmax(ap)                 # counts rows / scores of the teacher-forced pass only
    run = ApproxSoftmax(ap)
    x = embed(ids)
    xa = x.copy()
    pmax, psum, pcount, attn_cos = 0.0, 0.0, 0, 1.0
    lws, dh = minilm.load().layers, m.head_dim
    for li in range(m.layers):
        q, k, v = _qkv(x, li)
        ctx_a, ctx_e = np.zeros_like(v), np.zeros_like(v)
        with np.errstate(over="ignore", invalid="ignore"):
            for h in range(m.heads):
                s = _scores(q, k, h)
                pa, pe = f(s, li, h), _softmax(s)
                err = np.abs(pa - pe)
                pmax = max(pmax, float(np.max(err))) if np.isfinite(err).all() else math.inf
                psum, pcount = psum + float(err.sum()), pcount + err.size
                ctx_a[:, h * dh:(h + 1) * dh], ctx_e[:, h * dh:(h + 1) * dh] = pa @ v[:, h * dh:(h + 1) * dh], \
                    pe @ v[:, h * dh:(h + 1) * dh]
            attn_e = ctx_e @ lws[li].wo + lws[li].bo
            cos = _cos_rows(ctx_a @ lws[li].wo + lws[li].bo, attn_e)
        attn_cos = min(attn_cos, float(np.nanmin(cos))) if np.isfinite(cos).all() else -math.inf
        x = after_attention(x, li, attn_e)
        with np.errstate(over="ignore", invalid="ignore"):
            xa = layer_forward(xa, li, run)
    with np.errstate(invalid="ignore"):
        hid = _cos_rows(xa, x)
        emb = float(minilm.mean_pool_normalise(xa) @ minilm.mean_pool_normalise(x))
    return ErrorRow(len(ids), shift, label, pmax, psum / pcount if np.isfinite(psum) else math.inf,
                    f.inv_rel_err, f.rows_below, f.rows_above, f.scores_outside, f.shifted_max, attn_cos,
                    float(np.min(hid)) if np.isfinite(hid).all() else -math.inf,
                    emb if math.isfinite(emb) else -math.inf,
                    ap.exp_degree, ap.exp_squarings, tuple(ap.exp_interval), ap.inverse_degree,
                    tuple(ap.inverse_interval),
                    chebyshev_depth(ap.exp_degree, ap.exp_interval) + ap.exp_squarings,
                    chebyshev_depth(ap.inverse_degree, ap.inverse_interval), damped_weight(ap),
                    time.perf_counter() - t0)


def damped_weight(ap: Approximations) -> float:
    """max of x q(x) for x in [0, a] (a fine grid): the sum of the weights a row whose sum lies below the
    inverse's interval can get (1 would be exact; the polynomial outside [a, b] is not 1/x)."""
    f = ApproxSoftmax(ap)
    x = np.linspace(0.0, ap.inverse_interval[0], 100001)
    return float(np.max(x * f.inverse(x)))
