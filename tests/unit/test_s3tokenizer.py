"""MLX S3 tokenizer (V2, V1, Chatterbox subclass) against the ORIGINAL PyTorch modules (pip
`s3tokenizer`, chatterbox-tts 0.1.7) with seeded random weights converted through `sanitize`.
fp32, CPU. Floats: SNR >= 100 dB; tokens: exact."""
from __future__ import annotations

import numpy as np
import pytest

from parity import registry

torch = pytest.importorskip("torch")
import mlx.core as mx  # noqa: E402

from mlx_impl.convert.common import ConversionError, load_strict  # noqa: E402
from mlx_impl.convert.s3tokenizer import sanitize, strip_prefix  # noqa: E402
from mlx_impl.s3tokenizer import model as mlx_v1  # noqa: E402
from mlx_impl.s3tokenizer import model_v2 as mlx_v2  # noqa: E402
from mlx_impl.s3tokenizer import utils as mlx_utils  # noqa: E402
from parity.metrics import compare  # noqa: E402
from kernel_spy import SpyKernels  # noqa: E402

SNR_MIN = registry.load().default("float").snr_db  # the registry's float goal
SMALL = dict(n_audio_state=256, n_audio_head=4, n_audio_layer=2)  # head dim 64, as the RoPE table needs
TINY = dict(n_audio_state=128, n_audio_head=2, n_audio_layer=1)


def _np(t):
    return t.detach().cpu().numpy()


def _snr(ref, out, label):
    m = compare(np.asarray(ref), np.asarray(out))
    print(f"{label}: {m.headline('float')}")
    assert not m.length_mismatch, f"{label}: shape {m.shape_out} != {m.shape_ref}"
    assert m.snr_db >= SNR_MIN, f"{label}: SNR {m.snr_db:.1f} dB < {SNR_MIN}"
    return m


def _exact(ref, out, label):
    ref, out = np.asarray(ref), np.asarray(out)
    assert ref.shape == out.shape, f"{label}: shape {out.shape} != {ref.shape}"
    m = compare(ref, out, "int")
    print(f"{label}: {m.headline('int')} ({ref.size} tokens, {len(np.unique(ref))} distinct)")
    assert m.exact == 1.0, f"{label}: {m.exact:.4f} exact, first mismatch at {m.first_mismatch}"


def speechlike(n: int, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A deterministic voiced/unvoiced signal with a moving pitch, formant-like partials, noise bursts
    and a silent gap (so the 8-decade log floor is exercised)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 25))
    env = 0.5 * (1 + np.sin(2 * np.pi * 3.1 * t)) ** 2
    noise = rng.standard_normal(n) * (np.sin(2 * np.pi * 1.3 * t) > 0.6)
    x = 0.08 * voiced * env + 0.02 * noise
    x[n // 3: n // 3 + sr // 10] = 0.0
    return x.astype(np.float32)


def _spread_fsq(module, seed=1):
    """Default init leaves project_down outputs near 0, so nearly every token would be the same code;
    widen it (seeded) so the tokens spread over the codebook and the comparison means something."""
    g = torch.Generator().manual_seed(seed)
    w = module.quantizer._codebook.project_down.weight
    with torch.no_grad():
        w.copy_(torch.randn(w.shape, generator=g) * (3.0 / np.sqrt(w.shape[1])))


def _v2_pair(cfg=SMALL, seed=0):
    from s3tokenizer.model_v2 import ModelConfig as TCfg
    from s3tokenizer.model_v2 import S3TokenizerV2 as TV2

    torch.manual_seed(seed)
    ref = TV2("speech_tokenizer_v2_25hz", TCfg(**cfg)).eval()
    _spread_fsq(ref)
    out = mlx_v2.S3TokenizerV2("speech_tokenizer_v2_25hz", mlx_v2.ModelConfig(**cfg))
    load_strict(out, sanitize({k: _np(v) for k, v in ref.state_dict().items()}), what="v2")
    return ref, out


def _mels(lengths, seed=0):
    """Log-mels of speech-like audio, zero-padded into a batch (B, 128, T_max), as `padding` makes."""
    from s3tokenizer.utils import log_mel_spectrogram, padding

    mels = [log_mel_spectrogram(torch.from_numpy(speechlike(n * 160 + 80, seed=seed + i))) for i, n in enumerate(lengths)]
    for m, n in zip(mels, lengths):
        assert m.shape[1] == n
    return padding(mels)


# ----------------------------------------------------------------------------- front end pieces
def test_mel_filters_and_window_match_original():
    import librosa
    from s3tokenizer.utils import _mel_filters

    for n_mels in (80, 128):
        ours = mlx_utils.mel_filters(n_mels=n_mels)
        assert np.array_equal(ours, librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels)), n_mels
        assert np.array_equal(ours, _mel_filters("cpu", n_mels).numpy()), n_mels
    w_ref = torch.hann_window(400).numpy()
    w = mlx_utils.hann_window(400)
    # torch's float32 cos is not correctly rounded: at most one ulp apart
    assert np.max(np.abs(w - w_ref)) <= np.finfo(np.float32).eps
    print(f"hann window: {(w != w_ref).sum()} of 400 entries differ by one ulp")


