"""Polynomial approximations of all-MiniLM-L6-v2's non-linear functions, fitted to measured ranges.

``python -m exec.minilm_fit`` runs the exact model on the ``[fit]`` sentences of
``data/minilm/sentences.txt``, records the range every approximated function sees, chooses
intervals with margins, writes ``data/minilm/approx.json`` and prints the cosine of the
approximated plaintext model against the exact one on the ``[held-out]`` sentences.

What is approximated (and how the executor evaluates it, :mod:`exec.ops`):

* **softmax exp**: scores of (layer, head) are shifted by a constant ``score_shift`` (the
  largest row maximum seen for that head, +0.5; softmax does not change), then
  ``exp(x) = p(x)^(2^s)`` with ``p ~ exp(x / 2^s)`` of low degree on the score interval
  and ``s`` squarings: the relative error stays small over the whole (wide) score range;
* **softmax inverse**: 1/x on the row sums of the shifted exps.  Its interval is a design
  choice, not the full measured range: a few heads (a previous-token head in layer 0) have
  rows whose maximum lies far below the head's largest, whose row sums would stretch the
  interval to e^-31; those rows are left below the interval (their weights are damped) and
  the lower end is the one that keeps the held-out cosine highest;
* **LayerNorm 1/sqrt(var + eps)** on the measured variances with margins;
* **GELU** (erf) on the measured FFN pre-activations with margins.

Padded token rows repeat the real rows (see :class:`exec.runner.Executor`), so the ranges of
real rows are the ranges of every slot.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.polynomial import chebyshev as C

from aegis.workloads import Approximations, tupled
from fhe.circuits import chebyshev_fit
from fhe.circuits.polynomial import chebyshev_depth

from . import minilm
from .model import gelu_erf, layer_norm
from .ops import target_function

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "minilm"
SENTENCES = DATA_DIR / "sentences.txt"
APPROX_JSON = DATA_DIR / "approx.json"

#: degrees (the depth each costs is in approx.json and docs/ARCHITECTURE.md)
EXP_DEGREE, EXP_SQUARINGS = 7, 7
INVERSE_DEGREE, INV_SQRT_DEGREE, GELU_DEGREE = 255, 127, 127
#: lower end of the inverse interval (see the module docstring): e^-9
INVERSE_LOW = math.exp(-9.0)
SHIFT_MARGIN = 0.5


def sentences(part: str) -> list[str]:
    """The ``fit`` or ``held-out`` sentences of ``data/minilm/sentences.txt``."""
    if part not in ("fit", "held-out"):
        raise ValueError(f"unknown part {part!r}; valid: fit, held-out")
    out: dict[str, list[str]] = {}
    cur = None
    for line in SENTENCES.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            cur = line[1:-1]
            out[cur] = []
        elif cur is not None:
            out[cur].append(line)
    return out[part]


@dataclass
class Ranges:
    """Measured ranges on the fit sentences (min, max of what each function sees)."""

    row_max: list[list[float]]          # (layers, heads): the largest row maximum of the scores
    shifted_scores: tuple[float, float]  # scores minus score_shift
    row_sums: tuple[float, float]        # sums of exp(shifted scores) over the real keys
    variance: tuple[float, float]        # LayerNorm input variance (both LayerNorms)
    gelu_input: tuple[float, float]      # FFN pre-activation


def _heads(q: np.ndarray, k: np.ndarray, dh: int) -> list[np.ndarray]:
    return [q[:, h * dh:(h + 1) * dh] @ k[:, h * dh:(h + 1) * dh].T for h in range(q.shape[1] // dh)]


def measure(texts: list[str]) -> Ranges:
    """Run the exact model on ``texts`` and record the ranges the approximations must cover."""
    mdl, m = minilm.load(), minilm.MODEL
    acts = []
    for text in texts:
        x = mdl.embed(minilm.tokenize(text))
        per_layer = []
        for lw in mdl.layers:
            q, k, v = x @ lw.wq + lw.bq, x @ lw.wk + lw.bk, x @ lw.wv + lw.bv
            scores = _heads(q, k, m.head_dim)
            ctx = np.hstack([(np.exp(s) / np.exp(s).sum(1, keepdims=True)) @ v[:, h * m.head_dim:(h + 1) * m.head_dim]
                             for h, s in enumerate(scores)])
            y = x + ctx @ lw.wo + lw.bo
            x = layer_norm(y, lw.ln1_g, lw.ln1_b, mdl.eps)
            u = x @ lw.w1 + lw.b1
            y2 = x + gelu_erf(u) @ lw.w2 + lw.b2
            per_layer.append((scores, y.var(1), u, y2.var(1)))
            x = layer_norm(y2, lw.ln2_g, lw.ln2_b, mdl.eps)
        acts.append(per_layer)
    row_max = np.full((m.layers, m.heads), -np.inf)
    for per_layer in acts:
        for li, (scores, *_) in enumerate(per_layer):
            for h, s in enumerate(scores):
                row_max[li, h] = max(row_max[li, h], float(s.max()))
    shift = row_max + SHIFT_MARGIN
    sh, rs, var, gi = [np.inf, -np.inf], [np.inf, -np.inf], [np.inf, -np.inf], [np.inf, -np.inf]

    def upd(r: list[float], a: np.ndarray) -> None:
        r[0], r[1] = min(r[0], float(np.min(a))), max(r[1], float(np.max(a)))

    for per_layer in acts:
        for li, (scores, v1, u, v2) in enumerate(per_layer):
            for h, s in enumerate(scores):
                upd(sh, s - shift[li, h])
                upd(rs, np.exp(s - shift[li, h]).sum(1))
            upd(var, v1)
            upd(var, v2)
            upd(gi, u)
    return Ranges(row_max.tolist(), tuple(sh), tuple(rs), tuple(var), tuple(gi))


def fit(r: Ranges) -> Approximations:
    """Intervals with margins around the measured ranges, at the module's degrees."""
    shift = tuple(tuple(round(v + SHIFT_MARGIN, 4) for v in row) for row in r.row_max)
    return Approximations(
        exp_degree=EXP_DEGREE, exp_squarings=EXP_SQUARINGS,
        exp_interval=(math.floor(1.3 * r.shifted_scores[0]), 2.0),
        inverse_degree=INVERSE_DEGREE, inverse_interval=(INVERSE_LOW, round(2.5 * r.row_sums[1], 3)),
        inv_sqrt_degree=INV_SQRT_DEGREE, inv_sqrt_interval=(round(0.5 * r.variance[0], 4), round(1.5 * r.variance[1], 1)),
        gelu_degree=GELU_DEGREE, gelu_interval=(round(1.25 * r.gelu_input[0], 1), round(1.25 * r.gelu_input[1], 1)),
        score_shift=shift)


