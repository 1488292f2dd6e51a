"""Activations (chatterbox/models/s3gen/transformer/activation.py)."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class Swish(nn.Module):
    """x * sigmoid(x) (the encoder's "swish", torch.nn.SiLU in the original)."""

    def __call__(self, x: mx.array) -> mx.array:
        return x * mx.sigmoid(x)


ACTIVATIONS = {
    "swish": Swish,
    "silu": Swish,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}
