"""EvalMod: the homomorphic reduction modulo q_0 of bootstrapping, as a scaled cosine.

After ModRaise and CoeffToSlot every slot holds ``y = t / q_0 = delta + I`` where
``delta = scale * m / q_0`` (|delta| <= 2^-10 for |m| <= 1 with a 50-bit q_0 and a 2^40
scale) and ``I`` an integer with |I| <= K (``k_bound``; with an encapsulated sparse secret
of weight h, I is about N(0, h/12), so K = 16 fails with probability below 2^-60 for h = 32).
EvalMod returns ``sin(2 pi y) = sin(2 pi delta)``, from which SlotToCoeff recovers
``m = q_0 / (2 pi scale) * sin(...)``.

The slots enter scaled to ``x = y / B`` (B = K + 1, folded into CoeffToSlot) and

    p(x) ~= cos(2 pi (B x - 1/4) / 2^r)        (Chebyshev interpolant of ``degree`` on [-1, 1])
    c <- 2 c^2 - 1,  r times                      (double angle: cos(2 pi y - pi / 2) = sin(2 pi y)).

Error (see :func:`evalmod_error`): the interpolation error ``e_p`` grows by at most 4 per
double angle (d(2c^2 - 1)/dc = 4c), so the sine is off by up to ``4^r e_p``; and
``sin(2 pi delta) / (2 pi) - delta ~ -(2 pi)^2 delta^3 / 6`` is the (relative) model error,
about 6e-6 for |delta| = 2^-10 and negligible for the small coefficients of typical messages.
Depth: ``chebyshev_depth(degree)`` + r.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..ckks.context import Ciphertext
from ..ckks.evaluator import Evaluator
from .polynomial import PolynomialEvaluator, chebyshev_depth, chebyshev_fit


@dataclass(frozen=True)
class EvalModConfig:
    """Shape of EvalMod.

    Attributes:
        k_bound: K, the largest |I| (multiples of q_0) the approximation covers.
        double_angle: r, the number of double-angle steps.
        degree: degree of the Chebyshev interpolant of the scaled cosine.
    """

    k_bound: int = 16
    double_angle: int = 3
    degree: int = 39

    def __post_init__(self) -> None:
        if self.k_bound < 1 or self.double_angle < 0 or self.degree < 3:
            raise ValueError(f"EvalMod needs k_bound >= 1, double_angle >= 0, degree >= 3; got {self}")

    @property
    def bound(self) -> float:
        """B = K + 1: the slots enter as y / B, inside [-1, 1]."""
        return float(self.k_bound + 1)

    def target(self, x: np.ndarray) -> np.ndarray:
        """The function the polynomial approximates on [-1, 1]."""
        return np.cos(2 * np.pi * (self.bound * x - 0.25) / 2 ** self.double_angle)

    @cached_property
    def coefficients(self) -> np.ndarray:
        """Chebyshev coefficients (degree + 1) of the scaled cosine on [-1, 1]."""
        return chebyshev_fit(self.target, (-1.0, 1.0), self.degree)

    @property
    def depth(self) -> int:
        """Levels EvalMod consumes."""
        return chebyshev_depth(self.degree) + self.double_angle


def evalmod_error(config: EvalModConfig, delta_max: float = 2.0 ** -10, samples: int = 200_001) -> dict[str, float]:
    """Plaintext error analysis of EvalMod over |I| <= K, |delta| <= ``delta_max``.

    Returns ``poly`` (max interpolation error of p on [-1, 1]), ``sine`` (max error of the
    whole chain vs sin(2 pi y) in float64), ``model`` (max |sin(2 pi delta)/(2 pi) - delta| /
    delta_max: relative error of taking the sine for the identity) -- all absolute, in units
    of the sine's range [-1, 1] except ``model``.
    """
    from numpy.polynomial import chebyshev as C

    x = np.linspace(-1, 1, samples)
    poly = float(np.max(np.abs(C.chebval(x, config.coefficients) - config.target(x))))
    ints = np.arange(-config.k_bound, config.k_bound + 1)
    d = np.linspace(-delta_max, delta_max, 257)
    y = (ints[:, None] + d[None, :]).ravel()
    c = C.chebval(y / config.bound, config.coefficients)
    for _ in range(config.double_angle):
        c = 2 * c * c - 1
    sine = float(np.max(np.abs(c - np.sin(2 * np.pi * y))))
    model = float(abs(math.sin(2 * math.pi * delta_max) / (2 * math.pi) - delta_max) / delta_max)
    return {"poly": poly, "sine": sine, "model": model}


def eval_mod(ev: Evaluator, ct: Ciphertext, config: EvalModConfig) -> Ciphertext:
    """sin(2 pi B x) slot-wise for real slots x = y / B in [-1, 1] (``config.depth`` levels)."""
    c = PolynomialEvaluator(ev).evaluate(ct, config.coefficients, (-1.0, 1.0))
    for _ in range(config.double_angle):
        c = ev.add_const(ev.mul_int(ev.square(c), 2), -1.0)
    return c
