"""Activations (chatterbox/models/s3gen/transformer/activation.py), plus the elementwise math the
flow uses everywhere (exp, softmax, sigmoid/SiLU, Mish, exact GELU, attention).

Why not mx.exp / mx.erf / mx.softmax on the CPU: in MLX's Linux CPU backend they run at ~25-60 ns
per element (measured: exp 15 ms, erf 35 ms for 614k floats; torch 0.25 ms), and mx.exp's relative
error reaches 1.6e-6 (torch's: 6e-8). Written with plain arithmetic and fused by mx.compile they
run 6-10x faster and to ~1e-7 relative. Faster still, where built, are the same formulas as
single vectorised C++ passes (`mlx_impl.cpu_kernels`, another 5-10x: GELU of 717k floats 12.9 ->
1.2 ms, PyTorch 1.1 ms). On a GPU the native ops are used.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import mlx.core as mx
import mlx.nn as nn

from ... import cpu_kernels

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693359375  # ln 2 split in two so that n * _LN2_HI is exact
_LN2_LO = -2.12194440e-4
_EXP_MIN, _EXP_MAX = -87.33, 88.72  # exp over / underflow of float32 normals
_ROUND_MAGIC = 12582912.0  # 1.5 * 2**23: adding and subtracting it rounds a float32 to an integer


def _native() -> bool:
    return mx.default_device() == mx.gpu


def _cpu_kernel(name: str, fallback):
    """The CPU kernel `name` where it applies to x (float32, kernels built), else `fallback`."""
    return lambda x: getattr(cpu_kernels.kernels(), name)(x) if cpu_kernels.applies_to(x) else fallback(x)


_SIDE_STREAM = None
_SPLIT_MIN_ELEMENTS = 1 << 19
_SPLIT = True  # off while a caller already runs independent halves on the two streams


@contextmanager
def whole_on_stream(stream):
    """Build the ops inside on `stream`, without splitting elementwise work over the side stream."""
    global _SPLIT
    before, _SPLIT = _SPLIT, False
    try:
        with mx.stream(stream):
            yield
    finally:
        _SPLIT = before


def side_stream():
    global _SIDE_STREAM
    if _SIDE_STREAM is None:
        _SIDE_STREAM = mx.new_stream(mx.cpu)
    return _SIDE_STREAM


def drain(steps):
    """Run the generator `steps` to its end; its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def run_two_streams(first, second):
    """The return values of two independent generators of lazy arrays, run at once on the CPU:
    `first` built on the default stream, `second` on the side stream, one BLAS thread each, and
    each yielded piece queued as it is built, in turn (`mx.async_eval`: MLX's CPU scheduler holds
    a bounded number of tasks, so one graph queued whole would leave the other stream idle). On a
    GPU: one after the other (the same operations)."""
    if _native():
        return drain(first), drain(second)
    streams = (mx.default_stream(mx.cpu), side_stream())
    running = {0: first, 1: second}
    results = [None, None]
    with cpu_kernels.one_blas_thread(streams):
        while running:
            pieces = []
            for i, steps in list(running.items()):
                with whole_on_stream(streams[i]):
                    try:
                        pieces.append(next(steps))
                    except StopIteration as stop:
                        results[i] = stop.value
                        del running[i]
            mx.async_eval([p for p in pieces + results if isinstance(p, mx.array)])
    return tuple(results)


def _two_streams(fn, x: mx.array) -> mx.array:
    """fn (elementwise) over x, the two halves of the first axis longer than 1 on two CPU streams:
    MLX runs a stream's elementwise kernels on one thread, and the machines this targets have 2+ cores."""
    if x.size < _SPLIT_MIN_ELEMENTS or not _SPLIT:
        return fn(x)
    axis = next((i for i, n in enumerate(x.shape) if n > 1), None)
    if axis is None:
        return fn(x)
    half = x.shape[axis] // 2
    lo = fn(mx.split(x, [half], axis=axis)[0])
    with mx.stream(side_stream()):
        hi = fn(mx.split(x, [half], axis=axis)[1])
    return mx.concatenate([lo, hi], axis=axis)