def test_log_mel_spectrogram_matches_original():
    from s3tokenizer.utils import log_mel_spectrogram as ref_lm

    wav = speechlike(16000 * 2 + 123)
    _snr(ref_lm(torch.from_numpy(wav)).numpy(), mlx_utils.log_mel_spectrogram(wav), "utils.log_mel_spectrogram")
    _snr(ref_lm(torch.from_numpy(wav), padding=480).numpy(), mlx_utils.log_mel_spectrogram(wav, padding=480),
         "utils.log_mel_spectrogram(padding=480)")


def test_masks_padding_and_merge_match_original():
    from s3tokenizer import utils as ref

    lengths = torch.tensor([5, 3, 2])
    assert np.array_equal(ref.make_non_pad_mask(lengths).numpy(), np.array(mlx_utils.make_non_pad_mask(mx.array([5, 3, 2]))))
    assert np.array_equal(ref.make_non_pad_mask(lengths, 7).numpy(),
                          np.array(mlx_utils.make_non_pad_mask(mx.array([5, 3, 2]), 7)))
    m = ref.make_non_pad_mask(lengths)
    assert np.array_equal(ref.mask_to_bias(m, torch.float32).numpy(),
                          np.array(mlx_utils.mask_to_bias(mx.array(m.numpy()), mx.float32)))
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((128, n)).astype(np.float32) for n in (7, 11, 3)]
    pf, pl = ref.padding([torch.from_numpy(f) for f in feats])
    of, ol = mlx_utils.padding([mx.array(f) for f in feats])
    assert np.array_equal(pf.numpy(), np.array(of)) and np.array_equal(pl.numpy(), np.array(ol))
    segs = [list(range(i * 1000, i * 1000 + n)) for i, n in enumerate((750, 750, 213))]
    for rate in (25, 50):
        assert ref.merge_tokenized_segments(segs, 4, rate) == mlx_utils.merge_tokenized_segments(segs, 4, rate)


def test_rotary_table_and_rotation_match_original():
    from s3tokenizer.model_v2 import apply_rotary_emb, precompute_freqs_cis

    ref = precompute_freqs_cis(64, 2048)
    ours = mlx_v2.precompute_freqs_cis(64, 2048)
    assert tuple(ours.shape) == tuple(ref.shape) == (2048, 64)
    # exponent, layout (halves repeated, not interleaved) and positions: entry by entry
    _snr(torch.view_as_real(ref).numpy(), np.stack([np.array(mx.real(ours)), np.array(mx.imag(ours))], -1), "freqs_cis")
    # same angles; cos / sin at most one float32 ulp apart (torch's are not correctly rounded)
    diff = np.abs(torch.view_as_real(ref).numpy() - np.stack([np.array(mx.real(ours)), np.array(mx.imag(ours))], -1))
    assert diff.max() <= np.finfo(np.float32).eps / 2, diff.max()
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 50, 4, 64)).astype(np.float32)
    k = rng.standard_normal((2, 50, 4, 64)).astype(np.float32)
    rq, rk = apply_rotary_emb(torch.from_numpy(q), torch.from_numpy(k), ref[:50])
    oq, ok = mlx_v2.apply_rotary_emb(mx.array(q), mx.array(k), ours[:50])
    _snr(rq.numpy(), oq, "rope q")
    _snr(rk.numpy(), ok, "rope k")


