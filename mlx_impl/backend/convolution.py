"""Convolutions in forms that are fast on MLX's CPU backend; MLX's native ops on a GPU.

MLX's CPU backend runs dilated, strided and transposed-strided convolutions as naive loops (~100x
slower than PyTorch). On the CPU they are written here as matrix products:
  conv1d, stride 1  sum over the K taps of (the padded input shifted by k*dilation) @ kernel[k],
                    accumulated with addmm (no im2col buffer: measured faster for 64-128 channels)
  conv1d, strided   im2col (slices of the padded input at k*dilation, step `stride`, concatenated
                    on the channel axis) @ the kernel reshaped to (K*C_in, C_out)
  conv_transpose1d  x @ the kernel reshaped to (C_in, K*C_out), then overlap-add of the K taps
                    (the kernel padded to a multiple of the stride, so the add is a sum of
                    ceil(K/stride) shifted blocks), then the `padding` crop
With the CPU kernels built and the wide BLAS loaded (`backend.wide_blas()`), conv1d is one kernel
instead (per block of output rows the same per-tap products, accumulated in cache, through
OpenBLAS's AVX-512 kernels: 1.4-3x the forms above) and conv_transpose1d's product goes through
the same BLAS. Layouts are MLX's: x (B, T, C_in), conv weight (C_out, K, C_in), transposed-conv
weight (C_out, K, C_in).
"""
from __future__ import annotations

import math
from typing import Optional

import mlx.core as mx

from .device import FAST, NATIVE, on_gpu, resolve_form
from .native import applies_to, kernels, wide_blas_loaded


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
    fast form (`impl`: FAST on the CPU, NATIVE on a GPU by default): one kernel through the wide
    BLAS where it is loaded, else MLX matmuls."""
    impl = resolve_form(impl)
    if impl == FAST and _wide_kernels_apply(x, weight):
        return kernels().conv1d(x, weight, bias, stride, padding, dilation)
    if impl == NATIVE:
        y = mx.conv1d(x, weight, stride=stride, padding=padding, dilation=dilation)
    elif stride == 1:
        y = _conv1d_taps(x, weight, padding, dilation)
    else:
        y = conv1d_im2col(x, weight, stride, padding, dilation)
    return y if bias is None else y + bias


def _wide_kernels_apply(x, weight) -> bool:
    return applies_to(x) and weight.dtype == mx.float32 and wide_blas_loaded()


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


def conv1d_addmm(x: mx.array, weight: mx.array, bias=None, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1) -> mx.array:
    """nn.Conv1d's forward (x (B, T, I), weight (O, K, I)). On the CPU a stride-1, ungrouped
    convolution runs as one product over the K shifted views (im2col), the bias added by addmm:
    MLX's CPU convolution is ~15x slower than that here."""
    if on_gpu() or stride != 1 or groups != 1:
        y = mx.conv1d(x, weight, stride, padding, dilation, groups)
        return y if bias is None else y + bias
    if padding:
        x = mx.pad(x, [(0, 0), (padding, padding), (0, 0)])
    o, k, i = weight.shape
    t_out = x.shape[1] - dilation * (k - 1)
    cols = x if k == 1 else mx.concatenate([x[:, j * dilation: j * dilation + t_out] for j in range(k)], axis=-1)
    w = weight.reshape(o, k * i).T
    if bias is None:
        return cols @ w
    return mx.addmm(bias, cols, w)


def conv2d_im2col(x: mx.array, weight: mx.array, stride=(1, 1), padding=(0, 0)) -> mx.array:
    """mx.conv2d (groups=1, no dilation) as im2col + matmul. x: (B, H, W, I), weight: (O, KH, KW, I).
    Where the kernels apply, the same product built in blocks of output rows (kernels/im2col.cpp:
    the same bits, without the whole column buffer)."""
    (sh, sw), (ph, pw) = stride, padding
    if applies_to(x) and applies_to(weight):
        return kernels().conv2d_im2col(x, weight, sh, sw, ph, pw)
    return _conv2d_im2col_ops(x, weight, stride, padding)


def _conv2d_im2col_ops(x: mx.array, weight: mx.array, stride, padding) -> mx.array:
    out_ch, kh, kw, in_ch = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    if ph or pw:
        x = mx.pad(x, [(0, 0), (ph, ph), (pw, pw), (0, 0)])
    h_out = (x.shape[1] - kh) // sh + 1
    w_out = (x.shape[2] - kw) // sw + 1
    cols = mx.concatenate([
        x[:, i : i + (h_out - 1) * sh + 1 : sh, j : j + (w_out - 1) * sw + 1 : sw, :]
        for i in range(kh) for j in range(kw)
    ], axis=-1)
    return cols @ weight.reshape(out_ch, kh * kw * in_ch).T


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
    if resolve_form(impl) == NATIVE:
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
        taps = kernels().linear(x, w, None, True)
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


def depthwise_conv1d(x: mx.array, weight: mx.array) -> mx.array:
    """Depthwise 'valid' convolution, channels last. x: (B, T + K - 1, C); weight: (C, K, 1) (MLX
    layout of a groups=C Conv1d) -> (B, T, C). On the CPU MLX's grouped convolution is a slow loop: a
    sum of K shifted products is ~4x faster there and exact to float32 rounding; with the CPU
    kernels the same sum in one pass (bit-identical, 12 -> 2.3 ms for 250 x 1280, K = 31)."""
    if on_gpu():
        return mx.conv1d(x, weight, groups=weight.shape[0])
    w = weight[:, :, 0].T  # (K, C)
    if applies_to(x):
        return kernels().depthwise_conv1d(x, w)
    K = weight.shape[1]
    T = x.shape[1] - K + 1
    out = x[:, 0:T] * w[0]
    for k in range(1, K):
        out = out + x[:, k:k + T] * w[k]
    return out
