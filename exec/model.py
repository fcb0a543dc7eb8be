"""Model weights, the exact NumPy reference forward pass, and tile packing of activations.

Weights are drawn from a seeded generator, scaled so activations stay inside the
approximation intervals; the published ``minilm-l6`` weights are loaded by
:mod:`exec.minilm`.  The softmax scale 1/sqrt(head_dim) is folded into W_q and b_q.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aegis.packing import Packing
from aegis.workloads import Approximations, ModelConfig

#: approximation ranges that cover the seeded tiny model's activations (scores, LayerNorm variance, GELU input)
TINY_APPROX = Approximations(exp_interval=(-2.0, 2.0), inv_sqrt_interval=(0.05, 2.0), gelu_interval=(-6.0, 6.0))


@dataclass
class LayerWeights:
    wq: np.ndarray
    wk: np.ndarray
    wv: np.ndarray
    bq: np.ndarray
    bk: np.ndarray
    bv: np.ndarray
    wo: np.ndarray
    bo: np.ndarray
    ln1_g: np.ndarray
    ln1_b: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    ln2_g: np.ndarray
    ln2_b: np.ndarray


def random_weights(model: ModelConfig, seed: int = 0, scale: float = 0.5) -> list[LayerWeights]:
    """Seeded weights with N(0, scale^2 / fan_in) entries (q already scaled by 1/sqrt(head_dim))."""
    rng = np.random.default_rng(seed)
    d, f = model.d_model, model.d_ff
    qs = 1.0 / math.sqrt(model.head_dim)

    def w(i: int, o: int) -> np.ndarray:
        return rng.normal(0, scale / math.sqrt(i), (i, o))

    def b(o: int) -> np.ndarray:
        return rng.normal(0, 0.02, o)

    out = []
    for _ in range(model.layers):
        out.append(LayerWeights(
            wq=w(d, d) * qs, wk=w(d, d), wv=w(d, d), bq=b(d) * qs, bk=b(d), bv=b(d), wo=w(d, d), bo=b(d),
            ln1_g=1 + rng.normal(0, 0.05, d), ln1_b=b(d), w1=w(d, f), b1=b(f), w2=w(f, d), b2=b(d),
            ln2_g=1 + rng.normal(0, 0.05, d), ln2_b=b(d)))
    return out


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (GPT-2, the seeded models)."""
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


try:                                   # vectorised when SciPy is present; math.erf element by element otherwise
    from scipy.special import erf as _erf
except ImportError:                    # pragma: no cover - depends on the environment
    _erf_obj = np.frompyfunc(math.erf, 1, 1)

    def _erf(x: np.ndarray) -> np.ndarray:
        return _erf_obj(x).astype(np.float64)


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """GELU with the exact Gaussian CDF, x * Phi(x) (BERT, MiniLM)."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def activation(model: ModelConfig):
    """The model's FFN activation function (elementwise on arrays)."""
    return gelu_erf if model.activation == "gelu_erf" else gelu


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def reference_forward(model: ModelConfig, weights: list[LayerWeights], x: np.ndarray, eps: float | None = None,
                      valid: int | None = None) -> np.ndarray:
    """The exact Transformer (softmax, GELU, LayerNorm) on ``x`` of shape (tokens, d_model).

    ``valid``: only the first ``valid`` tokens are keys (padding mask; the others still get an
    output row, which nobody reads).  ``eps`` defaults to the model's ``ln_eps``.
    """
    T = x.shape[0]
    h, dh = model.heads, model.head_dim
    eps = model.ln_eps if eps is None else eps
    gelu = activation(model)
    keys = np.arange(T) < (T if valid is None else valid)
    for lw in weights:
        ln_in = layer_norm(x, lw.ln1_g, lw.ln1_b, eps) if model.pre_norm else x
        q, k, v = ln_in @ lw.wq + lw.bq, ln_in @ lw.wk + lw.bk, ln_in @ lw.wv + lw.bv
        ctx = np.zeros_like(q)
        mask = (np.tril(np.ones((T, T))) if model.causal else np.ones((T, T))) * keys[None, :]
        for hh in range(h):
            sl = slice(hh * dh, (hh + 1) * dh)
            s = q[:, sl] @ k[:, sl].T
            e = np.exp(s) * mask
            ctx[:, sl] = (e / e.sum(1, keepdims=True)) @ v[:, sl]
        a = ctx @ lw.wo + lw.bo
        if model.pre_norm:
            x = x + a
            f_in = layer_norm(x, lw.ln2_g, lw.ln2_b, eps)
            x = x + gelu(f_in @ lw.w1 + lw.b1) @ lw.w2 + lw.b2
        else:
            x = layer_norm(x + a, lw.ln1_g, lw.ln1_b, eps)
            x = layer_norm(x + gelu(x @ lw.w1 + lw.b1) @ lw.w2 + lw.b2, lw.ln2_g, lw.ln2_b, eps)
    return x


# ---- packing ------------------------------------------------------------------------------------
def pack_tile(pk: Packing, x: np.ndarray, block: int, tile: int) -> np.ndarray:
    """Slot vector of (token block, channel tile): slot c * tb + t holds x[block*tb + t, tile*cb + c]."""
    tb, cb = pk.token_block, pk.channel_block
    sub = np.zeros((tb, cb))
    rows = x[block * tb: (block + 1) * tb, tile * cb: (tile + 1) * cb]
    sub[: rows.shape[0], : rows.shape[1]] = rows
    return sub.T.reshape(-1)


def unpack_tiles(pk: Packing, tiles: dict[tuple[int, int], np.ndarray], tokens: int, channels: int) -> np.ndarray:
    """Inverse of :func:`pack_tile` over all (block, tile) keys."""
    tb, cb = pk.token_block, pk.channel_block
    out = np.zeros((pk.token_blocks * tb, pk.channel_tiles(channels) * cb))
    for (i, j), v in tiles.items():
        out[i * tb: (i + 1) * tb, j * cb: (j + 1) * cb] = np.real(np.asarray(v))[: tb * cb].reshape(cb, tb).T
    return out[:tokens, :channels]


def expand_channels(pk: Packing, per_channel: np.ndarray) -> np.ndarray:
    """A slot vector holding ``per_channel[c]`` in every token slot of channel c."""
    v = np.zeros(pk.channel_block)
    v[: per_channel.shape[0]] = per_channel
    return np.repeat(v, pk.token_block)