# ----------------------------------------------------------------------------- V2
def test_v2_encoder_and_tokens_padded_batch():
    ref, out = _v2_pair()
    mel, mel_len = _mels([400, 333, 61])
    with torch.no_grad():
        h, hl = ref.encoder(mel, mel_len)
        code, code_len = ref.quantize(mel, mel_len)
    oh, ohl = out.encoder(mx.array(mel.numpy()), mx.array(mel_len.numpy()))
    ocode, ocode_len = out.quantize(mx.array(mel.numpy()), mx.array(mel_len.numpy()))
    assert np.array_equal(hl.numpy(), np.array(ohl))
    for b, n in enumerate(hl.tolist()):  # padded rows past the length are not used by anyone
        _snr(_np(h[b, :n]), np.array(oh)[b, :n], f"v2 encoder out, item {b}")
    _exact(_np(code), ocode, "v2 tokens (padded batch, whole tensor)")
    assert np.array_equal(code_len.numpy(), np.array(ocode_len))
    assert len(np.unique(_np(code))) > 100  # the test is not trivially passing on a constant code


def test_v2_long_audio_and_mixed_batch():
    """> 30 s: 30 s windows, 4 s overlap, merged; batched with a short item (_quantize_mixed_batch)."""
    ref, out = _v2_pair(TINY)
    lengths = [5700, 300]
    mel, mel_len = _mels(lengths, seed=3)
    with torch.no_grad():
        code, code_len = ref.quantize(mel, mel_len)
    ocode, ocode_len = out.quantize(mx.array(mel.numpy()), mx.array(mel_len.numpy()))
    _exact(_np(code), ocode, f"v2 long-audio + short tokens {lengths}")
    assert np.array_equal(code_len.numpy(), np.array(ocode_len))
    # 5700 frames -> windows [0, 3000) [2600, 5600) [5200, 5700): 750 - 50 + 750 - 100 + 125 - 50 tokens
    assert code_len.tolist() == [1425, 75]


def test_v2_quantize_simple_is_the_short_path():
    ref, out = _v2_pair()
    mel, mel_len = _mels([200, 120])
    with torch.no_grad():
        code, _ = ref.quantize(mel, mel_len)
    ocode, _ = out.quantize_simple(mx.array(mel.numpy()), mx.array(mel_len.numpy()))
    _exact(_np(code), ocode, "v2 quantize_simple")


# ----------------------------------------------------------------------------- V1
@pytest.mark.parametrize("name", ["speech_tokenizer_v1", "speech_tokenizer_v1_25hz"])
def test_v1_encoder_and_tokens(name):
    from s3tokenizer.model import ModelConfig as TCfg
    from s3tokenizer.model import S3Tokenizer as TV1

    cfg = dict(SMALL, n_codebook_size=512)
    torch.manual_seed(0)
    ref = TV1(name, TCfg(**cfg)).eval()
    # |e|^2 enters the distance, so a raw randn codebook always picks its shortest row: use unit rows
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        e = torch.randn(ref.quantizer._codebook.embed.shape, generator=g)
        ref.quantizer._codebook.embed.copy_(torch.nn.functional.normalize(e, dim=-1))
    out = mlx_v1.S3Tokenizer(name, mlx_v1.ModelConfig(**cfg))
    load_strict(out, sanitize({k: _np(v) for k, v in ref.state_dict().items()}), what="v1")
    mel, mel_len = _mels([300, 251])
    with torch.no_grad():
        h, hl = ref.encoder(mel, mel_len)
        code, code_len = ref.quantize(mel, mel_len)
    oh, ohl = out.encoder(mx.array(mel.numpy()), mx.array(mel_len.numpy()))
    ocode, ocode_len = out.quantize(mx.array(mel.numpy()), mx.array(mel_len.numpy()))
    for b, n in enumerate(hl.tolist()):
        _snr(_np(h[b, :n]), np.array(oh)[b, :n], f"{name} encoder out, item {b}")
    _exact(_np(code), ocode, f"{name} tokens")
    assert np.array_equal(code_len.numpy(), np.array(ocode_len))
    assert len(np.unique(_np(code))) > 10  # 28 of 512 codes in use here: not a constant output


