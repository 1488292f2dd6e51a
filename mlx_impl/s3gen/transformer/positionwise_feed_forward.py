"""Position-wise feed-forward (chatterbox/models/s3gen/transformer/positionwise_feed_forward.py)."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ...backend import Linear
from .activation import Swish


class PositionwiseFeedForward(nn.Module):
    def __init__(self, idim: int, hidden_units: int, dropout_rate: float = 0.0, activation: nn.Module = None):
        super().__init__()
        self.w_1 = Linear(idim, hidden_units)
        self.activation = activation if activation is not None else Swish()
        self.w_2 = Linear(hidden_units, idim)

    def __call__(self, xs: mx.array) -> mx.array:
        return self.w_2(self.activation(self.w_1(xs)))
