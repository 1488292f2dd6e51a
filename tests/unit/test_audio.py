"""mlx_impl.audio against the ORIGINAL loaders/resamplers: librosa.load / librosa.resample (soxr_hq,
bit-exact expected) and torchaudio.transforms.Resample (same kernel bit for bit, output >= 100 dB)."""
from __future__ import annotations

import numpy as np
import pytest

from mlx_impl import audio
from parity import registry
from parity.metrics import compare

librosa = pytest.importorskip("librosa")
sf = pytest.importorskip("soundfile")

SNR_MIN = registry.load().default("float").snr_db  # the registry's float goal
RATE_PAIRS = [(24000, 16000), (16000, 24000), (22050, 24000), (44100, 16000), (48000, 24000), (8000, 16000)]


def _signal(n, sr, seed=0, channels=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 150 + 60 * np.sin(2 * np.pi * 0.9 * t)
    x = sum(np.sin(2 * np.pi * np.cumsum(f0 * k) / sr) / k for k in range(1, 30))
    x = 0.1 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 2.3 * t)) + 0.01 * rng.standard_normal(n)
    x[n // 2: n // 2 + sr // 20] += 0.5  # a step: sharp edges exercise the filters' tails
    if channels:
        x = np.stack([x * (1 - 0.3 * c) + 0.05 * rng.standard_normal(n) for c in range(channels)], axis=1)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    out = {}
    out["mono_22k_pcm16"] = d / "mono_22k.wav"
    sf.write(out["mono_22k_pcm16"], _signal(22050, 22050), 22050, subtype="PCM_16")
    out["stereo_44k_pcm16"] = d / "stereo_44k.wav"
    sf.write(out["stereo_44k_pcm16"], _signal(30000, 44100, 1, channels=2), 44100, subtype="PCM_16")
    out["three_ch_48k_float"] = d / "three_48k.wav"
    sf.write(out["three_ch_48k_float"], _signal(20000, 48000, 2, channels=3), 48000, subtype="FLOAT")
    out["mono_16k_flac"] = d / "mono_16k.flac"
    sf.write(out["mono_16k_flac"], _signal(16000, 16000, 3), 16000, subtype="PCM_24")
    return out


@pytest.mark.parametrize("name", ["mono_22k_pcm16", "stereo_44k_pcm16", "three_ch_48k_float", "mono_16k_flac"])
@pytest.mark.parametrize("sr", [24000, 16000, None])
def test_load_like_librosa_is_bit_exact(clips, name, sr):
    ref, ref_sr = librosa.load(clips[name], sr=sr)
    out, out_sr = audio.load_like_librosa(clips[name], sr=sr)
    assert out_sr == ref_sr and out.dtype == ref.dtype == np.float32
    assert out.shape == ref.shape
    assert np.array_equal(out, ref), f"max abs {np.abs(out - ref).max()}"


def test_load_without_downmix_keeps_channels(clips):
    ref, _ = librosa.load(clips["stereo_44k_pcm16"], sr=24000, mono=False)
    out, _ = audio.load_like_librosa(clips["stereo_44k_pcm16"], sr=24000, mono=False)
    assert out.shape == ref.shape and out.shape[0] == 2
    assert np.array_equal(out, ref)


@pytest.mark.parametrize("sr_in,sr_out", RATE_PAIRS)
def test_soxr_hq_matches_librosa_resample(sr_in, sr_out):
    x = _signal(sr_in // 2 + 17, sr_in)
    ref = librosa.resample(x, orig_sr=sr_in, target_sr=sr_out)
    out = audio.resample(x, sr_in, sr_out, "soxr_hq")
    assert out.shape == ref.shape and np.array_equal(out, ref)
    x2 = np.stack([x, -0.5 * x])
    assert np.array_equal(audio.resample(x2, sr_in, sr_out, "soxr_hq"), librosa.resample(x2, orig_sr=sr_in, target_sr=sr_out))


@pytest.mark.parametrize("sr_in,sr_out", RATE_PAIRS)
def test_torchaudio_sinc_kernel_and_output(sr_in, sr_out):
    torch = pytest.importorskip("torch")
    import torchaudio

    R = torchaudio.transforms.Resample(sr_in, sr_out)
    kernel, width = audio.sinc_resample_kernel(sr_in, sr_out)
    assert width == R.width
    assert np.array_equal(kernel, R.kernel.numpy()[:, 0, :]), "kernel differs from torchaudio's"
    for n in (sr_in // 3 + 1, sr_in // 3 + 2):  # lengths that are not multiples of the reduced rate
        x = np.stack([_signal(n, sr_in, 4), _signal(n, sr_in, 5)])
        ref = R(torch.from_numpy(x)).numpy()
        out = audio.resample(x, sr_in, sr_out, "torchaudio_sinc")
        m = compare(ref, out)
        print(f"torchaudio_sinc {sr_in}->{sr_out} n={n}: {m.headline('float')}")
        assert out.shape == ref.shape
        assert m.snr_db >= SNR_MIN


def test_torchaudio_sinc_shapes_like_torchaudio():
    torch = pytest.importorskip("torch")
    import torchaudio

    R = torchaudio.transforms.Resample(24000, 16000)
    x = _signal(24000, 24000, 6)
    for arr in (x, x[None], np.stack([x, x])[None]):
        ref = R(torch.from_numpy(np.ascontiguousarray(arr))).numpy()
        out = audio.resample_torchaudio_sinc(arr, 24000, 16000)
        assert out.shape == ref.shape
    # embed_ref's entry point: (L,) 24 kHz -> (1, L') 16 kHz
    assert audio.embed_ref_resample_16k(x).shape == (1, 16000)


def test_poly_is_scipy_and_not_the_original():
    from scipy.signal import resample_poly

    x = _signal(24000, 24000, 7)
    out = audio.resample(x, 24000, 16000, "poly")
    assert np.array_equal(out, resample_poly(x, 2, 3).astype(np.float32))
    # the reason it is no default: far from both resamplers of the original
    soxr_ref = librosa.resample(x, orig_sr=24000, target_sr=16000)
    assert compare(soxr_ref, out).snr_db < 60


def test_defaults_and_errors():
    assert audio.DEFAULT_METHOD == {
        "prepare_conditionals.load_24k": "soxr_hq",
        "prepare_conditionals.resample_16k": "soxr_hq",
        "embed_ref.resample_16k": "torchaudio_sinc",
    }
    x = _signal(1000, 16000)
    assert audio.resample(x, 16000, 16000) is x
    with pytest.raises(ValueError, match="unknown resampling method"):
        audio.resample(x, 24000, 16000, "kaiser_best")
    bad = x.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        audio.resample(bad, 24000, 16000)


def test_unreadable_file_names_it(tmp_path):
    p = tmp_path / "not_audio.wav"
    p.write_bytes(b"this is not a wav file")
    with pytest.raises(RuntimeError, match="not_audio.wav"):
        audio.load_like_librosa(p, sr=24000)


def test_prepare_conditionals_audio_matches_original(clips):
    ref_24k, _ = librosa.load(clips["stereo_44k_pcm16"], sr=24000)
    ref_16k = librosa.resample(ref_24k, orig_sr=24000, target_sr=16000)
    w24, w16 = audio.prepare_conditionals_audio(clips["stereo_44k_pcm16"])
    assert np.array_equal(w24, ref_24k) and np.array_equal(w16, ref_16k)
