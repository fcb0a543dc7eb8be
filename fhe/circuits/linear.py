"""Plaintext matrix x encrypted vector: the diagonal method with baby-step giant-step.

Packing: a length-d vector (d a power of two dividing N/2) is *tiled* across
the slots with period d, so rotating the slots by b rotates the vector by b.
For a d x d matrix M, diagonal k is ``diag_k[i] = M[i, (i + k) mod d]`` and

    M x = sum_g rot_{g n1}( sum_b rot_{-g n1}(diag_{g n1 + b}) * rot_b(x) ),

with n1 baby steps (hoisted: one ModUp shared by all of them) and n2 = d/n1
giant steps.  Cost: (n1 - 1) hoisted rotations + (n2 - 1) rotations,
``nnz_diagonals`` plaintext products, one rescale; depth 1.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import costs
from ..ckks.context import Ciphertext, Plaintext
from ..ckks.evaluator import Evaluator


def tile(vector: Any, slots: int) -> np.ndarray:
    """Repeat a length-d vector (d | slots) to fill ``slots``."""
    v = np.asarray(vector)
    d = v.shape[0]
    if slots % d:
        raise ValueError(f"vector length {d} must divide the slot count {slots}")
    return np.tile(v, slots // d)


def bsgs_split(d: int, n1: int | None = None) -> tuple[int, int]:
    """Baby steps n1 (default: the power of two nearest sqrt(d)) and giant steps n2 = ceil(d / n1)."""
    if n1 is None:
        n1 = 1 << max(0, round(math.log2(d) / 2))
    return n1, -(-d // n1)


class LinearTransform:
    """A d x d plaintext matrix ready to multiply tiled encrypted vectors at one level.

    Args:
        evaluator: the server-side evaluator (its encoder encodes the diagonals).
        matrix: real array (d_out, d_in); padded with zeros to a square power of two d.
        level: level of the ciphertexts it will multiply (diagonals are encoded there).
        n1: baby steps (default ~ sqrt(d)).
        precompute: encode the diagonals now (memory: ``nnz * (level+1) * N * 8`` bytes) or
            on the fly at each product (compute for memory).
    """

    def __init__(self, evaluator: Evaluator, matrix: Any, level: int, n1: int | None = None,
                 precompute: bool = True) -> None:
        m = np.asarray(matrix, dtype=np.float64)
        d = 1 << max(0, (max(m.shape) - 1).bit_length())
        slots = evaluator.params.slots
        if d > slots:
            raise ValueError(f"matrix dimension {max(m.shape)} exceeds the {slots} slots")
        square = np.zeros((d, d))
        square[: m.shape[0], : m.shape[1]] = m
        self.ev = evaluator
        self.d = d
        self.level = level
        self.n1, self.n2 = bsgs_split(d, n1)
        rows = np.arange(d)
        self._diag: dict[int, np.ndarray] = {}
        for k in range(d):
            diag = square[rows, (rows + k) % d]
            if np.any(diag):
                g = k // self.n1
                self._diag[k] = np.roll(tile(diag, slots), g * self.n1)
        self.precomputed: dict[int, Plaintext] = {}
        if precompute:
            self.precomputed = {k: self._encode(k) for k in self._diag}

    def _encode(self, k: int) -> Plaintext:
        return self.ev.encoder.encode(self._diag[k], level=self.level)

    @property
    def nnz_diagonals(self) -> int:
        return len(self._diag)

    def rotations(self) -> list[int]:
        """Rotation steps (slots) whose keys the product needs."""
        babies = sorted({k % self.n1 for k in self._diag} - {0})
        giants = sorted({(k // self.n1) * self.n1 for k in self._diag} - {0})
        return babies + giants

    def plaintext_bytes(self) -> int:
        """Bytes of the encoded diagonals at this level (whether or not precomputed)."""
        return self.nnz_diagonals * costs.plaintext_bytes(self.ev.params.n, self.level + 1)

    def apply(self, ct: Ciphertext) -> Ciphertext:
        """M x for a tiled encrypted x at ``self.level`` -> tiled M x, one level lower."""
        ev = self.ev
        if ct.level != self.level:
            ct = ev.adjust_level(ct, self.level)
        babies = ev.rotate_hoisted(ct, sorted({k % self.n1 for k in self._diag}))
        out = None
        for g in range(self.n2):
            inner = None
            for b in range(self.n1):
                k = g * self.n1 + b
                if k not in self._diag:
                    continue
                pt = self.precomputed.get(k) or self._encode(k)
                term = ev.mul_plain(babies[b], pt)
                inner = term if inner is None else ev.add(inner, term)
            if inner is None:
                continue
            inner = ev.rotate(inner, g * self.n1)
            out = inner if out is None else ev.add(out, inner)
        if out is None:
            raise ValueError("the matrix is zero")
        return ev.rescale(out)
