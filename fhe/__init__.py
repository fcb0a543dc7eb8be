"""fhe: CKKS with hybrid key switching on NumPy and CuPy.

Layers (each imports only the ones above it in this list):
``fhe.ring`` (RNS polynomials, NTT, base conversion, rescale) ->
``fhe.rlwe`` (sampling, keys, key switching) ->
``fhe.ckks`` (encoder, encryption, evaluator) ->
``fhe.circuits`` (linear transforms, polynomial evaluation).
``fhe.costs`` holds the byte and operation formulas of every kernel.
"""
from .backend import Backend, BackendUnavailable, cupy_available, get_backend
from .ckks import CKKSContext, Ciphertext, Client, Encoder, Evaluator, LevelError, Plaintext
from .params import CKKSParameters, ParameterError, SecurityError, preset, preset_names

__all__ = ["Backend", "BackendUnavailable", "cupy_available", "get_backend", "CKKSContext", "Ciphertext",
           "Client", "Encoder", "Evaluator", "LevelError", "Plaintext", "CKKSParameters", "ParameterError",
           "SecurityError", "preset", "preset_names"]
