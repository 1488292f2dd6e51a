"""Conformer convolution module (chatterbox/models/s3gen/transformer/convolution.py).

Not used by S3Gen (use_cnn_module=False); kept for completeness. Channels-last throughout.
Inference only: BatchNorm uses its running statistics.
"""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .activation import sigmoid


def conv1d_matmul(x: mx.array, weight: mx.array, bias, padding: int = 0, dilation: int = 1) -> mx.array:
    """Stride-1, ungrouped conv1d as one matmul over the K shifted views (im2col).
    x (B, T, I), weight (O, K, I) -> (B, T + 2*padding - dilation*(K-1), O)."""
    if padding:
        x = mx.pad(x, [(0, 0), (padding, padding), (0, 0)])
    o, k, i = weight.shape
    t_out = x.shape[1] - dilation * (k - 1)
    cols = x if k == 1 else mx.concatenate([x[:, j * dilation: j * dilation + t_out] for j in range(k)], axis=-1)
    w = weight.reshape(o, k * i).T
    if bias is None:
        return cols @ w
    return mx.addmm(bias, cols, w)


class Conv1d(nn.Conv1d):
    """nn.Conv1d (weight (O, K, I), channels-last input). On the CPU a stride-1, ungrouped
    convolution runs as im2col + one matmul: MLX's CPU conv is ~15x slower than that here."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
        self._matmul_ok = stride == 1 and groups == 1
        self._padding, self._dilation = padding, dilation

    def __call__(self, x: mx.array) -> mx.array:
        if self._matmul_ok and mx.default_device() != mx.gpu:
            return conv1d_matmul(x, self.weight, self.get("bias"), self._padding, self._dilation)
        return super().__call__(x)


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
        x = self.depthwise_conv(a * sigmoid(b))
        x = self.pointwise_conv2(self.activation(self.norm(x)))
        if keep is not None:
            x = mx.where(keep, x, 0.0)
        return x
