"""Named Transformer workloads: model shapes, sequence length, CKKS preset and lowering knobs.

A :class:`Workload` is the input of the whole pipeline (DESIGN §2).  Model shapes are
the published ones; ``tiny`` is a small configurable model for tests and for running
real CKKS on this CPU.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from fhe.params import CKKSParameters, preset, preset_names

#: the secure preset workloads plan with: bootstrapping runs on it (the composite region of n16-boot for
#: CoeffToSlot, EvalMod and SlotToCoeff; 11 levels left for the application, so the diagonal attention's chain
#: -- masked Q/K, product, exp, product, giant rotation -- runs between two bootstraps)
DEFAULT_WORKLOAD_PRESET = "n16-boot-11"


class WorkloadError(ValueError):
    """A workload that cannot be built; the message lists what would be valid."""


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a Transformer encoder/decoder stack.

    Attributes:
        name: model name.
        d_model: hidden size (channels).
        heads: attention heads; ``d_model / heads`` is the head dimension.
        d_ff: FFN intermediate size.
        layers: Transformer layers.
        causal: decoder-style causal attention (a query attends to earlier tokens only).
        pre_norm: LayerNorm before attention/FFN (GPT-2) instead of after the residual (BERT).
        ln_eps: the epsilon LayerNorm adds to the variance.
        activation: ``"gelu_tanh"`` (tanh approximation) or ``"gelu_erf"`` (exact GELU, BERT/MiniLM).
    """

    name: str
    d_model: int
    heads: int
    d_ff: int
    layers: int
    causal: bool = False
    pre_norm: bool = False
    ln_eps: float = 1e-5
    activation: str = "gelu_tanh"

    ACTIVATIONS = ("gelu_tanh", "gelu_erf")

    def __post_init__(self) -> None:
        if self.activation not in self.ACTIVATIONS:
            raise WorkloadError(f"{self.name}: unknown activation {self.activation!r}; valid: "
                                f"{', '.join(self.ACTIVATIONS)}")
        if self.d_model % self.heads:
            raise WorkloadError(f"{self.name}: d_model {self.d_model} must be a multiple of heads {self.heads}")
        for f in ("d_model", "heads", "d_ff", "layers"):
            if getattr(self, f) < 1:
                raise WorkloadError(f"{self.name}: {f} must be >= 1, got {getattr(self, f)}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


MODELS: dict[str, ModelConfig] = {
    "bert-base": ModelConfig("bert-base", 768, 12, 3072, 12),
    "bert-large": ModelConfig("bert-large", 1024, 16, 4096, 24),
    # sentence-transformers/all-MiniLM-L6-v2 (BERT architecture, 6 layers)
    "minilm-l6": ModelConfig("minilm-l6", 384, 12, 1536, 6, ln_eps=1e-12, activation="gelu_erf"),
    "gpt2-small": ModelConfig("gpt2-small", 768, 12, 3072, 12, causal=True, pre_norm=True),
    # small model for tests and CPU runs; override fields with tiny_overrides
    "tiny": ModelConfig("tiny", 32, 2, 64, 1),
}


def get_model(name: str, **overrides: Any) -> ModelConfig:
    """The named model; ``overrides`` (d_model, heads, d_ff, layers, ...) are allowed for ``tiny``; a
    published model takes only ``layers`` (its first K layers, K <= the published depth)."""
    if name not in MODELS:
        raise WorkloadError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    if overrides:
        if name != "tiny":
            if set(overrides) != {"layers"}:
                raise WorkloadError(f"only 'tiny' is configurable; {name!r} has the published shape "
                                    "(only --layers K truncates it)")
            if not 1 <= overrides["layers"] <= MODELS[name].layers:
                raise WorkloadError(f"{name} has {MODELS[name].layers} layers; --layers must be 1.."
                                    f"{MODELS[name].layers}, got {overrides['layers']}")
        return replace(MODELS[name], **overrides)
    return MODELS[name]


@dataclass(frozen=True)
class Approximations:
    """Polynomial approximations of the non-linear functions (Chebyshev degree and input interval).

    Degrees and intervals follow the ranges NEXUS/THOR report for BERT activations; the
    executor fits the coefficients with :func:`fhe.circuits.chebyshev_fit` on these intervals.
    """

    exp_degree: int = 15              # relative error 3.4e-7 on [-4, 4]
    exp_interval: tuple[float, float] = (-4.0, 4.0)
    inverse_degree: int = 63          # 1/x for the softmax denominator, on [keys e^lo, keys e^hi] (exp interval)
    inv_sqrt_degree: int = 63         # 1/sqrt(x) for LayerNorm
    inv_sqrt_interval: tuple[float, float] = (0.05, 8.0)   # LayerNorm variance range
    gelu_degree: int = 31
    gelu_interval: tuple[float, float] = (-8.0, 8.0)
    #: exp(x) = p(x)^(2^s) with p ~ exp(x / 2^s) on exp_interval: relative accuracy over wide score ranges
    exp_squarings: int = 0
    #: interval of the softmax row sums for 1/x (None: keys x [e^lo, e^hi] from the exp interval)
    inverse_interval: tuple[float, float] | None = None
    #: constant subtracted from the scores of (layer, head) before exp (softmax is unchanged by it)
    score_shift: tuple[tuple[float, ...], ...] = ()
    #: position-dependent part of the shift: coefficients (c_1 .. c_k) per (layer, head) of
    #: sum_k c_k u^k, u = query index / (tokens - 1) in [0, 1] (empty: the shift is constant).  A
    #: per-row constant keeps softmax exact; it follows heads whose row maxima grow with position.
    score_shift_position: tuple[tuple[tuple[float, ...], ...], ...] = ()

    def shift(self, layer: int, head: int, rows: np.ndarray, tokens: int) -> np.ndarray:
        """The shift subtracted from the scores of query rows ``rows`` (token indices; padded rows
        i >= tokens repeat row i mod tokens) of (layer, head) in a sequence of ``tokens`` tokens."""
        u = (np.asarray(rows) % tokens) / max(tokens - 1, 1)
        out = np.full(u.shape, float(self.score_shift[layer][head]))
        if self.score_shift_position:
            for k, c in enumerate(self.score_shift_position[layer][head], start=1):
                out += c * u ** k
        return out


@dataclass(frozen=True)
class Workload:
    """Everything that determines the HE program.

    Attributes:
        model: the Transformer shape.
        seq_len: tokens in the (encrypted) input sequence.
        params_name: CKKS preset (secure by default; ``toy-*`` needs ``insecure``).
        insecure: allow an insecure ``toy-*`` preset (tests only).
        token_block: tokens per ciphertext tile (None: the packing default, see aegis.packing).
        weights: ``"on_the_fly"`` (raw weights resident, diagonals encoded when used:
            compute for memory) or ``"encoded"`` (all diagonal plaintexts resident).
        approx: non-linear approximations.
        token_rotations: how attention rotates K and V by every token offset: ``bsgs``
            (baby-step giant-step: few Galois keys) or ``direct`` (one key per offset).
        attention: ``tile`` (per-tile attention on token x channel tiles, head sums inside each
            ciphertext), ``diagonal`` (head-major diagonal products, :mod:`fhe.circuits.attention`:
            token blocks of slots / heads tokens, Q, K, V and the context one ciphertext per head channel)
            or ``auto`` (the one with less work where the diagonal form applies:
            :func:`aegis.program.choose_attention`; a lowered program's workload holds the form chosen).
        attention_baby: baby steps of the diagonal attention's token rotations (memory: K and V are
            kept in this many rotated copies per key block while it is attended).
    """

    model: ModelConfig
    seq_len: int
    params_name: str = DEFAULT_WORKLOAD_PRESET
    insecure: bool = False
    token_block: int | None = None
    weights: str = "on_the_fly"
    approx: Approximations = field(default_factory=Approximations)
    token_rotations: str = "bsgs"
    attention: str = "auto"
    attention_baby: int = 8

    WEIGHT_MODES = ("on_the_fly", "encoded")
    TOKEN_ROTATIONS = ("bsgs", "direct")
    ATTENTION = ("auto", "tile", "diagonal")

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise WorkloadError(f"seq_len must be >= 1, got {self.seq_len}")
        if self.weights not in self.WEIGHT_MODES:
            raise WorkloadError(f"unknown weights mode {self.weights!r}; valid: {', '.join(self.WEIGHT_MODES)}")
        if self.token_rotations not in self.TOKEN_ROTATIONS:
            raise WorkloadError(f"unknown token_rotations {self.token_rotations!r}; valid: "
                                f"{', '.join(self.TOKEN_ROTATIONS)}")
        if self.attention not in self.ATTENTION:
            raise WorkloadError(f"unknown attention {self.attention!r}; valid: {', '.join(self.ATTENTION)}")
        if self.attention == "diagonal" and self.token_block is not None:
            raise WorkloadError("--attention diagonal sets the token block itself (slots / heads); drop --token-block")
        if self.attention_baby < 1:
            raise WorkloadError(f"attention_baby must be >= 1, got {self.attention_baby}")
        if self.params_name not in preset_names():
            raise WorkloadError(f"unknown CKKS preset {self.params_name!r}; valid: {', '.join(preset_names())}")

    def params(self) -> CKKSParameters:
        """The CKKS parameter set (raises SecurityError for a toy set without ``insecure``)."""
        return _params(self.params_name, self.insecure)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["approx"] = {k: listed(v) for k, v in d["approx"].items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Workload":
        m = ModelConfig(**d["model"])
        ap = {k: tupled(v) for k, v in d["approx"].items()}
        rest = {k: v for k, v in d.items() if k not in ("model", "approx")}
        return cls(model=m, approx=Approximations(**ap), **rest)


def listed(v: Any) -> Any:
    """Nested tuples as nested lists (JSON)."""
    return [listed(x) for x in v] if isinstance(v, (tuple, list)) else v


def tupled(v: Any) -> Any:
    """Nested lists as nested tuples (a hashable :class:`Approximations` field from JSON)."""
    return tuple(tupled(x) for x in v) if isinstance(v, (tuple, list)) else v


_PARAM_CACHE: dict[tuple[str, bool], CKKSParameters] = {}


def _params(name: str, insecure: bool) -> CKKSParameters:
    key = (name, insecure)
    if key not in _PARAM_CACHE:
        _PARAM_CACHE[key] = preset(name, allow_insecure=insecure)
    return _PARAM_CACHE[key]