def _exp_arith(x: mx.array) -> mx.array:
    """exp by range reduction x = n ln2 + r, |r| <= ln2 / 2, a degree-7 polynomial for e^r
    (Taylor-like coefficients of the Cephes kind) and 2^n built in the exponent bits."""
    xc = mx.clip(x, _EXP_MIN, _EXP_MAX)
    # n = round(x / ln2) by the 1.5 * 2^23 trick (MLX's CPU floor is slow); |r| <= ln2 / 2 still
    n = (xc * _LOG2E + _ROUND_MAGIC) - _ROUND_MAGIC
    r = xc - n * _LN2_HI - n * _LN2_LO
    p = 1.9875691500e-4
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    p = p * r * r + r + 1.0
    two_n = mx.left_shift(n.astype(mx.int32) + 127, 23).view(mx.float32)
    y = p * two_n
    # below the clip the true value is (sub)normal or 0: give 0 (torch gives <= 1.2e-38)
    return mx.where(x < _EXP_MIN, 0.0, y)


_exp_compiled = mx.compile(_exp_arith)


def exp(x: mx.array) -> mx.array:
    return mx.exp(x) if _native() else _two_streams(_cpu_kernel("exp", _exp_compiled), x)


@mx.compile
def _sigmoid_cpu(x):
    return 1.0 / (1.0 + _exp_arith(-x))


def sigmoid(x: mx.array) -> mx.array:
    return mx.sigmoid(x) if _native() else _two_streams(_cpu_kernel("sigmoid", _sigmoid_cpu), x)


@mx.compile
def _silu_cpu(x):
    return x / (1.0 + _exp_arith(-x))


def silu(x: mx.array) -> mx.array:
    """x * sigmoid(x) (torch.nn.SiLU)."""
    return nn.silu(x) if _native() else _two_streams(_cpu_kernel("silu", _silu_cpu), x)


@mx.compile
def _mish_cpu(x):
    # tanh(log(1 + e^x)) = n / (n + 2) with n = e^x (e^x + 2); for x > 20 the factor is 1 in float32
    e = _exp_arith(mx.minimum(x, 20.0))
    n = e * (e + 2.0)
    return mx.where(x > 20.0, x, x * n / (n + 2.0))


def mish(x: mx.array) -> mx.array:
    """x * tanh(softplus(x)) (torch.nn.Mish)."""
    if _native():
        return x * mx.tanh(mx.logaddexp(x, 0.0))
    return _two_streams(_cpu_kernel("mish", _mish_cpu), x)


def _erfc_abs(z):
    """erfc(z) for z >= 0 = t exp(-x^2 + P(t)), t = 1 / (1 + |x|/2): the Chebyshev fit of Numerical
    Recipes (fractional error of erfc < 1.2e-7), so |erf error| < 1.2e-7 everywhere."""
    t = 1.0 / (1.0 + 0.5 * z)
    p = 0.17087277
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418,
              0.37409196, 1.00002368, -1.26551223):
        p = p * t + c
    return t * _exp_arith(-z * z + p)


def _erfc_arith(x):
    """erfc(x) = 1 - erf(x), without cancellation for x > 0."""
    e = _erfc_abs(mx.abs(x))
    return mx.where(x >= 0, e, 2.0 - e)


def _erf_arith(x):
    e = _erfc_abs(mx.abs(x))
    return mx.where(x >= 0, 1.0 - e, e - 1.0)


@mx.compile
def _gelu_cpu(x):
    # x * Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2 (no cancellation in the negative tail)
    return 0.5 * x * _erfc_arith(x * -0.7071067811865476)


