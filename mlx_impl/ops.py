"""Convolutions (and sin^2) in forms that are fast on MLX's CPU backend.

MLX's CPU backend runs dilated, strided and transposed-strided convolutions as naive loops (~100x
slower than PyTorch). On the CPU they are written here as matrix products (OpenBLAS):
  conv1d, stride 1  sum over the K taps of (the padded input shifted by k*dilation) @ kernel[k],
                    accumulated with addmm (no im2col buffer: measured faster for 64-128 channels)
  conv1d, strided   im2col (slices of the padded input at k*dilation, step `stride`, concatenated
                    on the channel axis) @ the kernel reshaped to (K*C_in, C_out)
  conv_transpose1d  x @ the kernel reshaped to (C_in, K*C_out), then overlap-add of the K taps
                    (the kernel padded to a multiple of the stride, so the add is a sum of
                    ceil(K/stride) shifted blocks), then the `padding` crop
and Snake's sin^2 from arithmetic (sin_squared, below: MLX's CPU sin is a scalar libm call).
With the CPU kernels built and the wide BLAS loaded (`cpu_kernels.wide_blas()`), conv1d is one
kernel instead (per block of output rows the same per-tap products, accumulated in cache, through
OpenBLAS's AVX-512 kernels: 1.4-3x the forms above) and conv_transpose1d's product goes through
the same BLAS.
On a GPU the native ops are used. Layouts are MLX's: x (B, T, C_in), conv weight (C_out, K, C_in),
transposed-conv weight (C_out, K, C_in).
"""
from __future__ import annotations

import math
from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from . import cpu_kernels

NATIVE = "native"
FAST = "fast"


def use_native() -> bool:
    """Native convolutions on a GPU, matmul forms on the CPU."""
    return mx.default_device().type == mx.DeviceType.gpu


def _resolve(impl: Optional[str]) -> str:
    if impl is None:
        return NATIVE if use_native() else FAST
    if impl not in (NATIVE, FAST):
        raise ValueError(f"impl must be '{NATIVE}' or '{FAST}', got {impl!r}")
    return impl


def conv1d(
    x: mx.array,
    weight: mx.array,
    bias: Optional[mx.array] = None,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    impl: Optional[str] = None,
) -> mx.array:
    """torch.nn.functional.conv1d in MLX layouts: x (B, T, C_in), weight (C_out, K, C_in). The
    fast form on the CPU: one kernel through the wide BLAS (`cpu_kernels.wide_blas()`) where it
    is loaded, else MLX matmuls."""
    impl = _resolve(impl)
    if impl == FAST and _wide_kernels_apply(x, weight):
        return cpu_kernels.kernels().conv1d(x, weight, bias, stride, padding, dilation)
    if impl == NATIVE:
        y = mx.conv1d(x, weight, stride=stride, padding=padding, dilation=dilation)
    elif stride == 1:
        y = _conv1d_taps(x, weight, padding, dilation)
    else:
        y = conv1d_im2col(x, weight, stride, padding, dilation)
    return y if bias is None else y + bias


def _wide_kernels_apply(x, weight) -> bool:
    return cpu_kernels.applies_to(x) and weight.dtype == mx.float32 and cpu_kernels.wide_blas_loaded()


def _conv1d_taps(x, weight, padding, dilation):
    B, T, C_in = x.shape
    C_out, K, _ = weight.shape
    if padding:
        x = mx.pad(x, [(0, 0), (padding, padding), (0, 0)])
    T_out = T + 2 * padding - dilation * (K - 1)
    if T_out <= 0:
        raise ValueError(f"conv1d: input of length {T} too short for kernel {K}, dilation {dilation}")
    w = mx.transpose(weight, (1, 2, 0))  # (K, C_in, C_out)
    y = x[:, :T_out] @ w[0]
    for k in range(1, K):
        y = mx.addmm(y, x[:, k * dilation : k * dilation + T_out], w[k])
    return y


def conv1d_im2col(x, weight, stride=1, padding=0, dilation=1):
    """mx.conv1d (groups=1) as slices of the padded input at k * dilation, concatenated on the
    channel axis, times the (O, K * I) kernel. x: (B, T, I), weight: (O, K, I)."""
    B, T, C_in = x.shape
    C_out, K, _ = weight.shape
    if padding:
        x = mx.pad(x, [(0, 0), (padding, padding), (0, 0)])
    T_pad = T + 2 * padding
    T_out = (T_pad - dilation * (K - 1) - 1) // stride + 1
    if T_out <= 0:
        raise ValueError(f"conv1d: input of length {T} too short for kernel {K}, dilation {dilation}")
    if K == 1:
        cols = x[:, : (T_out - 1) * stride + 1 : stride, :]
    else:
        taps = [
            x[:, k * dilation : k * dilation + (T_out - 1) * stride + 1 : stride, :] for k in range(K)
        ]
        cols = mx.concatenate(taps, axis=-1)  # (B, T_out, K*C_in), tap-major like weight.reshape
    return cols @ weight.reshape(C_out, K * C_in).T


