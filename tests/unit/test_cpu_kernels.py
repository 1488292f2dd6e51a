"""The compiled float32 CPU kernels (mlx_impl/backend/native.py, kernels/*.cpp) against torch and
against the MLX arithmetic forms they replace (mlx_impl/backend/elementwise.py). Without the build
they show as expected failures naming the reason, never as passes."""
from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlx_impl import backend
from mlx_impl.backend import convolution, elementwise, lanes, layers, native

from kernel_spy import SpyKernels

pytestmark = pytest.mark.xfail(not native.available(), strict=True,
                               reason=f"CPU kernels not available: {native.why_unavailable()}")

# Errors against float64 truth on the inputs below, measured (kernel / torch's own float32):
#   normwise max|err| / max|y|:           exp 7.4e-9 / 7.4e-9, sigmoid 8.9e-8 / 8.9e-8,
#                                         silu 1.4e-8 / 1.4e-8, mish 2.2e-8 / 7.7e-9, gelu 4.3e-9 / 1.1e-8
#   elementwise relative where |y| > 1e-3: exp 7.8e-8, sigmoid 1.2e-7, silu 1.3e-7, mish 2.7e-7,
#                                         gelu 1.2e-6 (torch: 7.6e-4; the float32 z^2 of exp(-z^2) in
#                                         the far negative tail bounds it)
NORMWISE_TOL = 1.5e-7
ELEMENTWISE_TOL = {"exp": 2e-7, "sigmoid": 2.5e-7, "silu": 2.5e-7, "mish": 5e-7, "gelu": 2.5e-6}


def _inputs():
    rng = np.random.default_rng(0)
    wide = rng.standard_normal(50_000).astype(np.float32) * 8
    edges = np.array([0.0, -0.0, 1e-30, -1e-30, 20.0, 20.5, -20.5, 87.0, -87.0, -88.0, -100.0, 88.0,
                      -9.0, 9.0], np.float32)
    return np.concatenate([wide, edges, np.linspace(-12, 12, 4001, dtype=np.float32)])


def _truth(name: str, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    if name == "exp":
        return np.exp(x)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if name == "silu":
        return x / (1 + np.exp(-x))
    if name == "mish":
        return x * np.tanh(np.logaddexp(x, 0.0))
    return 0.5 * x * np.vectorize(math.erfc)(-x / math.sqrt(2))


FALLBACK = {
    "exp": elementwise._exp_compiled,
    "sigmoid": elementwise._sigmoid_cpu,
    "silu": elementwise._silu_cpu,
    "mish": elementwise._mish_cpu,
    "gelu": elementwise._gelu_cpu,
}


@pytest.mark.parametrize("name", sorted(FALLBACK))
def test_unary_kernel_against_float64_and_the_arithmetic_form(name):
    x = _inputs()
    truth = _truth(name, x)
    out = np.array(getattr(native.kernels(), name)(mx.array(x))).astype(np.float64)
    assert np.isfinite(out).all(), name
    normwise = np.abs(out - truth).max() / np.abs(truth).max()
    big = np.abs(truth) > 1e-3
    relative = (np.abs(out - truth)[big] / np.abs(truth)[big]).max()
    print(f"{name}: normwise {normwise:.2e}, elementwise (|y| > 1e-3) {relative:.2e}")
    assert normwise <= NORMWISE_TOL, (name, normwise)
    assert relative <= ELEMENTWISE_TOL[name], (name, relative)
    # the same formula as the MLX fallback, up to fused multiply-adds
    fallback = np.array(FALLBACK[name](mx.array(x))).astype(np.float64)
    assert np.abs(out - fallback).max() / np.abs(truth).max() <= NORMWISE_TOL, name


@pytest.mark.parametrize("name", sorted(FALLBACK))
def test_unary_kernel_at_the_float32_extremes(name):
    x = np.array([3e38, -3e38, np.inf, -np.inf], np.float32)
    out = np.array(getattr(native.kernels(), name)(mx.array(x)))
    expect = {"exp": [np.inf, 0, np.inf, 0], "sigmoid": [1, 0, 1, 0], "silu": [3e38, -0.0, np.inf, np.nan],
              "mish": [3e38, -0.0, np.inf, np.nan], "gelu": [3e38, -0.0, np.inf, np.nan]}[name]
    ref = torch.from_numpy(x)
    print(name, out, {"exp": torch.exp, "sigmoid": torch.sigmoid, "silu": F.silu, "mish": F.mish,
                      "gelu": F.gelu}[name](ref).numpy())
    np.testing.assert_allclose(out, np.array(expect, np.float32), rtol=1e-6, err_msg=name)


def test_softmax_kernel_matches_torch_including_masked_entries():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((2, 3, 37, 353)) * 6).astype(np.float32)
    x[0, 0, :, 100:] = -np.inf  # partly masked rows
    x[1, 2, 5, :] = -np.inf  # a fully masked row gives NaN, as torch's
    ref = torch.softmax(torch.from_numpy(x), dim=-1).numpy()
    out = np.array(native.kernels().softmax(mx.array(x)))
    assert np.isnan(out[1, 2, 5]).all() and np.isnan(ref[1, 2, 5]).all()
    keep = ~np.isnan(ref)
    assert np.array_equal(keep, ~np.isnan(out))
    assert np.abs(out[keep] - ref[keep]).max() <= 3e-7
    assert np.abs(out[0, 0, :, 100:]).max() == 0  # exp(-inf) = 0, as the fallback
    np.testing.assert_allclose(out.sum(-1)[keep[..., 0]], 1.0, atol=1e-6)