def test_v1_sinusoids_match_original():
    from s3tokenizer.model import sinusoids

    # only the default value: the table is a buffer of the original, loaded with the weights.
    # torch's float32 exp is not correctly rounded for a few entries (1 ulp): ~113 dB at 1280 channels
    for channels in (256, 1280):
        _snr(sinusoids(1500, channels).numpy(), mlx_v1.sinusoids(1500, channels), f"v1 sinusoids (1500, {channels})")


# ----------------------------------------------------------------------------- Chatterbox subclass
@pytest.fixture(scope="module")
def chatterbox_pair():
    """The ORIGINAL Chatterbox S3Tokenizer (always full size: 6 x 1280) and the MLX port, seeded."""
    from chatterbox.models.s3tokenizer import S3Tokenizer as TS3

    from mlx_impl.s3tokenizer.s3tokenizer import S3Tokenizer

    torch.manual_seed(0)
    ref = TS3("speech_tokenizer_v2_25hz").eval()
    _spread_fsq(ref)
    state = {f"tokenizer.{k}": _np(v) for k, v in ref.state_dict().items() if k not in ("_mel_filters", "window")}
    out = S3Tokenizer("speech_tokenizer_v2_25hz")
    load_strict(out, sanitize(strip_prefix(state, "tokenizer."), verbose=True), what="chatterbox s3tokenizer")
    return ref, out


def test_chatterbox_log_mel_and_prompt_tokens(chatterbox_pair):
    """prepare_conditionals: s3_tokzr.forward([ref_16k_wav[:6 s]], max_len=150)."""
    ref, out = chatterbox_pair
    wav = speechlike(16000 * 7)[:96000]
    _snr(ref.log_mel_spectrogram(torch.from_numpy(wav)[None]).numpy(), out.log_mel_spectrogram(wav[None]),
         "chatterbox log_mel (1, 128, 600)")
    with torch.no_grad():
        tok, tok_len = ref.forward([wav], max_len=150)
    otok, otok_len = out.forward([wav], max_len=150)
    assert tuple(otok.shape) == (1, 150)
    _exact(_np(tok), otok, "chatterbox prompt tokens, max_len=150")
    assert np.array_equal(tok_len.numpy(), np.array(otok_len))


def test_chatterbox_forward_on_array_like_embed_ref(chatterbox_pair):
    """S3Gen.embed_ref: self.tokenizer(ref_wav_16.float()) with a (1, L) tensor, no max_len."""
    ref, out = chatterbox_pair
    wav = speechlike(16000 + 4077, seed=5)[None]
    with torch.no_grad():
        tok, tok_len = ref(torch.from_numpy(wav))
    otok, otok_len = out(mx.array(wav))
    _exact(_np(tok), otok, "chatterbox tokens of a (1, L) array")
    assert np.array_equal(tok_len.numpy(), np.array(otok_len))


def test_chatterbox_pad_matches_original(chatterbox_pair):
    ref, out = chatterbox_pair
    wavs = [speechlike(n, seed=n) for n in (16000, 16001, 12345)]
    for sr in (16000, 24000):
        for r, o in zip(ref.pad(wavs, sr), out.pad(wavs, sr)):
            assert tuple(r.shape) == tuple(o.shape)
            assert np.array_equal(r.numpy(), np.array(o))


