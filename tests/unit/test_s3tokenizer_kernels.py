"""The S3 tokenizer's CPU kernels give the bits of the MLX-ops forms they replace: Whisper's
attention (backend.attention_split_scale: q and k each scaled, the softmax kernel's rows), the
rotary rotation (backend.rotate_half_rope on the rope kernel with (T, D) tables), the depthwise FSMN
convolution in channel blocks, the rows of GELU / softmax / LayerNorm split over the stream's
threads, and the log-mel's frames as a strided view. Then the whole V2 encoder with and without the
new kernels: the same hidden states bit for bit."""
from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_impl.backend import convolution, native, sdpa
from mlx_impl.s3tokenizer import model_v2, utils

from kernel_spy import SpyKernels

pytestmark = pytest.mark.xfail(not native.available(), strict=True,
                               reason=f"CPU kernels not available: {native.why_unavailable()}")


def _normal(shape, seed, scale=1.0):
    return mx.array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * scale)


def _bias(lengths, t):
    """The encoder's padding bias (B, 1, 1, T): 0 on valid keys, -1e10 on padded ones."""
    mask = utils.make_non_pad_mask(mx.array(lengths), t)[:, None, :]
    return utils.mask_to_bias(mask, mx.float32)[:, None]


def _square_scores_only(a):
    """applies_to for sdpa's ops forms as the CPU ran them before these kernels: the softmax kernel
    on the (B, H, T, T) scores, nothing else (q, k, v have D != T here, the tables are 2-D)."""
    return a.ndim == 4 and a.shape[-1] == a.shape[-2]


def _bit_equal(a, b):
    a, b = np.array(a), np.array(b)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("B, T, H, D, lengths", [
    (1, 152, 20, 64, [152]),      # the T3 prompt's 6 s: 152 tokens, the tokenizer's 20 heads
    (1, 250, 20, 64, [250]),      # embed_ref's 10 s
    (2, 37, 4, 16, [37, 30]),     # a padded batch
    (1, 1, 2, 8, [1]),
])
def test_attention_split_scale_kernel_has_the_ops_bits(monkeypatch, B, T, H, D, lengths):
    q, k, v = (_normal((B, T, H, D), seed, 3.0).transpose(0, 2, 1, 3) for seed in (0, 1, 2))  # strided views
    bias = _bias(lengths, T)
    spy = SpyKernels(native)
    monkeypatch.setattr(sdpa, "kernels", spy.kernels)
    got, logits = sdpa.attention_split_scale(q, k, v, D ** -0.25, bias)
    assert spy.calls == {"attention_split_scale": 1} and logits is None
    # the ops form with the softmax kernel, as the CPU ran it before the kernel
    monkeypatch.setattr(sdpa, "applies_to", _square_scores_only)
    want, logits = sdpa.attention_split_scale(q, k, v, D ** -0.25, bias)
    assert spy.calls == {"attention_split_scale": 1, "softmax": 1} and logits.shape == (B, H, T, T)
    assert got.shape == (B, T, H, D) and _bit_equal(got, want)


def test_attention_split_scale_rejects_bad_shapes():
    q = mx.zeros((1, 2, 5, 8))
    with pytest.raises(ValueError, match="attention_split_scale"):
        native.kernels().attention_split_scale(q, mx.zeros((1, 2, 5, 4)), mx.zeros((1, 2, 5, 4)), 1.0)
    with pytest.raises(ValueError, match="bias"):
        native.kernels().attention_split_scale(q, q, q, 1.0, mx.zeros((1, 1, 5, 4)))


def test_rotate_half_rope_kernel_has_the_ops_bits(monkeypatch):
    """The encoder's rotary rotation (x cos + rotate_half(x) sin, the table's two halves equal) and a
    table whose halves differ (as a mutated one may): the rope kernel reads each half's own."""
    x = _normal((2, 152, 20, 64), 0, 4.0)
    table = model_v2.precompute_freqs_cis(64, 2048)[:152]
    uneven = mx.concatenate([mx.real(table)[:, :32], _normal((152, 32), 5)], axis=-1)
    for cos, sin in ((mx.real(table), mx.imag(table)), (uneven, mx.imag(table))):
        spy = SpyKernels(native)
        monkeypatch.setattr(sdpa, "kernels", spy.kernels)
        got = sdpa.rotate_half_rope(x, cos, sin)
        assert spy.calls == {"rope": 1}
        monkeypatch.setattr(sdpa, "applies_to", lambda a: False)
        want = sdpa.rotate_half_rope(x, cos, sin)
        monkeypatch.undo()
        assert _bit_equal(got, want)
    with pytest.raises(ValueError, match="rope"):
        native.kernels().rope(x.transpose(0, 2, 1, 3), mx.zeros((152, 63)), mx.zeros((152, 63)))


