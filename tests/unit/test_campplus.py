"""CAMPPlus x-vector (mlx_impl/s3gen/xvector.py) and its Kaldi fbank against the ORIGINAL
(chatterbox.models.s3gen.xvector, torchaudio.compliance.kaldi), with seeded random weights and
non-trivial BatchNorm statistics converted through mlx_impl.convert.campplus.sanitize; fp32 CPU."""
from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as Kaldi
from mlx.utils import tree_flatten

from chatterbox.models.s3gen import xvector as ref_xv
from mlx_impl.convert.campplus import IGNORED, ignored_keys, load_campplus, module_type, sanitize
from mlx_impl.convert.common import ConversionError
from mlx_impl.s3gen import xvector as xv
from parity import registry
from parity.metrics import compare
from signals import speech_like as _speech_like

SNR_DB = registry.load().default("float").snr_db  # the registry's float goal
COSINE = 0.999999
SR = 16000
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def speech_like(seconds: float, seed: int = 0):
    return _speech_like(seconds, SR, seed, dc=0.01)  # with a DC offset (the fbank removes its mean)


def randomize_batchnorms(model: torch.nn.Module, seed: int) -> int:
    """Running statistics and affine parameters away from (0, 1, 1, 0), so that a BatchNorm that
    normalised with batch statistics, or ignored the running ones, could not match."""
    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(1000)
                if m.affine:
                    m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                n += 1
    return n


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(4321)
    ref = ref_xv.CAMPPlus(memory_efficient=False)
    n_bn = randomize_batchnorms(ref, seed=1)
    ref.eval()
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    return ref, load_campplus(state), state, n_bn


# ---------------------------------------------------------------- Kaldi fbank

def _torch_log_misrounded_bins(n_fft_bins=256, bin_width=16000.0 / 512) -> np.ndarray:
    """FFT bins where torch's float32 log of the mel grid (1 + f / 700) is not the correctly
    rounded value that xvector.get_mel_banks computes (float64 log, rounded)."""
    grid = (np.float32(1.0) + np.float32(bin_width) * np.arange(n_fft_bins, dtype=np.float32) / np.float32(700.0))
    grid = grid.astype(np.float32)
    return np.flatnonzero(torch.log(torch.from_numpy(grid)).numpy() != np.log(grid.astype(np.float64)).astype(np.float32))


def test_mel_banks_bit_identical():
    """Bit-identical to torchaudio's Kaldi banks wherever torch's float32 log is correctly rounded:
    on every bin with torch's AVX2 kernels; with its AVX-512 ones (torch's CPU capability
    "AVX512", seen on an AMD EPYC in session 8) the log is 1 ulp off at 21 of the 256 bins, and the
    banks may differ in those columns only, by the propagated ulp (measured 7.1e-6 at most)."""
    ref, _ = Kaldi.get_mel_banks(80, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)
    out = xv.get_mel_banks(80, 512, 16000.0, 20.0, 0.0)
    assert out.shape == (80, 257) and not out[:, 256].any()
    misrounded = _torch_log_misrounded_bins()
    exact = np.setdiff1d(np.arange(256), misrounded)
    assert np.array_equal(out[:, exact], ref.numpy()[:, exact])
    assert np.abs(out[:, misrounded] - ref.numpy()[:, misrounded]).max(initial=0.0) <= 1e-5


def test_povey_window():
    ref = torch.hann_window(400, periodic=False).pow(0.85).numpy()
    assert np.abs(xv.povey_window(400) - ref).max() <= 6e-8  # torch's float32 cos/pow: half an ulp of 1
    assert xv.povey_window(400)[0] == 0.0


