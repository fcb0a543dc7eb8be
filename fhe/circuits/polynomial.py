"""Polynomial evaluation on ciphertexts in the Chebyshev basis, baby-step giant-step.

``p(x) = sum_k c_k T_k(y)`` with ``y = (2x - a - b) / (b - a)`` mapping [a, b]
to [-1, 1].  Baby steps T_1..T_m (m a power of two ~ sqrt(degree)) and giant
steps T_m, T_2m, T_4m, ... are computed with T_2k = 2 T_k^2 - 1 and
T_{j+k} = 2 T_j T_k - T_{|j-k|}; the series is split recursively as
``p = q * T_n + r`` (Chebyshev division, deg r < n).  Depth: one level for
the affine map (unless the interval is [-1, 1]), about log2(degree) for the
product tree and one for the constant products of the leaves;
:func:`chebyshev_depth` computes it exactly by the same recursion.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from numpy.polynomial import chebyshev as C

from ..ckks.context import Ciphertext
from ..ckks.evaluator import Evaluator, LevelError

Value = Ciphertext | float


def chebyshev_fit(f: Callable[[np.ndarray], np.ndarray], interval: tuple[float, float], degree: int) -> np.ndarray:
    """Chebyshev interpolation coefficients of ``f`` on ``interval`` (degree + 1 values)."""
    a, b = interval
    return C.chebinterpolate(lambda y: f((y * (b - a) + a + b) / 2), degree)


def _baby_size(degree: int) -> int:
    return 1 << max(1, math.ceil(math.log2(math.sqrt(degree + 1))))


def _split(c: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Chebyshev division p = q * T_n + r for the giant step n (None for a leaf, deg < m)."""
    deg = len(c) - 1
    while deg > 0 and c[deg] == 0:
        deg -= 1
    if deg < m:
        return None
    n = m
    while 2 * n <= deg:
        n *= 2
    q = np.zeros(deg - n + 1)
    r = c[:n].copy()
    q[0] = c[n]
    for k in range(n + 1, deg + 1):
        q[k - n] += 2 * c[k]
        r[2 * n - k] -= c[k]
    return q, r, n


def _t_depth(k: int) -> int:
    """Levels T_k costs above T_1 with the doubling/product rules used here."""
    if k <= 1:
        return 0
    if k % 2 == 0:
        return _t_depth(k // 2) + 1
    return max(_t_depth(k // 2), _t_depth(k // 2 + 1)) + 1


def _series_depth(c: np.ndarray, m: int) -> int:
    parts = _split(c, m)
    if parts is None:
        ks = [k for k in range(1, len(c)) if c[k] != 0]
        return max(_t_depth(k) for k in ks) + 1 if ks else 0
    q, r, n = parts
    return max(max(_series_depth(q, m), _t_depth(n)) + 1, _series_depth(r, m))


def _affine_levels(interval: tuple[float, float]) -> int:
    """Levels the map of ``interval`` onto [-1, 1] costs: none when it already is [-1, 1]."""
    return 0 if tuple(interval) == (-1.0, 1.0) else 1


def chebyshev_depth(degree: int, interval: tuple[float, float] = (-1.0, 1.0)) -> int:
    """Levels :meth:`PolynomialEvaluator.evaluate` consumes for a generic series of this degree.

    Includes one level for the affine map when ``interval`` is not [-1, 1].
    """
    if degree < 1:
        return 0
    generic = np.random.default_rng(0).uniform(1.0, 2.0, degree + 1)  # no accidental cancellations
    return _series_depth(generic, _baby_size(degree)) + _affine_levels(interval)


class PolynomialEvaluator:
    """Evaluates Chebyshev series on ciphertexts with an :class:`Evaluator`."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.ev = evaluator

    def evaluate(self, ct: Ciphertext, coeffs: Sequence[float], interval: tuple[float, float] = (-1.0, 1.0),
                 tol: float = 0.0) -> Ciphertext:
        """sum_k coeffs[k] T_k(map(x)) slot-wise; coefficients with |c| <= tol are skipped."""
        c = np.asarray(coeffs, dtype=np.float64)
        c = np.where(np.abs(c) <= tol, 0.0, c)
        deg = int(np.max(np.nonzero(c)[0])) if np.any(c) else 0
        self._m = _baby_size(max(deg, 1))
        need = _series_depth(c[: deg + 1], self._m) + _affine_levels(interval)
        depth_left = getattr(getattr(self.ev, "params", None), "depth_left", None)   # tracers have no params
        have = depth_left(ct.level) if depth_left is not None else ct.level
        if have < need:
            raise LevelError(f"a degree-{deg} polynomial needs {need} levels; the ciphertext has {have}")
        ev = self.ev
        a, b = interval
        alpha, beta = 2.0 / (b - a), -(a + b) / (b - a)
        y = ev.add_const(ev.mul_const_rescale(ct, alpha), beta) if _affine_levels(interval) else ct
        self._t: dict[int, Ciphertext] = {1: y}
        self._lowered: dict[tuple[int, int], Ciphertext] = {}   # T_k brought down to a leaf's level, shared by leaves
        out = self._eval(c[: deg + 1])
        if isinstance(out, float):
            raise ValueError("a constant polynomial has no ciphertext result")
        return out

    def evaluate_function(self, ct: Ciphertext, f: Callable[[np.ndarray], np.ndarray],
                          interval: tuple[float, float], degree: int) -> Ciphertext:
        """Approximate ``f`` on ``interval`` by a degree-``degree`` Chebyshev interpolant and evaluate it."""
        return self.evaluate(ct, chebyshev_fit(f, interval, degree), interval)

    # ---- Chebyshev basis -----------------------------------------------------------
    def _T(self, k: int) -> Ciphertext:
        if k in self._t:
            return self._t[k]
        ev = self.ev
        if k % 2 == 0:
            h = self._T(k // 2)
            t = ev.add_const(ev.mul_int(ev.mul_relin_rescale(h, h), 2), -1.0)
        else:
            lo, hi = self._T(k // 2), self._T(k // 2 + 1)
            t = ev.sub(ev.mul_int(ev.mul_relin_rescale(lo, hi), 2), self._T(1))
        self._t[k] = t
        return t

    def _eval(self, c: np.ndarray) -> Value:
        parts = _split(c, self._m)
        if parts is None:
            return self._leaf(c)
        q, r, n = parts
        qv, rv = self._eval(q), self._eval(r)
        ev = self.ev
        tn = self._T(n)
        prod = ev.mul_const_rescale(tn, qv) if isinstance(qv, float) else ev.mul_relin_rescale(qv, tn)
        if isinstance(rv, float):
            return ev.add_const(prod, rv) if rv else prod
        return ev.add(prod, rv)

    def _leaf(self, c: np.ndarray) -> Value:
        ev = self.ev
        terms = [(k, float(v)) for k, v in enumerate(c) if k >= 1 and v != 0.0]
        if not terms:
            return float(c[0]) if len(c) else 0.0
        cts = {k: self._T(k) for k, _ in terms}
        lvl = min(t.level for t in cts.values())
        acc = None
        for k, v in terms:
            t = self._lowered.get((k, lvl))
            if t is None:
                t = self._lowered[(k, lvl)] = ev.adjust_level(cts[k], lvl)
            term = ev.mul_const(t, v)
            acc = term if acc is None else ev.add(acc, term)
        acc = ev.rescale(acc)
        return ev.add_const(acc, float(c[0])) if c[0] else acc