def test_layer_norm_kernel_matches_torch():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3, 41, 256)) * 3 + 1.5).astype(np.float32)
    w, b = rng.standard_normal(256).astype(np.float32), rng.standard_normal(256).astype(np.float32)
    for eps in (1e-5, 1e-12):
        ref = F.layer_norm(torch.from_numpy(x), (256,), torch.from_numpy(w), torch.from_numpy(b), eps).numpy()
        out = np.array(native.kernels().layer_norm(mx.array(x), mx.array(w), mx.array(b), eps))
        assert np.abs(out - ref).max() <= 4e-6 * np.abs(ref).max(), eps


def test_swiglu_kernel_against_float64_and_mlx_lm():
    """silu(gate) * up of fused [gate, up] rows (T3's FusedMLP): the kernel's SiLU (measured above)
    times up, against float64 truth and mlx-lm's swiglu on the split halves. Measured relative
    error where |y| > 1e-3: kernel 1.4e-7, mlx-lm's swiglu 5.2e-7 (its x * sigmoid(x) rounds twice)."""
    from mlx_lm.models.activations import swiglu

    rng = np.random.default_rng(4)
    gate_up = (rng.standard_normal((3, 5, 2 * 96)) * 6).astype(np.float32)
    gate_up[0, 0, :96] = _inputs()[-96:]  # the SiLU edge cases
    out = np.array(native.kernels().swiglu(mx.array(gate_up)))
    g, u = gate_up[..., :96].astype(np.float64), gate_up[..., 96:].astype(np.float64)
    truth = g / (1 + np.exp(-g)) * u
    assert out.shape == (3, 5, 96)
    big = np.abs(truth) > 1e-3
    assert (np.abs(out - truth)[big] / np.abs(truth)[big]).max() <= 2.5e-7
    ref = np.array(swiglu(*mx.split(mx.array(gate_up), [96], axis=-1)))
    assert (np.abs(out - ref)[big] / np.abs(truth)[big]).max() <= 8e-7  # the two errors above
    with pytest.raises(ValueError, match="swiglu: an even last axis"):
        native.kernels().swiglu(mx.zeros((2, 7)))


