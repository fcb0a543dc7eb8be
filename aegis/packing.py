"""How activations are packed into ciphertext tiles.

A **tile** is one ciphertext holding a block of ``token_block`` tokens x ``channel_block``
channels, channel-major::

    slot(t, c) = c * token_block + t          (0 <= t < token_block, 0 <= c < channel_block)

so ``slots = token_block * channel_block`` and a slot rotation by ``k * token_block`` is a
cyclic rotation of the channels by k.  An activation of T tokens x d channels is
``ceil(T / token_block)`` token blocks x ``ceil(d / channel_block)`` channel tiles; unused
tokens and channels are zero.  Heads never straddle tiles (``channel_block`` is a multiple
of the head dimension), so a tile of Q, K or V holds ``channel_block / head_dim`` whole heads.

Token blocks are what a token-coherent placement splits; channel tiles are what a
tensor-parallel placement splits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .workloads import ModelConfig, WorkloadError

#: default channels per tile when the model allows it (Cerium packs 128 tokens x 256 channels)
DEFAULT_CHANNEL_BLOCK = 256


def _pow2_at_least(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


@dataclass(frozen=True)
class Packing:
    """Tile geometry for one model at one slot count.

    Attributes:
        slots: CKKS slots (N/2).
        token_block: tokens per tile (power of two).
        channel_block: channels per tile (power of two, multiple of ``head_dim``).
        head_dim: channels per attention head.
        seq_len: tokens in the sequence.
    """

    slots: int
    token_block: int
    channel_block: int
    head_dim: int
    seq_len: int
    #: Q, K, V and the attention context in head-major tiles (``--attention diagonal``): ``channel_block``
    #: = heads padded to a power of two, tile j of them holds channel j of every head (slot h * tb + t)
    head_major: bool = False

    @classmethod
    def for_model(cls, model: ModelConfig, slots: int, seq_len: int, token_block: int | None = None,
                  head_major: bool = False) -> "Packing":
        """Choose the geometry: ``channel_block = min(256, pow2 >= d_model)`` unless ``token_block`` is given;
        head-major: ``channel_block`` = heads rounded up to a power of two, ``token_block = slots / that``."""
        hd = model.head_dim
        if head_major:
            cb = _pow2_at_least(model.heads)
            if cb > slots:
                raise WorkloadError(f"{model.heads} heads do not fit {slots} slots")
            return cls(slots=slots, token_block=slots // cb, channel_block=cb, head_dim=hd, seq_len=seq_len,
                       head_major=True)
        if hd & (hd - 1):
            raise WorkloadError(f"{model.name}: head dimension {hd} must be a power of two for this packing")
        if token_block is None:
            cb = max(hd, min(DEFAULT_CHANNEL_BLOCK, _pow2_at_least(model.d_model), slots))
            tb = slots // cb
        else:
            tb = token_block
            if tb < 1 or tb & (tb - 1) or slots % tb:
                raise WorkloadError(f"token_block {tb} must be a power of two dividing the {slots} slots")
            cb = slots // tb
        if cb < hd or cb % hd:
            raise WorkloadError(f"a tile of {cb} channels cannot hold whole heads of {hd} channels; "
                                f"use token_block <= {slots // hd}")
        return cls(slots=slots, token_block=tb, channel_block=cb, head_dim=hd, seq_len=seq_len)

    @property
    def token_blocks(self) -> int:
        """Token blocks in the sequence."""
        return -(-self.seq_len // self.token_block)

    def channel_tiles(self, channels: int) -> int:
        """Tiles needed for ``channels`` channels."""
        return -(-channels // self.channel_block)

    @property
    def heads_per_tile(self) -> int:
        return self.channel_block // self.head_dim

    @property
    def log_head_dim(self) -> int:
        return int(math.log2(self.head_dim))

    @property
    def score_cts_per_pair(self) -> int:
        """Compressed score ciphertexts per (query block, key block, tile): token_block / head_dim, at least 1.

        Score diagonal r of every head in the tile sits at channel offset ``r mod head_dim``
        of that head, so ``head_dim`` diagonals share one ciphertext.
        """
        return max(1, self.token_block // self.head_dim)

    def block_tokens(self, block: int) -> range:
        """Token indices of ``block``."""
        return range(block * self.token_block, min(self.seq_len, (block + 1) * self.token_block))

    @property
    def head_tiles(self) -> int:
        """Head-major: tiles of Q (one per head channel), padded heads included."""
        return self.head_dim

    def describe(self) -> str:
        if self.head_major:
            return (f"tiles of {self.token_block} tokens x {self.channel_block} channels; Q, K, V head-major "
                    f"({self.head_dim} tiles, channel j of every head); {self.token_blocks} token blocks")
        return (f"tiles of {self.token_block} tokens x {self.channel_block} channels "
                f"({self.heads_per_tile} heads of {self.head_dim}); {self.token_blocks} token blocks")
