"""The VoiceEncoder's mel front end (chatterbox/models/voice_encoder/melspec.py) in MLX.

The original calls librosa: `librosa.stft(center=True, pad_mode="reflect")` (periodic Hann window)
and `librosa.filters.mel` (Slaney). The filterbank is computed in numpy, identical to librosa's.
"""
from __future__ import annotations

import mlx.core as mx
import numpy as np

from ..s3gen.utils.mel import frame, hann_window, librosa_mel_fn, power_spectrum, reflect_pad
from .config import VoiceEncConfig


def mel_basis(hp: VoiceEncConfig) -> np.ndarray:
    """(num_mels, 1 + n_fft // 2) float32, = librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)."""
    assert hp.fmax <= hp.sample_rate // 2
    return librosa_mel_fn(hp.sample_rate, hp.n_fft, hp.num_mels, hp.fmin, hp.fmax)


def preemphasis(wav: mx.array, hp: VoiceEncConfig) -> mx.array:
    """scipy.signal.lfilter([1, -p], [1], wav), clipped to [-1, 1]."""
    assert hp.preemphasis != 0
    wav = mx.concatenate([wav[:1], wav[1:] - hp.preemphasis * wav[:-1]])
    return mx.clip(wav, -1, 1)


def _stft_window(hp: VoiceEncConfig) -> np.ndarray:
    """Periodic Hann of win_size, zero-padded to n_fft at the centre (librosa.util.pad_center)."""
    w = hann_window(hp.win_size)
    left = (hp.n_fft - hp.win_size) // 2
    return np.pad(w, (left, hp.n_fft - hp.win_size - left))


def _stft_power(y: mx.array, hp: VoiceEncConfig, pad=True, power: float = 2.0) -> mx.array:
    """|librosa.stft(y, n_fft, hop, win, center=pad, pad_mode="reflect")| ** power, as (T, n_freq)."""
    if pad:
        y = reflect_pad(y, hp.n_fft // 2, hp.n_fft // 2)
    frames = frame(y, hp.n_fft, hp.hop_size) * mx.array(_stft_window(hp))
    spec = power_spectrum(frames, hp.n_fft)  # |X|^2
    if power == 2.0:
        return spec
    magnitude = mx.sqrt(spec)
    return magnitude if power == 1.0 else magnitude ** power


def melspectrogram(wav, hp: VoiceEncConfig = VoiceEncConfig(), pad=True) -> mx.array:
    """(n_samples,) waveform -> (num_mels, n_frames) mel (power 2, "amp"), like the original."""
    wav = mx.array(np.asarray(wav, dtype=np.float32)) if not isinstance(wav, mx.array) else wav.astype(mx.float32)
    if hp.preemphasis > 0:
        wav = preemphasis(wav, hp)

    spec = _stft_power(wav, hp, pad=pad, power=hp.mel_power)  # (T, n_freq)
    mel = (spec @ mx.array(mel_basis(hp)).T).T  # (M, T)
    if hp.mel_type == "db":
        mel = _amp_to_db(mel, hp)
    if hp.normalized_mels:
        mel = _normalize(mel, hp)

    assert not pad or mel.shape[1] == 1 + wav.shape[0] // hp.hop_size  # Sanity check
    return mel


def _amp_to_db(x: mx.array, hp: VoiceEncConfig) -> mx.array:
    return 20 * mx.log10(mx.maximum(hp.stft_magnitude_min, x))


def _db_to_amp(x: mx.array) -> mx.array:
    return mx.power(10.0, x * 0.05)


def _normalize(s: mx.array, hp: VoiceEncConfig, headroom_db=15) -> mx.array:
    min_level_db = 20 * np.log10(hp.stft_magnitude_min)
    return (s - min_level_db) / (-min_level_db + headroom_db)