def test_kernels_take_strided_inputs_and_run_on_the_callers_stream():
    rng = np.random.default_rng(3)
    x = mx.array(rng.standard_normal((4, 64, 33)).astype(np.float32))
    k = native.kernels()
    strided = x.transpose(0, 2, 1)[:, ::2]
    np.testing.assert_array_equal(np.array(k.gelu(strided)), np.array(k.gelu(mx.array(np.array(strided)))))
    with mx.stream(mx.new_stream(mx.cpu)):
        side = k.softmax(strided)
    np.testing.assert_allclose(np.array(side), torch.softmax(torch.from_numpy(np.array(strided)), -1).numpy(),
                               atol=3e-7)


def test_kernels_reject_bad_input_by_name():
    k = native.kernels()
    with pytest.raises(ValueError, match="gelu: float32 input expected"):
        k.gelu(mx.zeros((3,), dtype=mx.float16))
    with pytest.raises(ValueError, match="layer_norm: weight and bias"):
        k.layer_norm(mx.zeros((2, 8)), mx.ones((4,)), mx.zeros((8,)), 1e-5)
    with pytest.raises(ValueError, match="softmax: at least one axis"):
        k.softmax(mx.array(1.0))


def test_the_flow_uses_the_kernels_on_the_cpu(monkeypatch):
    x = mx.array(_inputs())
    real, calls = native.kernels(), []

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    monkeypatch.setattr(elementwise, "kernels", Spy)
    np.testing.assert_array_equal(np.array(backend.gelu(x)), np.array(real.gelu(x)))
    s = x[:54000].reshape(-1, 100)
    np.testing.assert_array_equal(np.array(backend.softmax(s)), np.array(real.softmax(s)))
    assert calls == ["gelu", "softmax"], calls
    monkeypatch.undo()
    ln = layers.LayerNorm(16)
    y = mx.array(np.random.default_rng(4).standard_normal((5, 16)).astype(np.float32))
    np.testing.assert_array_equal(np.array(ln(y)),
                                  np.array(native.kernels().layer_norm(y, ln.weight, ln.bias, ln.eps)))


@pytest.mark.parametrize("bias_shape", [None, (2, 1, 1, 301), (2, 1, 300, 301), (1, 4, 300, 301)])
def test_attention_kernel_matches_torch_sdpa(bias_shape):
    """Strided (B, H, T, D) views of (B, T, H, D) projections, 300 query rows (blocks of 128 and a
    rest), 301 keys; biases broadcast over batch, heads or query rows; out (B, T, H, D)."""
    rng = np.random.default_rng(5)
    B, H, T, S, D = 2, 4, 300, 301, 64
    q = mx.array(rng.standard_normal((B, T, H, D)).astype(np.float32)).transpose(0, 2, 1, 3)
    k, v = (mx.array(rng.standard_normal((B, S, H, D)).astype(np.float32)).transpose(0, 2, 1, 3) for _ in range(2))
    bias = None
    if bias_shape is not None:
        bias = np.where(rng.random(bias_shape) < 0.2, -1e10, rng.standard_normal(bias_shape)).astype(np.float32)
    ref = F.scaled_dot_product_attention(*(torch.from_numpy(np.array(a)) for a in (q, k, v)), scale=D ** -0.5,
                                         attn_mask=None if bias is None else torch.from_numpy(bias))
    out = np.array(native.kernels().attention(q, k, v, D ** -0.5, None if bias is None else mx.array(bias)))
    ref = ref.numpy().transpose(0, 2, 1, 3)
    err = np.abs(out - ref).max()
    print(bias_shape, err)
    assert out.shape == (B, T, H, D)
    assert err <= 2e-6, err  # measured 0.9-1.3e-6: float32 products and sums in another order