@pytest.mark.parametrize("B, T, C, K", [(1, 152, 1280, 31), (2, 41, 70, 31), (1, 3, 16, 5)])
def test_depthwise_blocks_keep_the_shift_sum_bits(monkeypatch, B, T, C, K):
    """Channel blocks of 64 (and a narrower last block), 4 output rows at a time and one: the sum
    of K shifted products in k order, bit for bit."""
    x = _normal((B, T + K - 1, C), 0)
    w = _normal((C, K, 1), 1)
    got = convolution.depthwise_conv1d(x, w)
    monkeypatch.setattr(convolution, "applies_to", lambda a: False)
    assert _bit_equal(got, convolution.depthwise_conv1d(x, w))


@pytest.mark.parametrize("name", ["gelu", "softmax", "layer_norm", "depthwise_conv1d"])
def test_rows_split_over_threads_keep_the_one_thread_bits(name):
    """Large inputs are split over the stream's threads (rows independent): the bits of one thread."""
    k = native.kernels()
    x = _normal((152, 5120), 0, 4.0)
    runs = {
        "gelu": lambda: k.gelu(x),
        "softmax": lambda: k.softmax(x.reshape(20, 152, 256)),
        "layer_norm": lambda: k.layer_norm(x.reshape(608, 1280), _normal((1280,), 1), _normal((1280,), 2), 1e-5),
        "depthwise_conv1d": lambda: k.depthwise_conv1d(x.reshape(1, 608, 1280), _normal((31, 1280), 3)),
    }
    try:
        k.set_stream_blas_threads(1)
        one = runs[name]()
        mx.eval(one)
    finally:
        k.set_stream_blas_threads(0)
    assert _bit_equal(runs[name](), one)


def _gather_frames_power(audio, window, n_fft=400, hop=160):
    """stft_power with the frames gathered by index (the form the strided view replaced)."""
    x = utils._reflect_pad(audio, n_fft // 2)
    n_frames = 1 + (x.shape[-1] - n_fft) // hop
    idx = mx.arange(n_frames)[:, None] * hop + mx.arange(n_fft)[None, :]
    spec = mx.fft.rfft(mx.take(x, idx, axis=-1) * window, n=n_fft, axis=-1)
    return mx.swapaxes(mx.abs(spec) ** 2, -1, -2)


@pytest.mark.parametrize("shape", [(16000 * 3 + 77,), (1, 16000 * 2), (2, 3, 5000)])
def test_log_mel_frames_as_a_strided_view_keep_the_bits(shape):
    audio = _normal(shape, 0, 0.1)
    window = mx.array(utils.hann_window())
    assert _bit_equal(utils.stft_power(audio, window), _gather_frames_power(audio, window))


def test_v2_encoder_with_and_without_the_new_kernels_is_bit_identical(monkeypatch):
    """The whole encoder (2 blocks, a padded batch): the attention, rotary and depthwise kernels
    against their ops forms (the other kernels on in both runs)."""
    from mlx_impl.convert.common import load_strict

    cfg = model_v2.ModelConfig(n_audio_state=256, n_audio_head=4, n_audio_layer=2)
    model = model_v2.S3TokenizerV2("speech_tokenizer_v2_25hz", cfg)
    rng = np.random.default_rng(0)
    load_strict(model, {k: rng.standard_normal(v.shape).astype(np.float32) * 0.05
                        for k, v in __import__("mlx.utils", fromlist=["tree_flatten"]).tree_flatten(model.parameters())},
                what="v2")
    mel = _normal((2, 128, 400), 7)
    lengths = mx.array([400, 333])
    h_kernels, _ = model.encoder(mel, lengths)
    mx.eval(h_kernels)
    monkeypatch.setattr(sdpa, "applies_to", _square_scores_only)  # the ops forms, the softmax kernel's
    monkeypatch.setattr(convolution, "applies_to", lambda a: False)
    h_ops, _ = model.encoder(mel, lengths)
    assert _bit_equal(h_kernels, h_ops)
