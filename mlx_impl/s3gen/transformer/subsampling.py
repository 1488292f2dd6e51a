"""Input layers (chatterbox/models/s3gen/transformer/subsampling.py): only the one S3Gen uses."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ...backend import LayerNorm, Linear


class LinearNoSubsampling(nn.Module):
    """Linear -> LayerNorm(eps=1e-5) -> positional encoding. Original `out.0` / `out.1` are
    `linear` / `norm` here."""

    def __init__(self, idim: int, odim: int, dropout_rate: float, pos_enc_class: nn.Module):
        super().__init__()
        self.linear = Linear(idim, odim)
        self.norm = LayerNorm(odim, eps=1e-5)
        self.pos_enc = pos_enc_class
        self.right_context = 0
        self.subsampling_rate = 1

    def position_encoding(self, offset: int, size: int) -> mx.array:
        return self.pos_enc.position_encoding(offset, size)

    def __call__(self, x: mx.array, x_mask: mx.array, offset: int = 0):
        x = self.norm(self.linear(x))
        x, pos_emb = self.pos_enc(x, offset)
        return x, pos_emb, x_mask


SUBSAMPLE_CLASSES = {"linear": LinearNoSubsampling}
