"""Ring layer: RNS polynomials, NTT, modular arithmetic, base conversion."""
from .ring import RNSRing

__all__ = ["RNSRing"]