# ----------------------------------------------------------------------------- conversion / loading
def test_sanitize_is_strict():
    ref, _ = _v2_pair()
    state = {k: _np(v) for k, v in ref.state_dict().items()}
    with pytest.raises(ConversionError, match="unexpected source tensor 'encoder.extra'"):
        sanitize({**state, "encoder.extra": np.zeros(1, np.float32)})
    ok = sanitize({**state, "_mel_filters": np.zeros((128, 201), np.float32), "window": np.zeros(400, np.float32)})
    assert "_mel_filters" not in ok and "window" not in ok
    assert ok["encoder.conv1.weight"].shape == (256, 3, 128)  # (O, I, K) -> (O, K, I)
    assert ok["encoder.blocks.0.attn.fsmn_block.weight"].shape == (256, 31, 1)
    assert "quantizer.codebook.project_down.weight" in ok
    missing = dict(state)
    del missing["encoder.blocks.1.mlp.2.bias"]
    out = mlx_v2.S3TokenizerV2("speech_tokenizer_v2_25hz", mlx_v2.ModelConfig(**SMALL))
    with pytest.raises(ConversionError, match="encoder.blocks.1.mlp.2.bias"):
        load_strict(out, sanitize(missing))


def test_from_pretrained_local_folder_and_missing_repo(tmp_path):
    from safetensors.numpy import save_file

    import mlx_impl.s3tokenizer as s3t

    ref, out = _v2_pair()
    save_file({f"tokenizer.{k}": _np(v) for k, v in ref.state_dict().items()}, str(tmp_path / "s3gen.safetensors"))
    loaded = s3t.from_pretrained(tmp_path, config=mlx_v2.ModelConfig(**SMALL))
    assert isinstance(loaded, s3t.S3Tokenizer)
    wav = speechlike(16000 * 2, seed=9)
    mel = mlx_utils.log_mel_spectrogram(wav)[None]
    a, _ = loaded.quantize(mel, mx.array([mel.shape[-1]]))
    b, _ = out.quantize(mel, mx.array([mel.shape[-1]]))
    assert np.array_equal(np.array(a), np.array(b))
    # the project's single-file MLX layout: model.safetensors, `s3_tokenizer.` prefix, MLX names
    from mlx.utils import tree_flatten

    mlx_dir = tmp_path / "mlx"
    mlx_dir.mkdir()
    mx.save_safetensors(str(mlx_dir / "model.safetensors"),
                        {f"s3_tokenizer.{k}": v for k, v in tree_flatten(out.parameters())})
    c, _ = s3t.from_pretrained(mlx_dir, config=mlx_v2.ModelConfig(**SMALL), chatterbox=False).quantize(
        mel, mx.array([mel.shape[-1]]))
    assert np.array_equal(np.array(c), np.array(b))
    with pytest.raises(FileNotFoundError, match="not-a-user/not-a-repo"):
        s3t.from_pretrained("not-a-user/not-a-repo")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no S3 tokenizer weights"):
        s3t.from_pretrained(empty)


