"""torch.nn.Conv1d / ConvTranspose1d in MLX layouts: x (B, T, C_in), weight (C_out, K, C_in) (the
transposed convolution's converted from torch's (C_in, C_out, K)). On the CPU they run the backend's
matrix-product forms (mlx_impl/backend/convolution.py), on a GPU MLX's native ops."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from . import backend


class Conv1d(nn.Module):
    """torch.nn.Conv1d with the parameters `weight` (C_out, K, C_in) and `bias` (C_out,)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True):
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = mx.zeros((out_channels, kernel_size, in_channels))
        if bias:
            self.bias = mx.zeros((out_channels,))

    def __call__(self, x: mx.array) -> mx.array:
        return backend.conv1d(x, self.weight, self.get("bias"), self.stride, self.padding, self.dilation)


class ConvTranspose1d(nn.Module):
    """torch.nn.ConvTranspose1d with `weight` (C_out, K, C_in)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.stride, self.padding = stride, padding
        self.weight = mx.zeros((out_channels, kernel_size, in_channels))
        if bias:
            self.bias = mx.zeros((out_channels,))

    def __call__(self, x: mx.array) -> mx.array:
        return backend.conv_transpose1d(x, self.weight, self.get("bias"), self.stride, self.padding)
