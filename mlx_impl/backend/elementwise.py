"""Elementwise math on the CPU: exp, sigmoid / SiLU, Mish, exact GELU, softmax, Snake's sin^2.

Why not mx.exp / mx.erf / mx.softmax / mx.sin on the CPU: in MLX's Linux CPU backend they run at
~25-60 ns per element (measured: exp 15 ms, erf 35 ms for 614k floats; torch 0.25 ms), and
mx.exp's relative error reaches 1.6e-6 (torch's: 6e-8). Written with plain arithmetic and fused by
mx.compile they run 6-10x faster and to ~1e-7 relative. Faster still, where built, are the same
formulas as single vectorised C++ passes (native.py, kernels/elementwise.h: another 5-10x; GELU of
717k floats 12.9 -> 1.2 ms, PyTorch 1.1 ms). On a GPU MLX's native ops are used.
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from .device import NATIVE, on_gpu, resolve_form
from .lanes import split_elementwise
from .native import applies_to, kernels

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693359375  # ln 2 split in two so that n * _LN2_HI is exact
_LN2_LO = -2.12194440e-4
_EXP_MIN, _EXP_MAX = -87.33, 88.72  # exp over / underflow of float32 normals
_ROUND_MAGIC = 12582912.0  # 1.5 * 2**23: adding and subtracting it rounds a float32 to an integer


def _exp_reduced(xc: mx.array) -> mx.array:
    """e^xc for xc <= _EXP_MAX, clipped below at _EXP_MIN: range reduction xc = n ln2 + r,
    |r| <= ln2 / 2, a degree-7 polynomial for e^r (Taylor-like coefficients of the Cephes kind) and
    2^n built in the exponent bits (kernels/elementwise.h `exp_clipped`, the same steps)."""
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
    return p * mx.left_shift(n.astype(mx.int32) + 127, 23).view(mx.float32)


def _exp_arith(x: mx.array) -> mx.array:
    y = _exp_reduced(mx.clip(x, _EXP_MIN, _EXP_MAX))
    # below the clip the true value is (sub)normal or 0: give 0 (torch gives <= 1.2e-38)
    return mx.where(x < _EXP_MIN, 0.0, y)


@mx.compile
def _exp_nonpositive(x):
    """exp for x <= 0 (or -inf / NaN): without the upper clip, 0 below -87.33 (there the clipped
    polynomial gives a denormal ~1.2e-38, slow to compute with)."""
    y = _exp_reduced(mx.maximum(x, _EXP_MIN))
    return mx.where(x < _EXP_MIN, 0.0, y)


_exp_compiled = mx.compile(_exp_arith)


@mx.compile
def _sigmoid_cpu(x):
    return 1.0 / (1.0 + _exp_arith(-x))


@mx.compile
def _silu_cpu(x):
    return x / (1.0 + _exp_arith(-x))


@mx.compile
def _mish_cpu(x):
    # tanh(log(1 + e^x)) = n / (n + 2) with n = e^x (e^x + 2); for x > 20 the factor is 1 in float32
    e = _exp_arith(mx.minimum(x, 20.0))
    n = e * (e + 2.0)
    return mx.where(x > 20.0, x, x * n / (n + 2.0))


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


@mx.compile
def _gelu_cpu(x):
    # x * Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2 (no cancellation in the negative tail)
    return 0.5 * x * _erfc_arith(x * -0.7071067811865476)


def _cpu_form(kernel: str, arithmetic):
    """On the CPU: the kernel `kernel` where it applies (float32, built), else the compiled
    arithmetic form; large inputs split over the two streams."""
    def form(x):
        return getattr(kernels(), kernel)(x) if applies_to(x) else arithmetic(x)

    return lambda x: split_elementwise(form, x)


_exp_cpu = _cpu_form("exp", _exp_compiled)
_sigmoid = _cpu_form("sigmoid", _sigmoid_cpu)
_silu = _cpu_form("silu", _silu_cpu)
_mish = _cpu_form("mish", _mish_cpu)
_gelu = _cpu_form("gelu", _gelu_cpu)


def exp(x: mx.array) -> mx.array:
    return mx.exp(x) if on_gpu() else _exp_cpu(x)


def sigmoid(x: mx.array) -> mx.array:
    return mx.sigmoid(x) if on_gpu() else _sigmoid(x)


def silu(x: mx.array) -> mx.array:
    """x * sigmoid(x) (torch.nn.SiLU)."""
    return nn.silu(x) if on_gpu() else _silu(x)


def mish(x: mx.array) -> mx.array:
    """x * tanh(softplus(x)) (torch.nn.Mish)."""
    return x * mx.tanh(mx.logaddexp(x, 0.0)) if on_gpu() else _mish(x)


def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU, torch.nn.functional.gelu(approximate='none')."""
    return nn.gelu(x) if on_gpu() else _gelu(x)


# --------------------------------------------------------------------------- softmax
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
    if on_gpu():
        return mx.softmax(x, axis=axis, precise=True)
    if axis != -1 and axis != x.ndim - 1:
        return mx.swapaxes(softmax(mx.swapaxes(x, axis, -1)), axis, -1)
    if applies_to(x):
        return kernels().softmax(x)
    e, s = softmax_parts(x)
    return e / s


def softmax_matmul(scores: mx.array, v: mx.array) -> mx.array:
    """softmax(scores) @ v. Without the CPU kernel the normalisation is applied after the product
    with v (one pass less over the T x T probabilities)."""
    if on_gpu() or applies_to(scores):
        return softmax(scores) @ v
    e, s = softmax_parts(scores)
    return (e @ v) / s


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
    if resolve_form(impl) == NATIVE:
        s = mx.sin(y)
        return s * s
    k = mx.round(y * _ONE_OVER_PI)
    r = ((y - k * _PI_1) - k * _PI_2) - k * _PI_3
    z = r * r
    c1, c2, c3, c4, c5 = _SIN_POLY
    p = (((c5 * z + c4) * z + c3) * z + c2) * z + c1
    s = r + p * z * r
    return s * s


def snake(x: mx.array, alpha: mx.array, no_div_by_zero: float = 1e-9) -> mx.array:
    """x + 1 / (alpha + 1e-9) * sin(alpha x)^2 (HiFT's Snake), alpha per channel (the last axis);
    on the CPU with the kernels, the same formula in one pass."""
    if applies_to(x) and alpha.dtype == mx.float32:
        return kernels().snake(x, alpha)
    return x + (1.0 / (alpha + no_div_by_zero)) * sin_squared(x * alpha)
