"""CKKS layer: context, encoder, encryption, evaluator."""
from .context import CKKSContext, Ciphertext, Plaintext
from .encoder import Encoder
from .encryptor import Client, Decryptor, Encryptor
from .evaluator import Evaluator, LevelError

__all__ = ["CKKSContext", "Ciphertext", "Plaintext", "Encoder", "Client", "Decryptor", "Encryptor",
           "Evaluator", "LevelError"]
