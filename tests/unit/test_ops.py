"""The backend's CPU convolution forms (mlx_impl/backend/convolution.py) and Snake's sin^2 against
MLX's native ops and against torch, on the vocoder's shapes (kernel, stride, dilation, padding;
short time axes to stay fast); mlx_impl.ops' Conv1d / ConvTranspose1d modules."""
from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlx_impl import backend, ops
from mlx_impl.convert.common import conv1d as conv1d_layout
from mlx_impl.convert.common import conv_transpose1d as conv_transpose1d_layout

SNR_DB = 100.0


def snr_db(ref, out) -> float:
    ref = np.asarray(ref, np.float64)
    err = np.asarray(out, np.float64) - ref
    noise = float(np.sum(err * err))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(ref * ref)) / noise)


def _check(name, ref, fast, native):
    assert fast.shape == ref.shape, (name, fast.shape, ref.shape)
    assert native.shape == ref.shape, (name, native.shape, ref.shape)
    s_torch, s_native = snr_db(ref, fast), snr_db(native, fast)
    print(f"{name}: fast vs torch {s_torch:.1f} dB, fast vs native {s_native:.1f} dB, "
          f"native vs torch {snr_db(ref, native):.1f} dB")
    assert s_torch >= SNR_DB, f"{name}: fast form vs torch {s_torch:.1f} dB"
    assert s_native >= SNR_DB, f"{name}: fast form vs MLX native {s_native:.1f} dB"


# (name, C_in, C_out, kernel, stride, padding, dilation, T): the vocoder's convolutions
CONV_CASES = [
    ("conv_pre", 80, 512, 7, 1, 3, 1, 12),
    ("f0_condnet", 80, 64, 3, 1, 1, 1, 12),
    ("resblock k3 d5", 64, 64, 3, 1, 5, 5, 50),
    ("resblock k7 d3", 32, 32, 7, 1, 9, 3, 60),
    ("resblock k11 d5", 64, 64, 11, 1, 25, 5, 80),
    ("resblock k11 d1", 16, 16, 11, 1, 5, 1, 40),
    ("source_down u15", 18, 256, 30, 15, 7, 1, 15 * 8 + 1),
    ("source_down u3", 18, 128, 6, 3, 1, 1, 3 * 10 + 1),
    ("source_down u1", 18, 64, 1, 1, 0, 1, 31),
    ("conv_post", 64, 18, 7, 1, 3, 1, 41),
    ("in_channels == kernel_size", 7, 5, 7, 1, 9, 3, 30),
    ("in_channels == kernel_size strided", 6, 4, 6, 3, 1, 1, 31),
]

# (name, C_in, C_out, kernel, stride, T): ups.N, padding (k - u) // 2
CONVT_CASES = [
    ("ups0", 512, 256, 16, 8, 6),
    ("ups1", 256, 128, 11, 5, 9),
    ("ups2", 128, 64, 7, 3, 11),
    ("in_channels == kernel_size", 16, 8, 16, 8, 5),
    ("in_channels == kernel_size k11", 11, 6, 11, 5, 7),
    ("kernel == stride", 8, 4, 4, 4, 5),
]