@pytest.mark.parametrize("seconds,num_mel_bins", [(2.0, 80), (1.234, 80), (0.7, 23)])
def test_fbank(seconds, num_mel_bins):
    y = speech_like(seconds, seed=int(seconds * 10))
    ref = Kaldi.fbank(torch.from_numpy(y)[None], num_mel_bins=num_mel_bins).numpy()
    out = np.array(xv.fbank(mx.array(y)[None], num_mel_bins=num_mel_bins))
    m = compare(ref, out)
    print(f"fbank {ref.shape}: {m.headline('float')}")
    assert out.shape == ref.shape == (1 + (len(y) - 400) // 160, num_mel_bins)  # snip_edges
    assert m.snr_db >= SNR_DB


def test_fbank_digital_silence_floor():
    """All-zero frames hit the float-epsilon floor before the log, as in the original."""
    y = speech_like(1.0, seed=2)
    y[:4000] = 0.0
    ref = Kaldi.fbank(torch.from_numpy(y)[None], num_mel_bins=80).numpy()
    out = np.array(xv.fbank(mx.array(y), num_mel_bins=80))
    assert np.all(out[:20] == np.float32(np.log(np.float32(xv.EPSILON))))
    assert compare(ref, out).snr_db >= SNR_DB


def test_extract_feature_batch():
    """Time-mean subtraction per utterance and zero padding of the shorter one."""
    wavs = [speech_like(1.5, seed=3), speech_like(1.1, seed=4)]
    ref, ref_lens, ref_times = ref_xv.extract_feature([torch.from_numpy(w) for w in wavs])
    out, lens, times = xv.extract_feature([mx.array(w) for w in wavs])
    assert (lens, times) == (ref_lens, ref_times)
    m = compare(ref.numpy(), np.array(out))
    print(f"extract_feature {tuple(ref.shape)}: {m.headline('float')}")
    assert m.snr_db >= SNR_DB


# ---------------------------------------------------------------- building blocks

@pytest.mark.parametrize("stride,padding,dilation,k", [(1, 2, 2, 3), (2, 2, 1, 5), (1, 0, 1, 3), (1, 3, 3, 3)])
def test_conv1d_im2col_matches_native(stride, padding, dilation, k):
    rng = np.random.default_rng(0)
    x = mx.array(rng.standard_normal((2, 57, 24), dtype=np.float32))
    w = mx.array(rng.standard_normal((16, k, 24), dtype=np.float32))
    native = np.array(mx.conv1d(x, w, stride=stride, padding=padding, dilation=dilation))
    out = np.array(xv.conv1d_im2col(x, w, stride=stride, padding=padding, dilation=dilation))
    assert out.shape == native.shape
    assert compare(native, out).snr_db >= 120


@pytest.mark.parametrize("stride,padding,k", [((1, 1), (1, 1), 3), ((2, 1), (1, 1), 3), ((2, 1), (0, 0), 1)])
def test_conv2d_im2col_matches_native(stride, padding, k):
    rng = np.random.default_rng(1)
    x = mx.array(rng.standard_normal((1, 20, 33, 8), dtype=np.float32))
    w = mx.array(rng.standard_normal((12, k, k, 8), dtype=np.float32))
    native = np.array(mx.conv2d(x, w, stride=stride, padding=padding))
    out = np.array(xv.conv2d_im2col(x, w, stride=stride, padding=padding))
    assert out.shape == native.shape
    assert compare(native, out).snr_db >= 120


@pytest.mark.parametrize("shape,stride,padding", [
    ((1, 80, 607, 1, 32, 3, 3), (1, 1), (1, 1)),  # the FCM head's conv1
    ((1, 80, 607, 32, 32, 3, 3), (2, 1), (1, 1)),  # layer1's first block (many blocks of rows)
    ((1, 10, 37, 32, 32, 3, 3), (1, 1), (1, 1)),  # fewer rows than one block
    ((2, 9, 30, 4, 5, 3, 2), (2, 3), (0, 1)),  # batch, strides and padding on both axes
])
def test_conv2d_im2col_kernel_gives_the_ops_forms_bits(shape, stride, padding):
    """The blocked im2col kernel (kernels/im2col.cpp) against the MLX-ops im2col it replaces on
    the CPU: bit for bit (the same BLAS product; row blocks only where they keep the bits)."""
    from mlx_impl.backend import convolution, native

    if not native.available():
        pytest.skip(native.why_unavailable())
    b, h, w, c, o, kh, kw = shape
    rng = np.random.default_rng(sum(shape))
    x = mx.array(rng.standard_normal((b, h, w, c), dtype=np.float32))
    weight = mx.array(rng.standard_normal((o, kh, kw, c), dtype=np.float32))
    want = np.array(convolution._conv2d_im2col_ops(x, weight, stride, padding))
    got = np.array(convolution.conv2d_im2col(x, weight, stride, padding))
    assert got.shape == want.shape and np.array_equal(got, want)


@pytest.mark.parametrize("shape,affine", [((2, 37, 48), True), ((1, 10, 21, 32), True), ((3, 192), False)])
def test_batch_norm_kernel_gives_the_modules_bits(shape, affine):
    """backend.batch_norm (one pass on the CPU) against nn.BatchNorm in eval mode, with and without
    the ReLU after it, bit for bit; in training mode it is the module itself."""
    import mlx.nn as nn

    from mlx_impl import backend

    rng = np.random.default_rng(sum(shape))
    c = shape[-1]
    bn = nn.BatchNorm(c, affine=affine)
    stats = {"running_mean": rng.standard_normal(c), "running_var": rng.uniform(0.01, 3.0, c)}
    if affine:
        stats.update(weight=rng.standard_normal(c), bias=rng.standard_normal(c))
    bn.update({k: mx.array(v.astype(np.float32)) for k, v in stats.items()})
    bn.eval()
    x = mx.array((rng.standard_normal(shape) * 3).astype(np.float32))
    assert np.array_equal(np.array(backend.batch_norm(bn, x)), np.array(bn(x)))
    assert np.array_equal(np.array(backend.batch_norm(bn, x, relu=True)), np.array(nn.relu(bn(x))))
    bn.train()
    assert np.array_equal(np.array(backend.batch_norm(bn, x)), np.array(bn(x)))


def test_campplus_on_the_kernels_gives_the_ops_forms_bits(monkeypatch):
    """The whole CAMPPlus (seeded weights and BatchNorm statistics) with the CPU kernels (blocked
    im2col, one-pass BatchNorm + ReLU, the CAM masks' sigmoid) and with MLX's ops forms: the same x-vector, bit for bit."""
    from mlx.utils import tree_map_with_path

    from mlx_impl.backend import convolution, mlx_ops, native, normalization

    if not native.available():
        pytest.skip(native.why_unavailable())
    rng = np.random.default_rng(5)
    model = xv.CAMPPlus()

    def seeded(path, p):
        values = rng.uniform(0.5, 1.5, p.shape) if path.endswith("running_var") else rng.standard_normal(p.shape)
        scale = 1.0 / np.sqrt(np.prod(p.shape[1:])) if p.ndim > 1 else 0.1
        return mx.array((values * (1.0 if path.endswith("running_var") else scale)).astype(np.float32))

    model.update(tree_map_with_path(seeded, model.parameters()))  # running statistics included
    x = mx.array(rng.standard_normal((1, 203, 80)).astype(np.float32))
    fast = np.array(model(x))
    monkeypatch.setattr(convolution, "applies_to", lambda _x: False)
    monkeypatch.setattr(normalization, "applies_to", lambda _x: False)
    monkeypatch.setattr(mlx_ops, "applies_to", lambda _x: False)
    plain = np.array(model(x))
    assert fast.shape == (1, 192) and np.isfinite(fast).all() and np.array_equal(fast, plain)


@pytest.mark.parametrize("t", [100, 250, 37])
def test_seg_pooling_and_stats(t):
    """avg_pool1d(ceil_mode=True) averages the last, shorter segment over its own frames only."""
    x = torch.randn(2, 16, t, generator=torch.Generator().manual_seed(t))
    layer = ref_xv.CAMLayer(16, 8, 3, stride=1, padding=1, dilation=1, bias=False)
    ref = layer.seg_pooling(x).numpy()
    ref_max = layer.seg_pooling(x, stype="max").numpy()
    xm = mx.array(x.numpy().transpose(0, 2, 1))
    cam = xv.CAMLayer(16, 8, 3, stride=1, padding=1, dilation=1, bias=False)
    assert compare(ref, np.array(cam.seg_pooling(xm)).transpose(0, 2, 1)).snr_db >= 120
    assert np.array_equal(ref_max, np.array(cam.seg_pooling(xm, stype="max")).transpose(0, 2, 1))
    stats_ref = ref_xv.statistics_pooling(x).numpy()
    assert compare(stats_ref, np.array(xv.statistics_pooling(xm))).snr_db >= 120


# ---------------------------------------------------------------- conversion

def test_sanitize_is_strict(models):
    _, _, state, n_bn = models
    out = sanitize(state)
    ignored = ignored_keys(state)
    assert len(ignored) == n_bn and all(k.endswith(".num_batches_tracked") for k in ignored)
    assert set(IGNORED) == {"num_batches_tracked"}
    assert len(out) == len(state) - n_bn
    # layouts by module type
    assert module_type("head.layer1.0.shortcut.0") == "conv2d" and module_type("head.layer2.1.bn2") == "batchnorm"
    assert module_type("xvector.block2.tdnnd3.cam_layer.linear_local") == "conv1d"
    np.testing.assert_array_equal(out["head.conv1.weight"], state["head.conv1.weight"].transpose(0, 2, 3, 1))
    key = "xvector.block3.tdnnd1.cam_layer.linear_local.weight"
    np.testing.assert_array_equal(out[key], state[key].transpose(0, 2, 1))
    key = "xvector.dense.nonlinear.batchnorm.running_var"
    np.testing.assert_array_equal(out[key], state[key])

    with pytest.raises(ConversionError, match="unknown module"):
        sanitize({**state, "xvector.extra.weight": state["xvector.tdnn.linear.weight"]})
    with pytest.raises(ConversionError, match="expected 4 dims"):
        sanitize({**state, "head.conv1.weight": state["head.conv1.weight"][0]})
    with pytest.raises(ConversionError, match="unexpected parameter"):
        sanitize({**state, "head.bn1.scale": state["head.bn1.weight"]})
    with pytest.raises(ConversionError, match="running_var"):
        load_campplus({k: v for k, v in state.items() if k != "xvector.transit2.nonlinear.batchnorm.running_var"})


# ---------------------------------------------------------------- the network

def test_xvector_from_fbank(models):
    ref_model, model, _, _ = models
    assert not model.training
    feats, _, _ = ref_xv.extract_feature([torch.from_numpy(speech_like(2.5, seed=5))])  # 248 frames
    with torch.no_grad():
        ref = ref_model(feats).numpy()
    out = np.array(model(mx.array(feats.numpy())))
    m = compare(ref, out)
    print(f"x-vector from fbank {ref.shape}: {m.headline('float')}")
    assert out.shape == ref.shape == (1, 192)
    assert m.snr_db >= SNR_DB and m.cosine >= COSINE

    # The running statistics are what the output depends on: reset to (0, 1), it is far off.
    weights = dict(tree_flatten(model.parameters()))
    reset = {k: mx.zeros_like(v) if k.endswith("running_mean") else mx.ones_like(v) if k.endswith("running_var") else v
             for k, v in weights.items()}
    plain = xv.CAMPPlus()
    plain.load_weights(list(reset.items()), strict=True)
    assert compare(ref, np.array(plain(mx.array(feats.numpy())))).snr_db < 20


def test_inference_end_to_end(models):
    """CAMPPlus.inference: waveform (1, n) -> fbank -> x-vector, as S3Token2Mel.embed_ref calls it."""
    ref_model, model, _, _ = models
    wav = speech_like(1.8, seed=6)[None]
    with torch.no_grad():
        ref = ref_model.inference(torch.from_numpy(wav)).numpy()
    out = np.array(model.inference(mx.array(wav)))
    m = compare(ref, out)
    print(f"x-vector end to end: {m.headline('float')}")
    assert m.snr_db >= SNR_DB and m.cosine >= COSINE