def test_attention_kernel_rejects_bad_shapes_and_strides():
    k = native.kernels()
    q = mx.zeros((1, 2, 5, 8))
    with pytest.raises(ValueError, match=r"attention: q \(B, H, T, D\)"):
        k.attention(q, mx.zeros((1, 2, 6, 4)), mx.zeros((1, 2, 6, 4)), 1.0)
    with pytest.raises(ValueError, match="attention: bias of shape"):
        k.attention(q, q, q, 1.0, mx.zeros((1, 2, 5, 4)))
    with pytest.raises(ValueError, match="unit-stride last axis"):  # raised when evaluated
        mx.eval(k.attention(mx.zeros((1, 2, 8, 5)).swapaxes(2, 3), q, q, 1.0))


def _mlx_blas_is_mkl() -> bool:
    """Whether the set-up linked MLX's BLAS to Intel MKL (scripts/setup.sh: mlx_cpu.libs/libblas-*)."""
    import importlib.util
    from pathlib import Path

    libs = Path(importlib.util.find_spec("mlx").submodule_search_locations[0]).parent / "mlx_cpu.libs"
    return any("mkl" in str(p.resolve()) for p in libs.glob("libblas-*.so*"))


def test_stream_blas_threads_setting_is_accepted():
    k = native.kernels()
    with mx.stream(mx.new_stream(mx.cpu)):
        # True exactly where MKL is MLX's BLAS (its thread-local setting exists), else nothing to set
        assert k.set_stream_blas_threads(1) == _mlx_blas_is_mkl()
        k.set_stream_blas_threads(0)
    with pytest.raises(ValueError, match="threads >= 0"):
        k.set_stream_blas_threads(-1)


def test_one_blas_thread_covers_work_evaluated_inside_only():
    """one_blas_thread sets MKL's threads in each stream's queue order: work evaluated inside the
    block runs on one thread, a lazy graph evaluated after it on the default (the flow's estimator
    therefore queues its halves inside, test_flow)."""
    k = native.kernels()
    default = k.stream_blas_threads().item()
    if default == -1:
        pytest.skip("not Intel MKL: the setting is a no-op (set_stream_blas_threads returns False)")
    side = mx.new_stream(mx.cpu)
    with lanes.one_blas_thread((mx.default_stream(mx.cpu), side)):
        inside = k.stream_blas_threads()
        with mx.stream(side):
            inside_side = k.stream_blas_threads()
        mx.eval(inside, inside_side)
        lazy = k.stream_blas_threads()
    assert inside.item() == inside_side.item() == 1
    assert lazy.item() == default == k.stream_blas_threads().item()


def test_linear_kernel_matches_mlx_linear():
    rng = np.random.default_rng(6)
    x = mx.array(rng.standard_normal((2, 37, 48)).astype(np.float32))
    for bias in (True, False):
        lin = layers.Linear(48, 20, bias=bias)
        ref = np.array(super(layers.Linear, lin).__call__(x))  # MLX's nn.Linear
        out = np.array(lin(x))
        np.testing.assert_allclose(out, ref, rtol=0, atol=5e-7)  # measured <= 2.4e-7: one rounding of the bias add
    with pytest.raises(ValueError, match="linear: x"):
        native.kernels().linear(x, mx.zeros((20, 47)))


def test_snake_kernel_matches_the_hift_snake_formula(monkeypatch):
    """HiFT's Snake through the kernel against its MLX-ops form (the same range reduction and
    polynomial), on a vocoder-sized (1, 7200, 64) input with per-channel alphas."""
    import mlx_impl.s3gen.hifigan as hifigan

    rng = np.random.default_rng(7)
    snake = hifigan.Snake(64)
    snake.alpha = mx.array(rng.uniform(0.2, 3.0, 64).astype(np.float32))
    x = mx.array((rng.standard_normal((1, 7200, 64)) * 3).astype(np.float32))
    out = np.array(snake(x))
    monkeypatch.setattr(elementwise, "applies_to", lambda x: False)
    ref = np.array(snake(x))
    assert np.abs(out - ref).max() <= 2e-6  # measured 1.2e-6 (1 ulp of |y| ~ 10: fused multiply-adds)
    with pytest.raises(ValueError, match="snake: x"):
        native.kernels().snake(x, mx.ones((63,)))


