"""Circuits: linear transforms (diagonal BSGS) and polynomial evaluation (Chebyshev BSGS)."""
from .linear import LinearTransform, bsgs_split, tile
from .polynomial import PolynomialEvaluator, chebyshev_depth, chebyshev_fit

__all__ = ["LinearTransform", "bsgs_split", "tile", "PolynomialEvaluator", "chebyshev_depth", "chebyshev_fit"]