def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU, torch.nn.functional.gelu(approximate='none')."""
    return nn.gelu(x) if _native() else _two_streams(_cpu_kernel("gelu", _gelu_cpu), x)


@mx.compile
def _exp_nonpositive(x):
    """exp for x <= 0 (or -inf / NaN): as _exp_arith without the upper clip, 0 below -87.33 (there
    the clipped polynomial gives a denormal ~1.2e-38, slow to compute with)."""
    xc = mx.maximum(x, _EXP_MIN)
    n = (xc * _LOG2E + _ROUND_MAGIC) - _ROUND_MAGIC
    r = xc - n * _LN2_HI - n * _LN2_LO
    p = 1.9875691500e-4
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    p = p * r * r + r + 1.0
    return mx.where(x < _EXP_MIN, 0.0, p * mx.left_shift(n.astype(mx.int32) + 127, 23).view(mx.float32))


def _exp_shifted(x, m):
    # the broadcast subtraction outside the compiled kernel: MLX's compiled CPU kernels are slow
    # on broadcast inputs
    return _exp_nonpositive(x - m)


def _accurate_sum_last(x: mx.array) -> mx.array:
    """Sum over the last axis, keepdims. MLX's CPU float32 sum accumulates in one running sum
    (relative error ~1e-6 over 600 terms, torch's vectorised sum ~1e-7): sum blocks of 8 first."""
    n = x.shape[-1]
    if n >= 64 and n % 8 == 0:
        x = x.reshape(*x.shape[:-1], n // 8, 8).sum(axis=-1)
    return x.sum(axis=-1, keepdims=True)


def softmax_parts(x: mx.array):
    """(exp(x - max), sum) over the last axis: softmax = e / sum, which attention can apply after
    its product with V (one pass less over the T x T probabilities)."""
    e = _exp_shifted(x, mx.max(x, axis=-1, keepdims=True))
    return e, _accurate_sum_last(e)


def softmax(x: mx.array, axis: int = -1) -> mx.array:
    """Softmax with the exp above (rows of -inf give NaN, as torch's)."""
    if _native():
        return mx.softmax(x, axis=axis, precise=True)
    if axis != -1 and axis != x.ndim - 1:
        return mx.swapaxes(softmax(mx.swapaxes(x, axis, -1)), axis, -1)
    if cpu_kernels.applies_to(x):
        return cpu_kernels.kernels().softmax(x)
    e, s = softmax_parts(x)
    return e / s


def softmax_matmul(scores: mx.array, v: mx.array) -> mx.array:
    """softmax(scores) @ v. Without the CPU kernel the normalisation is applied after the product
    with v (one pass less over the T x T probabilities)."""
    if _native() or cpu_kernels.applies_to(scores):
        return softmax(scores) @ v
    e, s = softmax_parts(scores)
    return (e @ v) / s


def attention(q: mx.array, k: mx.array, v: mx.array, scale: float, bias: mx.array = None) -> mx.array:
    """softmax(q k^T * scale + bias) v for (B, H, T, D) inputs, returned as (B, T, H, D); bias
    additive, (B|1, H|1, T|1, Tk), or None. On the CPU with the kernels built: one kernel per head
    and block of query rows (the T x T scores stay in cache); q, k, v need a unit-stride last axis
    (views of projections are). Otherwise MLX ops. For large score matrices the heads are split in
    two halves on two CPU streams (MLX's CPU backend runs a stream's work on one thread), unless
    the products run through the wide BLAS: then the kernel splits the heads over the stream's
    threads itself."""
    if not cpu_kernels.applies_to(q):
        return _attention_ops(q, k, v, scale, bias).transpose(0, 2, 1, 3)
    kernel = cpu_kernels.kernels().attention
    if bias is not None and bias.ndim == 3:
        bias = bias[:, None]
    if cpu_kernels.wide_blas_loaded():
        return kernel(q, k, v, scale, bias, True)
    h = q.shape[1]
    if q.shape[2] * k.shape[2] * h < _SPLIT_MIN_ELEMENTS or h < 2 or not _SPLIT:
        return kernel(q, k, v, scale, bias)
    half = h // 2
    heads = lambda a, sl: a if a is None or a.shape[1] == 1 else a[:, sl]
    lo = kernel(q[:, :half], k[:, :half], v[:, :half], scale, heads(bias, slice(0, half)))
    with mx.stream(side_stream()):
        hi = kernel(q[:, half:], k[:, half:], v[:, half:], scale, heads(bias, slice(half, None)))
    return mx.concatenate([lo, hi], axis=2)


def _attention_ops(q, k, v, scale, bias):
    scores = (q * scale) @ k.swapaxes(-1, -2)
    if bias is not None:
        scores = scores + bias
    h = scores.shape[1]
    if _native() or scores.size < _SPLIT_MIN_ELEMENTS or h < 2 or not _SPLIT:
        return softmax_matmul(scores, v)
    half = h // 2
    out1 = softmax_matmul(scores[:, :half], v[:, :half])
    with mx.stream(side_stream()):
        out2 = softmax_matmul(scores[:, half:], v[:, half:])
    return mx.concatenate([out1, out2], axis=1)


class Swish(nn.Module):
    """x * sigmoid(x) (the encoder's "swish", torch.nn.SiLU in the original)."""

    def __call__(self, x: mx.array) -> mx.array:
        return silu(x)


class GELUActivation(nn.Module):
    def __call__(self, x: mx.array) -> mx.array:
        return gelu(x)


ACTIVATIONS = {
    "swish": Swish,
    "silu": Swish,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": GELUActivation,
}
