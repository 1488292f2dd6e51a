"""Learned absolute position embeddings (mirrors chatterbox/models/t3/modules/learned_pos_emb.py)."""
from __future__ import annotations

from typing import Union

import mlx.core as mx
import mlx.nn as nn


class LearnedPositionEmbeddings(nn.Module):
    def __init__(self, seq_len: int, model_dim: int):
        super().__init__()
        self.emb = nn.Embedding(seq_len, model_dim)

    def __call__(self, x: mx.array) -> mx.array:
        """Embeddings of positions 0 .. x.shape[1]-1, shape (T, dim) (broadcasts over the batch)."""
        return self.emb(mx.arange(x.shape[1]))

    def get_fixed_embedding(self, idx: Union[int, mx.array]) -> mx.array:
        """Embeddings of the given positions, shape (B, T, dim); (1, 1, dim) for an int."""
        idx = mx.array(idx) if not isinstance(idx, mx.array) else idx
        while idx.ndim < 2:  # torch.atleast_2d
            idx = idx[None]
        assert idx.ndim == 2
        return self.emb(idx)
