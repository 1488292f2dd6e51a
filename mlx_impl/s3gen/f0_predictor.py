"""ConvRNNF0Predictor (chatterbox/models/s3gen/f0_predictor.py) in MLX."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..ops import Conv1d


class ELU(nn.Module):
    """torch.nn.ELU(alpha=1): x if x > 0 else expm1(x)."""

    def __call__(self, x: mx.array) -> mx.array:
        return mx.where(x > 0, x, mx.expm1(x))


class ConvRNNF0Predictor(nn.Module):
    def __init__(self, num_class: int = 1, in_channels: int = 80, cond_channels: int = 512):
        super().__init__()
        self.num_class = num_class
        # the original's nn.Sequential: conv, ELU, conv, ELU, ... (keys condnet.0, condnet.2, ...)
        layers = []
        for i in range(5):
            layers.append(Conv1d(in_channels if i == 0 else cond_channels, cond_channels, 3, padding=1))
            layers.append(ELU())
        self.condnet = layers
        self.classifier = nn.Linear(cond_channels, num_class)

    def __call__(self, x: mx.array) -> mx.array:
        """x: mel (B, 80, T) -> f0 (B, T) in Hz."""
        x = x.transpose(0, 2, 1)
        for layer in self.condnet:
            x = layer(x)
        return mx.abs(self.classifier(x).squeeze(-1))