def conv_transpose1d(
    x: mx.array,
    weight: mx.array,
    bias: Optional[mx.array] = None,
    stride: int = 1,
    padding: int = 0,
    impl: Optional[str] = None,
) -> mx.array:
    """torch.nn.functional.conv_transpose1d (no output_padding, dilation 1) in MLX layouts:
    x (B, T, C_in), weight (C_out, K, C_in); output length (T-1)*stride - 2*padding + K."""
    if _resolve(impl) == NATIVE:
        y = mx.conv_transpose1d(x, weight, stride=stride, padding=padding)
    else:
        y = _conv_transpose1d_matmul(x, weight, stride, padding)
    return y if bias is None else y + bias


def _conv_transpose1d_matmul(x, weight, stride, padding):
    B, T, C_in = x.shape
    C_out, K, _ = weight.shape
    n_blocks = math.ceil(K / stride)
    K_pad = n_blocks * stride
    if K_pad != K:
        weight = mx.pad(weight, [(0, 0), (0, K_pad - K), (0, 0)])
    # every input frame t writes K_pad output samples starting at t*stride
    if _wide_kernels_apply(x, weight):  # x @ w^T through the wide BLAS, w (K_pad * C_out, C_in)
        w = mx.transpose(weight, (1, 0, 2)).reshape(K_pad * C_out, C_in)
        taps = cpu_kernels.kernels().linear(x, w, None, True)
    else:
        taps = x @ mx.transpose(weight, (2, 1, 0)).reshape(C_in, K_pad * C_out)
    taps = taps.reshape(B, T, n_blocks, stride, C_out)
    # block j of frame t lands on output block t + j: shift and add
    y = None
    for j in range(n_blocks):
        blk = mx.pad(taps[:, :, j], [(0, 0), (j, n_blocks - 1 - j), (0, 0), (0, 0)])
        y = blk if y is None else y + blk
    y = y.reshape(B, (T + n_blocks - 1) * stride, C_out)
    T_out = (T - 1) * stride - 2 * padding + K
    return y[:, padding : padding + T_out, :]


class Conv1d(nn.Module):
    """torch.nn.Conv1d with the parameters `weight` (C_out, K, C_in) and `bias` (C_out,)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True):
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = mx.zeros((out_channels, kernel_size, in_channels))
        if bias:
            self.bias = mx.zeros((out_channels,))

    def __call__(self, x: mx.array) -> mx.array:
        return conv1d(x, self.weight, self.get("bias"), self.stride, self.padding, self.dilation)


class ConvTranspose1d(nn.Module):
    """torch.nn.ConvTranspose1d with `weight` (C_out, K, C_in) (converted from torch's (C_in, C_out, K))."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.stride, self.padding = stride, padding
        self.weight = mx.zeros((out_channels, kernel_size, in_channels))
        if bias:
            self.bias = mx.zeros((out_channels,))

    def __call__(self, x: mx.array) -> mx.array:
        return conv_transpose1d(x, self.weight, self.get("bias"), self.stride, self.padding)


# --------------------------------------------------------------------------- sin^2 (Snake)
# MLX's CPU sin is a scalar libm call (~20 ns per element, about 50x numpy's vectorised one) and
# Snake evaluates it on every activation of the vocoder. On the CPU, sin^2 is computed here from
# plain arithmetic, which MLX vectorises. sin^2 has period pi: reduce y by k*pi (k = round(y/pi),
# pi split in three parts, Cephes' single-precision Cody-Waite constants scaled by 4, so that
# k * part is exact for |k| up to ~2^12), then sin(r) on [-pi/2, pi/2] by an odd degree-11
# polynomial (least-squares fit to sin, approximation error 2e-11; the float32 evaluation error
# is ~1 ulp). Accuracy ~1e-7 absolute like mx.sin's: tests/unit/test_ops.py measures both
# against float64 and torch.
_ONE_OVER_PI = 0.31830988618379067
_PI_1, _PI_2, _PI_3 = 3.140625, 9.67502593994140625e-4, 1.509957990978376432e-7
_SIN_POLY = (-0.16666666606560165, 0.00833333049909834, -0.00019840804449596213,
             2.752263865641467e-06, -2.3847027236263876e-08)


def sin_squared(y: mx.array, impl: Optional[str] = None) -> mx.array:
    """sin(y)^2, float32."""
    if _resolve(impl) == NATIVE:
        s = mx.sin(y)
        return s * s
    k = mx.round(y * _ONE_OVER_PI)
    r = ((y - k * _PI_1) - k * _PI_2) - k * _PI_3
    z = r * r
    c1, c2, c3, c4, c5 = _SIN_POLY
    p = (((c5 * z + c4) * z + c3) * z + c2) * z + c1
    s = r + p * z * r
    return s * s