def test_rms_norm_kernel_is_mx_fast_rms_norm_at_t3_width():
    """Bit-identical to mx.fast.rms_norm at T3's width (1024: the in-order sum is MLX's CPU sum);
    at other widths within float32 rounding; the drop-in layer falls back off the CPU kernels."""
    x = mx.random.normal((2, 9, 1024), key=mx.random.key(0)) * 3
    w = mx.random.normal((1024,), key=mx.random.key(1))
    assert np.array_equal(np.array(native.kernels().rms_norm(x, w, 1e-5)), np.array(mx.fast.rms_norm(x, w, 1e-5)))
    x80, w80 = x[..., :80], w[:80]
    np.testing.assert_allclose(np.array(native.kernels().rms_norm(x80, w80, 1e-5)),
                               np.array(mx.fast.rms_norm(x80, w80, 1e-5)), rtol=1e-6, atol=1e-6)
    import mlx.nn as nn

    ref = nn.RMSNorm(1024)
    ref.weight = w
    layer = layers.RMSNorm.like(ref)
    assert np.array_equal(np.array(layer(x)), np.array(ref(x)))
    with pytest.raises(ValueError, match="rms_norm"):
        native.kernels().rms_norm(x, w[:10], 1e-5)


@pytest.mark.parametrize("L, offset", [(1, 0), (1, 99), (1, 1234), (86, 0), (3, 17)])
def test_rope_kernel_is_mx_fast_rope(L, offset):
    """fused_layers.rope (the rotation kernel with MLX's cos / sin tables) is bit-identical to
    mlx-lm's Llama3RoPE (mx.fast.rope) on the fused q/k heads (a strided view), for an int offset
    and for a scalar int32 array (the compiled step's)."""
    from mlx_lm.models.rope_utils import initialize_rope

    from mlx_impl.t3.inference.fused_layers import rope

    module = initialize_rope(64, 500000.0, False, {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                                   "original_max_position_embeddings": 8192, "rope_type": "llama3"}, 131072)
    heads = mx.random.normal((2, L, 48, 64), key=mx.random.key(L)).transpose(0, 2, 1, 3)[:, :32]
    want = np.array(module(heads, offset=offset))
    assert np.array_equal(np.array(rope(module, heads, offset)), want)
    assert np.array_equal(np.array(rope(module, heads, mx.array(offset, dtype=mx.int32))), want)
    with pytest.raises(ValueError, match="rope"):
        native.kernels().rope(heads, mx.zeros((L, 31)), mx.zeros((L, 31)))


def test_depthwise_kernel_is_the_shift_sum(monkeypatch):
    """S3TokenizerV2's FSMN depthwise convolution: the kernel equals the ops form (a sum of K
    shifted products in k order) bit for bit, from a strided (padded) input, and rejects bad shapes."""
    from mlx_impl.s3tokenizer import model_v2

    x = mx.pad(mx.random.normal((2, 250, 1280), key=mx.random.key(0)), [(0, 0), (15, 15), (0, 0)])
    w = mx.random.normal((1280, 31, 1), key=mx.random.key(1))
    spy = SpyKernels(native)
    monkeypatch.setattr(convolution, "kernels", spy.kernels)
    got = model_v2.depthwise_conv1d(x, w)
    assert spy.calls == {"depthwise_conv1d": 1}, spy.calls
    monkeypatch.setattr(convolution, "applies_to", lambda a: False)
    want = model_v2.depthwise_conv1d(x, w)
    assert got.shape == (2, 250, 1280) and mx.array_equal(got, want)
    with pytest.raises(ValueError, match="depthwise_conv1d"):
        native.kernels().depthwise_conv1d(x, mx.zeros((31, 64)))


