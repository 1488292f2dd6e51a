"""Conformer convolution module (chatterbox/models/s3gen/transformer/convolution.py).

Not used by S3Gen (use_cnn_module=False); kept for completeness. Channels-last throughout.
Inference only: BatchNorm uses its running statistics.
"""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ... import backend


class Conv1d(nn.Conv1d):
    """nn.Conv1d (weight (O, K, I), channels-last input); on the CPU a stride-1, ungrouped
    convolution runs as one product (`backend.conv1d_addmm`)."""

    def __call__(self, x: mx.array) -> mx.array:
        return backend.conv1d_addmm(x, self.weight, self.get("bias"), self.stride, self.padding, self.dilation,
                                    self.groups)


class ConvolutionModule(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 15, activation: nn.Module = None,
                 norm: str = "batch_norm", causal: bool = False, bias: bool = True):
        super().__init__()
        self.pointwise_conv1 = Conv1d(channels, 2 * channels, 1, bias=bias)
        if causal:
            padding, self.lorder = 0, kernel_size - 1
        else:
            assert (kernel_size - 1) % 2 == 0
            padding, self.lorder = (kernel_size - 1) // 2, 0
        self.depthwise_conv = nn.Conv1d(channels, channels, kernel_size, padding=padding, groups=channels, bias=bias)
        assert norm in ("batch_norm", "layer_norm")
        self.use_layer_norm = norm == "layer_norm"
        self.norm = nn.LayerNorm(channels) if self.use_layer_norm else nn.BatchNorm(channels)
        if not self.use_layer_norm:
            self.norm.eval()
        self.pointwise_conv2 = Conv1d(channels, channels, 1, bias=bias)
        self.activation = activation if activation is not None else nn.ReLU()

    def __call__(self, x: mx.array, mask_pad: mx.array = None) -> mx.array:
        """x (B, T, C); mask_pad (B, 1, T) bool or None."""
        keep = None
        if mask_pad is not None and mask_pad.shape[-1] > 0:
            keep = mask_pad.transpose(0, 2, 1)  # (B, T, 1)
            x = mx.where(keep, x, 0.0)
        if self.lorder > 0:
            x = mx.pad(x, [(0, 0), (self.lorder, 0), (0, 0)])
        a, b = mx.split(self.pointwise_conv1(x), 2, axis=-1)
        x = self.depthwise_conv(a * backend.sigmoid(b))
        x = self.pointwise_conv2(self.activation(self.norm(x)))
        if keep is not None:
            x = mx.where(keep, x, 0.0)
        return x
