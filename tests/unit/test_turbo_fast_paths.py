"""The CPU fast paths of Chatterbox Turbo's GPT-2 backbone (mlx_impl/t3/gpt2.py) held to the plain
paths they replace: the tanh GELU (backend/gelu_tanh.py) against the float64 formula, the decoder
Linear (backend/decoder_linear.py) against nn.Linear, and the backbone's blocks against mlx-lm's GPT-2
TransformerBlock (nn.Linear, nn.LayerNorm, nn.gelu_approx, MLX's SDPA) on the same weights. Bounds
are the measured values with a margin; the measured values are written beside them."""
from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_impl.backend.decoder_linear import FEW_ROWS, DecoderLinear
from mlx_impl.backend.gelu_tanh import gelu_tanh
from mlx_impl.backend.layers import Linear


def gelu_tanh_float64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def test_gelu_tanh_is_within_its_measured_error_of_the_float64_formula():
    """Absolute error over [-12, 12]: measured 5.2e-7 (nn.gelu_approx's and torch's: 4.3e-7); relative
    error where the value is >= 1e-10: measured 4.0e-6, where nn.gelu_approx and torch lose every digit
    (1 + tanh cancels in the negative tail: their relative error there is 1.0)."""
    x = np.linspace(-12, 12, 200001).astype(np.float32)
    want = gelu_tanh_float64(x)
    got = np.array(gelu_tanh(mx.array(x)))
    assert got.dtype == np.float32
    assert np.abs(got - want).max() <= 6e-7
    tail = np.abs(want) >= 1e-10
    assert (np.abs(got - want)[tail] / np.abs(want)[tail]).max() <= 5e-6
    special = np.array(gelu_tanh(mx.array([0.0, 30.0, -30.0, 100.0], dtype=mx.float32)))
    assert special[0] == 0.0 and special[1] == 30.0 and special[2] == 0.0 and special[3] == 100.0


def test_gelu_tanh_in_half_precision_is_mlxs_op():
    x = mx.array(np.linspace(-6, 6, 1001), dtype=mx.float16)
    got = gelu_tanh(x)
    assert got.dtype == mx.float16
    assert np.array_equal(np.array(got), np.array(nn.gelu_approx(x)))


@pytest.mark.parametrize("rows", [1, FEW_ROWS - 1, FEW_ROWS, 199])
def test_decoder_linear_is_nn_linear_for_few_rows_and_the_kernel_for_many(rows):
    """Few rows: nn.Linear's bits. FEW_ROWS and more: the backend Linear's bits, which differ from
    nn.Linear's only by where the bias is added (measured at 199 rows: 2.4e-7 for outputs up to 2.9)."""
    mx.random.seed(0)
    fast = DecoderLinear(1024, 3072)
    plain, kernel = nn.Linear(1024, 3072), Linear(1024, 3072)
    plain.update(fast.parameters())
    kernel.update(fast.parameters())
    x = mx.random.normal((1, rows, 1024))
    got = np.array(fast(x))
    if rows < FEW_ROWS:
        assert np.array_equal(got, np.array(plain(x)))
    else:
        assert np.array_equal(got, np.array(kernel(x)))
        assert np.abs(got - np.array(plain(x))).max() <= 1e-6


def test_gpt2_backbone_blocks_match_mlx_lms_gpt2_blocks():
    """4 GPT-2 medium blocks, random weights: a 40-row prefill, then three cached one-token steps,
    against the same backbone on mlx-lm's TransformerBlock. Measured: SNR 126.5 / 127.8 / 127.2 /
    128.9 dB, max abs 2.1e-6 for outputs up to 4.3."""
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_lm.models.gpt2 import TransformerBlock

    from mlx_impl.t3.gpt2 import GPT2Backbone, gpt2_model_args
    from mlx_impl.t3.llama_configs import LLAMA_CONFIGS

    args = gpt2_model_args({**LLAMA_CONFIGS["GPT2_medium"], "n_layer": 4})
    fast, plain = GPT2Backbone(args), GPT2Backbone(args)
    plain.h = [TransformerBlock(args) for _ in range(args.n_layer)]
    mx.random.seed(3)
    params = [(k, mx.random.normal(v.shape) * (0.02 if v.ndim == 2 else 0.01)
               + (1.0 if k.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0))
              for k, v in tree_flatten(fast.parameters())]
    fast.load_weights(params, strict=True)
    plain.load_weights(params, strict=True)
    fast_cache, plain_cache = make_prompt_cache(fast), make_prompt_cache(plain)
    for n in (40, 1, 1, 1):
        e = mx.random.normal((1, n, 1024))
        got = np.array(fast(cache=fast_cache, input_embeddings=e))
        want = np.array(plain(cache=plain_cache, input_embeddings=e))
        snr = 10 * np.log10((want ** 2).sum() / ((got - want) ** 2).sum())
        assert snr >= 120.0 and np.abs(got - want).max() <= 5e-6, (n, snr)
