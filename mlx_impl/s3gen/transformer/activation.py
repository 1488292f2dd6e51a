"""Activations (chatterbox/models/s3gen/transformer/activation.py). On the CPU the math runs in
the backend's forms (mlx_impl/backend/elementwise.py); on a GPU MLX's own ops."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ... import backend


class Swish(nn.Module):
    """x * sigmoid(x) (the encoder's "swish", torch.nn.SiLU in the original)."""

    def __call__(self, x: mx.array) -> mx.array:
        return backend.silu(x)


class GELUActivation(nn.Module):
    def __call__(self, x: mx.array) -> mx.array:
        return backend.gelu(x)


ACTIVATIONS = {
    "swish": Swish,
    "silu": Swish,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": GELUActivation,
}
