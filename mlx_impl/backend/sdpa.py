"""Scaled dot-product attention on the CPU: one kernel per head and block of query rows (the T x T
scores stay in cache), or MLX's ops split over the two streams; on a GPU MLX's ops."""
from __future__ import annotations

import mlx.core as mx

from .device import on_gpu
from .elementwise import softmax_matmul
from .lanes import may_split, on_both_streams
from .native import applies_to, kernels, wide_blas_loaded


def attention(q: mx.array, k: mx.array, v: mx.array, scale: float, bias: mx.array = None) -> mx.array:
    """softmax(q k^T * scale + bias) v for (B, H, T, D) inputs, returned as (B, T, H, D); bias
    additive, (B|1, H|1, T|1, Tk), or None. On the CPU with the kernels built: the kernel, whose
    q, k, v need a unit-stride last axis (views of projections are); otherwise MLX ops. For large
    score matrices the heads are split in two halves on the two CPU streams, unless the products
    run through the wide BLAS: then the kernel splits the heads over the stream's threads itself."""
    if not applies_to(q):
        return _attention_ops(q, k, v, scale, bias).transpose(0, 2, 1, 3)
    kernel = kernels().attention
    if bias is not None and bias.ndim == 3:
        bias = bias[:, None]
    if wide_blas_loaded():
        return kernel(q, k, v, scale, bias, True)
    h = q.shape[1]
    if h < 2 or not may_split(q.shape[2] * k.shape[2] * h):
        return kernel(q, k, v, scale, bias)
    half = h // 2
    heads = lambda a, sl: a if a is None or a.shape[1] == 1 else a[:, sl]
    lo, hi = on_both_streams(
        lambda: kernel(q[:, :half], k[:, :half], v[:, :half], scale, heads(bias, slice(0, half))),
        lambda: kernel(q[:, half:], k[:, half:], v[:, half:], scale, heads(bias, slice(half, None))))
    return mx.concatenate([lo, hi], axis=2)


def _attention_ops(q, k, v, scale, bias):
    scores = (q * scale) @ k.swapaxes(-1, -2)
    if bias is not None:
        scores = scores + bias
    h = scores.shape[1]
    if on_gpu() or h < 2 or not may_split(scores.size):
        return softmax_matmul(scores, v)
    half = h // 2
    out1, out2 = on_both_streams(lambda: softmax_matmul(scores[:, :half], v[:, :half]),
                                 lambda: softmax_matmul(scores[:, half:], v[:, half:]))
    return mx.concatenate([out1, out2], axis=1)


def attention_split_scale(q: mx.array, k: mx.array, v: mx.array, scale: float, bias: mx.array = None):
    """Whisper's attention (the S3 tokenizer's): softmax((q * scale) @ (k * scale)^T + bias) @ v, q and
    k each scaled. q, k, v (B, H, T, D), bias additive (B|1, H|1, T|1, S) or None -> (out (B, T, H, D),
    the logits (B, H, T, S) or None). On the CPU with the kernels built one kernel with these ops' bits
    (kernels/whisper_attention.cpp: MLX's matmuls of 20 heads of 152 x 64 x 152 are one BLAS call a
    head, 0.58 ms for the scores, the kernel splits the heads over the cores), without the logits;
    elsewhere these ops."""
    if applies_to(q) and (bias is None or bias.ndim == 4):
        return kernels().attention_split_scale(q, k, v, scale, bias), None
    qk = (q * scale) @ (k.swapaxes(-1, -2) * scale)
    if bias is not None:
        qk = qk + bias
    w = kernels().softmax(qk) if applies_to(qk) else mx.softmax(qk, axis=-1)
    return (w @ v).transpose(0, 2, 1, 3), qk


def rotate_half_rope(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    """x * cos + rotate_half(x) * sin, rotate_half(x) = [-x[D/2:], x[:D/2]] (rotary embedding, halves
    not interleaved). x (B, T, H, D); cos, sin (T, D). On the CPU with the kernels built one pass of
    the rope kernel (the same bits), returned as a (B, T, H, D) view of its (B, H, T, D) output."""
    if applies_to(x) and applies_to(cos) and applies_to(sin):
        return kernels().rope(x.transpose(0, 2, 1, 3), cos, sin).transpose(0, 2, 1, 3)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    d = x.shape[-1]
    return x * c + mx.concatenate([-x[..., d // 2:], x[..., :d // 2]], axis=-1) * s