# --------------------------------------------------------------------------- the wide BLAS
def test_the_wide_blas_is_loaded_where_the_set_up_installs_openblas():
    """scripts/setup.sh installs libopenblas0-pthread on Linux: S3Gen's products must then run
    through it (its AVX-512 kernels are 1.7-2.4x MKL's on this AMD CPU); a set-up that lost it
    would leave S3Gen at half speed with every parity test still passing."""
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux") or ctypes.util.find_library("openblas") is None:
        pytest.xfail(f"no libopenblas on this machine: {native.wide_blas()}")
    if "on an Intel CPU" in native.wide_blas():
        pytest.xfail(native.wide_blas())  # by design: MKL keeps S3Gen's products there
    assert native.wide_blas_loaded(), native.wide_blas()
    assert "libopenblas" in native.wide_blas()


def _needs_wide_blas():
    if not native.wide_blas_loaded():
        pytest.xfail(f"wide BLAS not loaded: {native.wide_blas()}")


@pytest.mark.parametrize("c_in, c_out, k, stride, padding, dilation, T", [
    (64, 64, 11, 1, 25, 5, 3001),   # HiFT resblock, dilated
    (32, 48, 3, 1, 0, 1, 300),      # the flow's causal conv (left padding done by the caller)
    (18, 40, 30, 15, 7, 1, 4501),   # HiFT source_downs: strided, short input axis
    (40, 24, 1, 1, 0, 1, 513),      # 1x1
    (24, 16, 7, 2, 3, 2, 40),       # strided and dilated, a rest block
])
def test_conv1d_kernel_matches_mx_conv1d(c_in, c_out, k, stride, padding, dilation, T):
    """The wide-BLAS conv1d (blocks of 256 output rows, a product per tap; im2col below 32 input
    channels) against float64 truth
    (torch's conv1d in double), batch 2, with and without bias, as accurate as MLX's native
    convolution; backend.conv1d's fast form takes it."""
    _needs_wide_blas()
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, T, c_in)).astype(np.float32)
    w = (rng.standard_normal((c_out, k, c_in)) / math.sqrt(k * c_in)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    X, W, B = mx.array(x), mx.array(w), mx.array(b)
    for bias in (b, None):
        truth = F.conv1d(torch.from_numpy(x).double().transpose(1, 2), torch.from_numpy(w).double().permute(0, 2, 1),
                         None if bias is None else torch.from_numpy(bias).double(), stride=stride,
                         padding=padding, dilation=dilation).transpose(1, 2).numpy()
        out = np.array(native.kernels().conv1d(X, W, None if bias is None else B, stride, padding, dilation))
        mlx_conv = mx.conv1d(X, W, stride=stride, padding=padding, dilation=dilation)
        mlx_conv = np.array(mlx_conv if bias is None else mlx_conv + B)
        assert out.shape == truth.shape
        err, native_err = (np.abs(y - truth).max() / np.abs(truth).max() for y in (out, mlx_conv))
        # measured: kernel 0.7-3.1e-7, MLX native 2.0-8.2e-7, torch float32 1.8-6.0e-7 (normwise;
        # one product over all K C_in inputs, im2col, gave 6.9e-7 at 64 channels, k 11: per-tap sums)
        assert err <= 6e-7, (err, native_err)
    fast = np.array(backend.conv1d(X, W, B, stride=stride, padding=padding, dilation=dilation, impl=backend.FAST))
    np.testing.assert_array_equal(fast, np.array(native.kernels().conv1d(X, W, B, stride, padding, dilation)))


def test_conv1d_kernel_rejects_bad_input_by_name():
    kern = native.kernels()
    with pytest.raises(ValueError, match=r"conv1d: x \(B, T, C_in\)"):
        kern.conv1d(mx.zeros((1, 10, 4)), mx.zeros((3, 3, 5)))
    with pytest.raises(ValueError, match="too short for kernel 7"):
        kern.conv1d(mx.zeros((1, 5, 4)), mx.zeros((3, 7, 4)))
    with pytest.raises(ValueError, match="stride >= 1"):
        kern.conv1d(mx.zeros((1, 10, 4)), mx.zeros((3, 3, 4)), None, 0)


def _normwise(y, truth):
    return np.abs(np.asarray(y, np.float64) - truth).max() / np.abs(truth).max()


def test_wide_linear_and_attention_against_float64_and_the_thread_split():
    """Through the wide BLAS: Linear and attention against float64 truth, as accurate as MLX's
    BLAS; the rows (Linear) and heads (attention) split over the stream's two threads give the
    same bits as one thread (each row's sums do not depend on the split)."""
    _needs_wide_blas()
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 905, 256)).astype(np.float32)
    w = (rng.standard_normal((1024, 256)) / 16).astype(np.float32)
    lin = layers.use_wide_blas(layers.Linear(256, 1024))
    lin.weight = mx.array(w)
    truth = x.astype(np.float64) @ w.astype(np.float64).T + np.array(lin.bias, np.float64)
    two_threads = np.array(lin(mx.array(x)))
    with lanes.one_blas_thread([mx.default_stream(mx.cpu)]):
        one_thread = lin(mx.array(x))
        mx.eval(one_thread)
    mlx_blas = super(layers.Linear, lin).__call__(mx.array(x))
    # measured normwise: wide 5.9e-7, MLX's BLAS (MKL) 4.4e-7 (float32 sums of 256 products)
    assert _normwise(two_threads, truth) <= 1.2e-6, (_normwise(two_threads, truth), _normwise(mlx_blas, truth))
    np.testing.assert_array_equal(two_threads, np.array(one_thread))

    q, k, v = (rng.standard_normal((1, 8, 300, 64)).astype(np.float32) for _ in range(3))
    truth = F.scaled_dot_product_attention(*(torch.from_numpy(a).double() for a in (q, k, v)), scale=0.125)
    truth = truth.numpy().transpose(0, 2, 1, 3)
    kern = native.kernels()
    q, k, v = mx.array(q), mx.array(k), mx.array(v)
    wide = np.array(kern.attention(q, k, v, 0.125, None, True))
    with lanes.one_blas_thread([mx.default_stream(mx.cpu)]):
        wide_one = kern.attention(q, k, v, 0.125, None, True)
        mx.eval(wide_one)
    mkl = kern.attention(q, k, v, 0.125)
    # measured normwise: wide 8.9e-7, MLX's BLAS 8.0e-7
    assert _normwise(wide, truth) <= 1.8e-6, (_normwise(wide, truth), _normwise(mkl, truth))
    np.testing.assert_array_equal(wide, np.array(wide_one))


def test_conv_transpose_through_the_wide_blas_matches_mx_conv_transpose1d():
    _needs_wide_blas()
    rng = np.random.default_rng(10)
    x = mx.array(rng.standard_normal((1, 300, 64)).astype(np.float32))
    w = mx.array((rng.standard_normal((32, 11, 64)) / 20).astype(np.float32))
    b = mx.array(rng.standard_normal(32).astype(np.float32))
    truth = F.conv_transpose1d(torch.from_numpy(np.array(x)).double().transpose(1, 2),
                               torch.from_numpy(np.array(w)).double().permute(2, 0, 1), torch.from_numpy(np.array(b)).double(),
                               stride=5, padding=3).transpose(1, 2).numpy()
    out = backend.conv_transpose1d(x, w, b, stride=5, padding=3, impl=backend.FAST)
    mlx_conv = mx.conv_transpose1d(x, w, stride=5, padding=3) + b
    assert out.shape == truth.shape
    # measured normwise: 1.4e-7 (MLX's native convolution 3.2e-7)
    assert _normwise(out, truth) <= 6e-7, (_normwise(out, truth), _normwise(mlx_conv, truth))
