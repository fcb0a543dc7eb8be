"""AEGIS: placement, simulation and execution of encrypted (CKKS) Transformer inference across GPUs."""
__version__ = "0.1.0"