def depths(ap: Approximations) -> dict[str, int]:
    """Levels each approximation consumes (as :class:`fhe.circuits.PolynomialEvaluator` evaluates it)."""
    return {"exp": chebyshev_depth(ap.exp_degree, ap.exp_interval) + ap.exp_squarings,
            "inverse": chebyshev_depth(ap.inverse_degree, ap.inverse_interval),
            "inv_sqrt": chebyshev_depth(ap.inv_sqrt_degree, ap.inv_sqrt_interval),
            "gelu": chebyshev_depth(ap.gelu_degree, ap.gelu_interval)}


def save(ap: Approximations, r: Ranges, path: Path = APPROX_JSON) -> None:
    doc = {"model": "minilm-l6", "fit_sentences": len(sentences("fit")),
           "measured": asdict(r), "approximations": {k: v for k, v in asdict(ap).items()},
           "depths": depths(ap)}
    path.write_text(json.dumps(doc, indent=1) + "\n")


def load_approximations(path: Path = APPROX_JSON) -> Approximations:
    """The fitted approximations stored in ``data/minilm/approx.json``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `python -m exec.minilm_fit` to measure and fit it")
    d = json.loads(path.read_text())["approximations"]
    return Approximations(**{k: tupled(v) for k, v in d.items()})


# ---- the approximated model in plaintext ---------------------------------------------------------
class Approximated:
    """The four polynomials as NumPy functions: the same Chebyshev fits the executor evaluates."""

    def __init__(self, ap: Approximations) -> None:
        m = minilm.MODEL
        self.ap = ap

        def poly(fn: str, degree: int, iv: tuple[float, float]):
            c = chebyshev_fit(target_function(fn, m, ap), iv, degree)
            a, b = iv
            return lambda x: C.chebval((2 * np.asarray(x) - a - b) / (b - a), c)

        self.p_exp = poly("exp", ap.exp_degree, ap.exp_interval)
        self.inverse = poly("inverse", ap.inverse_degree, ap.inverse_interval)
        self.inv_sqrt = poly("inv_sqrt", ap.inv_sqrt_degree, ap.inv_sqrt_interval)
        self.gelu = poly("gelu", ap.gelu_degree, ap.gelu_interval)

    def exp(self, x: np.ndarray) -> np.ndarray:
        y = self.p_exp(x)
        for _ in range(self.ap.exp_squarings):
            y = y * y
        return y


def approximated_forward(x: np.ndarray, layers: int, ap: Approximations, valid: int | None = None) -> np.ndarray:
    """MiniLM layers on x (tokens, 384) with the polynomial approximations (plaintext, float64)."""
    mdl, m = minilm.load(), minilm.MODEL
    f = Approximated(ap)
    T, dh = x.shape[0], m.head_dim
    keys = (np.arange(T) < (T if valid is None else valid)).astype(np.float64)

    def ln(y: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
        c = y - y.mean(1, keepdims=True)
        return c * f.inv_sqrt((c * c).mean(1, keepdims=True)) * g + b

    for li, lw in enumerate(mdl.layers[:layers]):
        q, k, v = x @ lw.wq + lw.bq, x @ lw.wk + lw.bk, x @ lw.wv + lw.bv
        ctx = np.zeros_like(q)
        for h, s in enumerate(_heads(q, k, dh)):
            e = f.exp(s - ap.shift(li, h, np.arange(T), T if valid is None else valid)[:, None]) * keys
            ctx[:, h * dh:(h + 1) * dh] = (e @ v[:, h * dh:(h + 1) * dh]) * f.inverse(e.sum(1, keepdims=True))
        x = ln(x + ctx @ lw.wo + lw.bo, lw.ln1_g, lw.ln1_b)
        x = ln(x + f.gelu(x @ lw.w1 + lw.b1) @ lw.w2 + lw.b2, lw.ln2_g, lw.ln2_b)
    return x


def held_out_cosines(ap: Approximations, texts: list[str] | None = None, layers: int = 6,
                     pad_to: int = 64) -> list[float]:
    """Cosine of the approximated model's sentence embeddings vs the exact model's, per sentence
    (padded to ``pad_to`` rows as the encrypted run pads its token block)."""
    out = []
    for text in texts if texts is not None else sentences("held-out"):
        exact, n = minilm.hidden_states(text, layers)
        x = minilm.load().embed(minilm.tokenize(text))
        xp = x[np.arange(max(pad_to, n)) % n]
        approx = approximated_forward(xp, layers, ap, valid=n)[:n]
        a, b = minilm.mean_pool_normalise(exact, n), minilm.mean_pool_normalise(approx, n)
        out.append(float(a @ b))
    return out


def main() -> int:
    r = measure(sentences("fit"))
    ap = fit(r)
    save(ap, r)
    cos = held_out_cosines(ap)
    print(f"ranges on {len(sentences('fit'))} fit sentences: shifted scores {r.shifted_scores}, row sums "
          f"{r.row_sums}, variance {r.variance}, GELU input {r.gelu_input}")
    print(f"depths {depths(ap)}; written to {APPROX_JSON}")
    print(f"held-out sentence embeddings, approximated vs exact (6 layers): cosine min {min(cos):.6f}, "
          f"mean {np.mean(cos):.6f} over {len(cos)} sentences")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