@pytest.mark.parametrize("name,cin,cout,k,stride,pad,dil,T", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv1d_fast_form(name, cin, cout, k, stride, pad, dil, T):
    g = torch.Generator().manual_seed(hash(name) % 2**31)
    x = torch.randn(2, cin, T, generator=g)
    w = torch.randn(cout, cin, k, generator=g) / math.sqrt(cin * k)
    b = torch.randn(cout, generator=g)
    ref = F.conv1d(x, w, b, stride=stride, padding=pad, dilation=dil).numpy().transpose(0, 2, 1)

    xm = mx.array(x.numpy().transpose(0, 2, 1))
    wm = mx.array(conv1d_layout(w.numpy()))
    bm = mx.array(b.numpy())
    fast = np.array(backend.conv1d(xm, wm, bm, stride, pad, dil, impl=backend.FAST))
    native = np.array(backend.conv1d(xm, wm, bm, stride, pad, dil, impl=backend.NATIVE))
    _check(f"conv1d {name}", ref, fast, native)


@pytest.mark.parametrize("name,cin,cout,k,stride,T", CONVT_CASES, ids=[c[0] for c in CONVT_CASES])
def test_conv_transpose1d_fast_form(name, cin, cout, k, stride, T):
    pad = (k - stride) // 2
    g = torch.Generator().manual_seed(hash(name) % 2**31)
    x = torch.randn(2, cin, T, generator=g)
    w = torch.randn(cin, cout, k, generator=g) / math.sqrt(cin * k / stride)  # torch layout (I, O, K)
    b = torch.randn(cout, generator=g)
    ref = F.conv_transpose1d(x, w, b, stride=stride, padding=pad).numpy().transpose(0, 2, 1)
    assert ref.shape[1] == (T - 1) * stride - 2 * pad + k

    xm = mx.array(x.numpy().transpose(0, 2, 1))
    wm = mx.array(conv_transpose1d_layout(w.numpy()))
    bm = mx.array(b.numpy())
    fast = np.array(backend.conv_transpose1d(xm, wm, bm, stride, pad, impl=backend.FAST))
    native = np.array(backend.conv_transpose1d(xm, wm, bm, stride, pad, impl=backend.NATIVE))
    _check(f"conv_transpose1d {name}", ref, fast, native)


def test_layout_is_by_module_type_not_shape():
    """A transposed-conv kernel converted with the Conv1d rule (same shapes when I == O) is wrong:
    the fast form must disagree with torch then, so the test above can tell the layouts apart."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 8, 5, generator=g)
    w = torch.randn(8, 8, 8, generator=g)  # I == O == K
    ref = F.conv_transpose1d(x, w, stride=4, padding=2).numpy().transpose(0, 2, 1)
    xm = mx.array(x.numpy().transpose(0, 2, 1))
    right = np.array(backend.conv_transpose1d(xm, mx.array(conv_transpose1d_layout(w.numpy())), None, 4, 2))
    wrong = np.array(backend.conv_transpose1d(xm, mx.array(conv1d_layout(w.numpy())), None, 4, 2))
    assert snr_db(ref, right) >= SNR_DB
    assert snr_db(ref, wrong) < 20.0


def test_device_choice_and_modules():
    assert backend.on_gpu() == (mx.default_device().type == mx.DeviceType.gpu)
    with pytest.raises(ValueError):
        backend.conv1d(mx.zeros((1, 4, 2)), mx.zeros((2, 1, 2)), impl="naive")
    conv = ops.Conv1d(4, 3, 3, padding=2, dilation=2)
    convt = ops.ConvTranspose1d(3, 2, 4, stride=2, padding=1)
    assert conv.weight.shape == (3, 3, 4) and conv.bias.shape == (3,)
    assert convt.weight.shape == (2, 4, 3)
    y = convt(conv(mx.ones((1, 6, 4))))
    assert y.shape == (1, (6 - 1) * 2 - 2 + 4, 2)
    assert ops.Conv1d(4, 3, 1, bias=False).get("bias") is None


@pytest.mark.parametrize("scale", [0.1, 3.0, 100.0, 2000.0])
def test_sin_squared_fast_form(scale):
    """Snake's sin^2 from arithmetic (CPU) against float64, torch's and MLX's native sin."""
    y = (np.random.default_rng(int(scale * 10)).standard_normal(200_000) * scale).astype(np.float32)
    exact = np.sin(y.astype(np.float64)) ** 2
    fast = np.array(backend.sin_squared(mx.array(y), impl=backend.FAST))
    native = np.array(backend.sin_squared(mx.array(y), impl=backend.NATIVE))
    torch_ = (torch.sin(torch.from_numpy(y)) ** 2).numpy()
    s_fast, s_native, s_torch = snr_db(exact, fast), snr_db(exact, native), snr_db(exact, torch_)
    err_fast, err_torch = np.abs(fast - exact).max(), np.abs(torch_ - exact).max()
    print(f"sin^2 |y|~{scale}: vs float64 fast {s_fast:.1f} dB (max {err_fast:.2g}), "
          f"native {s_native:.1f} dB, torch {s_torch:.1f} dB (max {err_torch:.2g}); fast vs torch {snr_db(torch_, fast):.1f} dB")
    assert s_fast >= 140.0 and snr_db(torch_, fast) >= 130.0
    assert err_fast <= 3e-7