def test_depthwise_shift_sum_equals_native_grouped_conv():
    """The CPU form of the FSMN conv (sum of shifted products) against MLX's native grouped conv
    (the GPU form) and against torch's depthwise Conv1d."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 40 + 30, 64)).astype(np.float32)
    w = rng.standard_normal((64, 31, 1)).astype(np.float32)
    shift = np.array(mlx_v2.depthwise_conv1d(mx.array(x), mx.array(w)))
    native = np.array(mx.conv1d(mx.array(x), mx.array(w), groups=64))
    ref = torch.nn.functional.conv1d(torch.from_numpy(x).transpose(1, 2), torch.from_numpy(w).permute(0, 2, 1),
                                     groups=64).transpose(1, 2).numpy()
    _snr(ref, shift, "fsmn depthwise (shift-sum)")
    _snr(ref, native, "fsmn depthwise (mx.conv1d groups)")


# ----------------------------------------------------------------------------- CPU kernels
@pytest.mark.xfail(not __import__("mlx_impl.backend.native", fromlist=["available"]).available(), strict=True,
                   reason="CPU kernels not built (scripts/build_cpu_kernels.sh)")
def test_cpu_kernel_path_is_used_and_matches_mlx_ops(monkeypatch):
    """On the CPU with the backend's kernels built, GELU (convs + MLPs), LayerNorm, the rotary
    rotation and the attention (its softmax the kernel's) go through the kernels; they agree with
    MLX's own ops (the fallback, and the GPU path) to float32 rounding, and the tokens are the same."""
    import mlx.nn as nn

    from mlx_impl.backend import native

    assert mx.default_device() == mx.cpu, "the tests run on the CPU"
    _, out = _v2_pair()
    mel, mel_len = _mels([400, 333, 61])
    mel, mel_len = mx.array(mel.numpy()), mx.array(mel_len.numpy())

    from mlx_impl.backend import layers, sdpa

    spy = SpyKernels(native)
    monkeypatch.setattr(mlx_v1, "native", spy)
    monkeypatch.setattr(layers, "kernels", spy.kernels)  # LayerNorm, Linear
    monkeypatch.setattr(sdpa, "kernels", spy.kernels)  # the attention and the rotary rotation (of q and k)
    h_k, _ = out.encoder(mel, mel_len)
    code_k = out.quantizer.encode(h_k)
    mx.eval(h_k, code_k)
    n = SMALL["n_audio_layer"]
    # Linear: per block q, k, v, out and the MLP's two; and the quantizer's project_down
    assert spy.calls == {"gelu": 2 + n, "layer_norm": 2 * n, "attention_split_scale": n, "rope": 2 * n,
                         "linear": 6 * n + 1}, spy.calls

    # float16 input is not the kernels' dtype: MLX's ops
    spy.calls.clear()
    half = mx.ones((1, 2, 3, 4), dtype=mx.float16)
    mx.eval(mlx_v1.gelu(half), sdpa.attention_split_scale(half, half, half, 0.5)[0])
    assert spy.calls == {}

    monkeypatch.setattr(mlx_v1, "_cpu_kernels_apply", lambda x: False)  # the fallback: MLX's ops
    monkeypatch.setattr(layers, "applies_to", lambda x: False)
    monkeypatch.setattr(sdpa, "applies_to", lambda x: False)
    h_f, _ = out.encoder(mel, mel_len)
    code_f = out.quantizer.encode(h_f)
    mx.eval(h_f, code_f)
    assert spy.calls == {}
    _exact(np.array(code_f), code_k, "v2 tokens, cpu kernels vs MLX ops")
    lengths = mlx_v1.conv_out_len(mlx_v1.conv_out_len(mel_len, 2), 2)  # the valid rows
    for b, t in enumerate(np.array(lengths).tolist()):
        # measured 125.1-125.4 dB (the kernels' erf and softmax are the closer ones to float64)
        _snr(np.array(h_f)[b, :t], np.array(h_k)[b, :t], f"v2 encoder, cpu kernels vs MLX ops, item {b}")
    monkeypatch.undo()

    # op by op, on the CPU path (kernels) against MLX's ops
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 300, 512)).astype(np.float32) * 3
    d = np.abs(np.array(mlx_v1.gelu(mx.array(x))) - np.array(nn.gelu(mx.array(x))))
    assert (d / np.maximum(np.abs(x), 1.0)).max() <= 5e-7  # measured 2.3e-7 (2 ulp of max(|x|, 1))
    ln = mlx_v1.LayerNorm(256)
    ln.weight = mx.array(rng.standard_normal(256).astype(np.float32))
    ln.bias = mx.array(rng.standard_normal(256).astype(np.float32))
    h = mx.array(rng.standard_normal((2, 300, 256)).astype(np.float32) * 2 + 0.5)
    d = np.abs(np.array(ln(h)) - np.array(super(mlx_v1.LayerNorm, ln).__call__(h)))
    assert d.max() <= 1e-5  # measured 3.8e-6 for outputs up to 10.2 (4 ulp)
    s = rng.standard_normal((2, 4, 300, 300)).astype(np.float32) * 4
    s[1, :, :, 250:] = -1e10  # the padding bias
    p = np.array(native.kernels().softmax(mx.array(s)))
    assert np.abs(p - np.array(mx.softmax(mx.array(s), axis=-1))).max() <= 5e-6  # measured 1.5e-6
    assert p[1, :, :, 250:].max() == 0  # masked keys: nothing
