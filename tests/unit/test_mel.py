"""S3Gen's 80-bin mel (mlx_impl/s3gen/utils/mel.py) and the shared librosa mel filterbank, against
the ORIGINAL (chatterbox.models.s3gen.utils.mel, librosa.filters.mel), fp32 on the CPU."""
from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch

from mlx_impl.s3gen.utils.mel import (hann_window, librosa_mel_fn, mel_spectrogram, reflect_pad,
                                      torch_hann_window)
from parity import registry
from parity.metrics import compare
from signals import speech_like as _speech_like

SNR_DB = registry.load().default("float").snr_db  # the registry's float goal
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def speech_like(seconds: float, sr: int, seed: int = 0):
    return _speech_like(seconds, sr, seed, f0=(120, 40, 0.7), env_rate=0.9, lead=0.3, lead_gain=0.01)


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [
    (16000, 400, 40, 0, 8000),    # VoiceEncoder
    (24000, 1920, 80, 0, 8000),   # S3Gen
    (16000, 400, 128, 0, None),   # S3 tokenizer's size
    (22050, 1024, 80, 30, 7600),
])
def test_librosa_mel_fn_is_bit_identical(sr, n_fft, n_mels, fmin, fmax):
    import librosa

    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    out = librosa_mel_fn(sr, n_fft, n_mels, fmin, fmax)
    assert out.dtype == ref.dtype == np.float32
    assert out.shape == ref.shape
    assert np.array_equal(out, ref), f"max diff {np.abs(out - ref).max()}"


@pytest.mark.parametrize("n,periodic", [(1920, True), (400, False), (400, True)])
def test_windows(n, periodic):
    import scipy.signal

    ref_torch = torch.hann_window(n, periodic=periodic).numpy()
    # torch's float32 cos is not correctly rounded: a few samples differ by half an ulp of 1
    assert np.abs(torch_hann_window(n, periodic) - ref_torch).max() <= 6e-8
    ref_scipy = scipy.signal.get_window("hann", n, fftbins=periodic).astype(np.float32)
    assert np.abs(hann_window(n, periodic) - ref_scipy).max() <= 6e-8


def test_reflect_pad_matches_numpy():
    x = np.arange(10, dtype=np.float32).reshape(1, 10) ** 2
    out = np.array(reflect_pad(mx.array(x), 4, 3))
    assert np.array_equal(out, np.pad(x, ((0, 0), (4, 3)), mode="reflect"))
    with pytest.raises(ValueError):
        reflect_pad(mx.array(x), 10, 0)


@pytest.mark.parametrize("seconds", [1.5, 2.37])
def test_s3gen_mel_spectrogram(seconds):
    from chatterbox.models.s3gen.utils.mel import mel_spectrogram as ref_mel

    y = speech_like(seconds, 24000, seed=int(seconds * 10))
    batch = np.stack([y, 0.5 * y[::-1]])
    ref = ref_mel(torch.from_numpy(batch)).numpy()
    out = np.array(mel_spectrogram(batch))
    m = compare(ref, out)
    print(f"S3Gen mel {ref.shape}: {m.headline('float')}")
    assert out.shape == ref.shape
    assert m.snr_db >= SNR_DB

    # 1-D input: a batch of one, as the original
    one = np.array(mel_spectrogram(y))
    assert one.shape == (1,) + ref.shape[1:]
    assert compare(ref[:1], one).snr_db >= SNR_DB


def test_s3gen_mel_frame_count_no_double_padding():
    """(n_fft - hop) / 2 reflect padding on each side, then no centre padding: n // hop frames for
    a multiple of the hop (padding twice would add frames and shift them)."""
    from chatterbox.models.s3gen.utils.mel import mel_spectrogram as ref_mel

    y = speech_like(1.0, 24000, seed=3)  # 24000 samples = 50 hops
    out = np.array(mel_spectrogram(y))
    assert out.shape == (1, 80, 50) == tuple(ref_mel(torch.from_numpy(y)).shape)


@pytest.mark.parametrize("make", [
    lambda: mx.random.normal((5000,), key=mx.random.key(0)),
    lambda: mx.random.normal((2, 5000), key=mx.random.key(1)),
    lambda: mx.random.normal((5000, 2), key=mx.random.key(2)).T,  # not row-contiguous
    lambda: mx.random.normal((2, 6000), key=mx.random.key(3))[:, 7:5000],  # a strided slice
], ids=["1d", "batched", "transposed", "sliced"])
def test_frame_view_equals_the_gather_by_index(make):
    """frame() is a strided view (mx.as_strided, which needs a row-contiguous input); its values are
    the gather by index it replaced, for any layout of the input."""
    from mlx_impl.s3gen.utils.mel import frame

    x = make()
    n_frames = 1 + (x.shape[-1] - 400) // 160
    idx = np.arange(n_frames)[:, None] * 160 + np.arange(400)[None, :]
    gathered = mx.take(x, mx.array(idx.astype(np.int32)), axis=-1)
    framed = frame(x, 400, 160)
    assert framed.shape == (*x.shape[:-1], n_frames, 400)
    assert mx.array_equal(framed, gathered).item()
