"""MLX port of `s3tokenizer/utils.py` (pip `s3tokenizer`): log-mel front end, padding masks, batching
and the long-audio segment merge.

The ONNX/torch conversion helpers of the original (`onnx2torch`, `_rename_weights`) have no MLX
counterpart: weights are converted by `mlx_impl/convert/s3tokenizer.py`.
"""
from __future__ import annotations

from typing import List, Sequence, Union

import mlx.core as mx
import numpy as np

from ..s3gen.utils.mel import frame

N_FFT = 400
HOP_LENGTH = 160
SAMPLE_RATE = 16000


# ----------------------------------------------------------------------------- mel filterbank
def _hz_to_mel_slaney(frequencies):
    """librosa.hz_to_mel(htk=False), same numpy operations in the same order."""
    frequencies = np.asanyarray(frequencies)
    f_min = 0.0
    f_sp = 200.0 / 3
    mels = (frequencies - f_min) / f_sp
    min_log_hz = 1000.0
    min_log_mel = (min_log_hz - f_min) / f_sp
    logstep = np.log(6.4) / 27.0
    if frequencies.ndim:
        log_t = frequencies >= min_log_hz
        mels[log_t] = min_log_mel + np.log(frequencies[log_t] / min_log_hz) / logstep
    elif frequencies >= min_log_hz:
        mels = min_log_mel + np.log(frequencies / min_log_hz) / logstep
    return mels


def _mel_to_hz_slaney(mels):
    """librosa.mel_to_hz(htk=False)."""
    mels = np.asanyarray(mels)
    f_min = 0.0
    f_sp = 200.0 / 3
    freqs = f_min + f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = (min_log_hz - f_min) / f_sp
    logstep = np.log(6.4) / 27.0
    if mels.ndim:
        log_t = mels >= min_log_mel
        freqs[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    elif mels >= min_log_mel:
        freqs = min_log_hz * np.exp(logstep * (mels - min_log_mel))
    return freqs


def mel_filters(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = 128, fmin: float = 0.0,
                fmax: float = None) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) with its defaults (Slaney mel scale, Slaney norm),
    float32, reproduced operation for operation so the result is bit-identical.

    The original `s3tokenizer` reads these from `assets/mel_filters.npz` (saved from librosa), the
    Chatterbox subclass calls librosa at init: both are this matrix, shape (n_mels, 1 + n_fft // 2)."""
    if fmax is None:
        fmax = float(sr) / 2
    weights = np.zeros((int(n_mels), int(1 + n_fft // 2)), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    min_mel = _hz_to_mel_slaney(fmin)
    max_mel = _hz_to_mel_slaney(fmax)
    mel_f = _mel_to_hz_slaney(np.linspace(min_mel, max_mel, n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


def hann_window(n: int = N_FFT) -> np.ndarray:
    """torch.hann_window(n) (periodic), float32, computed the way torch does (float32 angle
    k * (2 pi / n), cos, * -0.5 + 0.5). torch's own float32 cos is not correctly rounded, so a few
    entries (12 of 400) differ from it by one ulp."""
    angle = np.arange(n, dtype=np.float32) * np.float32(2.0 * np.pi / n)
    cos = np.cos(angle.astype(np.float64)).astype(np.float32)
    return cos * np.float32(-0.5) + np.float32(0.5)


# ----------------------------------------------------------------------------- STFT / log-mel
def _reflect_pad(x: mx.array, pad: int) -> mx.array:
    """torch reflect padding of the last axis (the edge sample is not repeated)."""
    n = x.shape[-1]
    if pad >= n:
        raise ValueError(f"reflect padding {pad} needs more than {pad} samples, got {n}")
    left = x[..., 1:pad + 1][..., ::-1]
    right = x[..., n - pad - 1:n - 1][..., ::-1]
    return mx.concatenate([left, x, right], axis=-1)


def stft_power(audio: mx.array, window: mx.array, n_fft: int = N_FFT, hop: int = HOP_LENGTH) -> mx.array:
    """|torch.stft(audio, n_fft, hop, window=window, center=True, pad_mode='reflect')|**2,
    shape (..., 1 + n_fft // 2, n_frames)."""
    frames = frame(_reflect_pad(audio, n_fft // 2), n_fft, hop) * window  # (..., n_frames, n_fft)
    spec = mx.fft.rfft(frames, n=n_fft, axis=-1)  # (..., n_frames, n_bins)
    power = mx.abs(spec) ** 2
    return mx.swapaxes(power, -1, -2)


def log_mel_from_filters(audio: mx.array, filters: mx.array, window: mx.array, padding: int = 0) -> mx.array:
    """The shared body of `log_mel_spectrogram` (original utils.py) and the Chatterbox subclass's
    method: STFT (n_fft 400, hop 160, hann), last frame dropped, mel, log10, 8-decade floor against
    the global maximum, (x + 4) / 4. Shape (..., n_mels, n_samples // 160)."""
    audio = mx.array(audio) if not isinstance(audio, mx.array) else audio
    audio = audio.astype(mx.float32)
    if padding > 0:
        pad_width = [(0, 0)] * (audio.ndim - 1) + [(0, padding)]
        audio = mx.pad(audio, pad_width)
    magnitudes = stft_power(audio, window)[..., :-1]
    mel_spec = filters @ magnitudes
    log_spec = mx.log10(mx.maximum(mel_spec, 1e-10))
    log_spec = mx.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


_FILTER_CACHE = {}


def _cached_filters(n_mels: int) -> mx.array:
    if n_mels not in _FILTER_CACHE:
        _FILTER_CACHE[n_mels] = mx.array(mel_filters(n_mels=n_mels))
    return _FILTER_CACHE[n_mels]


def log_mel_spectrogram(audio: Union[str, np.ndarray, mx.array], n_mels: int = 128, padding: int = 0) -> mx.array:
    """Original `s3tokenizer.utils.log_mel_spectrogram`: a path (loaded with `load_audio`) or 16 kHz
    samples -> (n_mels, n_frames) (leading axes kept)."""
    if n_mels not in (80, 128):
        raise ValueError(f"Unsupported n_mels: {n_mels}")
    if isinstance(audio, str):
        audio = load_audio(audio)
    return log_mel_from_filters(mx.array(audio), _cached_filters(n_mels), mx.array(hann_window()), padding)


def load_audio(file: str, sr: int = SAMPLE_RATE) -> mx.array:
    """Original `load_audio`: torchaudio.load (float32, channels first), torchaudio Resample to `sr`
    when needed, then the FIRST channel (no downmix)."""
    import soundfile as sf

    from ..audio import resample_torchaudio_sinc

    data, sample_rate = sf.read(file, dtype="float32", always_2d=True)
    audio = np.ascontiguousarray(data.T)  # (channels, n)
    if sample_rate != sr:
        audio = resample_torchaudio_sinc(audio, sample_rate, sr)
    return mx.array(audio[0])


# ----------------------------------------------------------------------------- masks / batching
def make_non_pad_mask(lengths: mx.array, max_len: int = 0) -> mx.array:
    """(B,) lengths -> (B, max_len) bool, True on the valid (non-padded) part."""
    lengths = mx.array(lengths)
    max_len = max_len if max_len > 0 else int(lengths.max().item())
    seq_range = mx.arange(0, max_len, dtype=mx.int64)
    return ~(seq_range[None, :] >= lengths[:, None].astype(mx.int64))


def mask_to_bias(mask: mx.array, dtype=mx.float32) -> mx.array:
    """bool mask -> additive attention bias: 0 where True, -1e10 where False."""
    if mask.dtype != mx.bool_:
        raise TypeError("mask_to_bias expects a bool mask")
    mask = mask.astype(dtype)
    return (1.0 - mask) * -1.0e10


def padding(data: Sequence[mx.array]):
    """List of (n_mels, T_i) -> (B, n_mels, T_max) zero-padded, lengths (B,) int32."""
    if not isinstance(data, (list, tuple)):
        raise TypeError("padding expects a list of (n_mels, T) arrays")
    lengths = [int(s.shape[1]) for s in data]
    t_max = max(lengths)
    feats = [mx.pad(mx.array(s), [(0, 0), (0, t_max - s.shape[1])]) for s in data]
    return mx.stack(feats), mx.array(lengths, dtype=mx.int32)


def merge_tokenized_segments(tokenized_segments: List[List[int]], overlap: int, token_rate: int) -> List[int]:
    """Merge the tokens of overlapping windows: keep the middle, drop half of the overlap on each
    inner side (overlap in seconds, token_rate tokens per second)."""
    merged_tokens = []
    overlap_tokens = (overlap // 2) * token_rate
    for i, tokens in enumerate(tokenized_segments):
        left = 0 if i == 0 else overlap_tokens
        right = -overlap_tokens if i != len(tokenized_segments) - 1 else len(tokens)
        merged_tokens.extend(tokens[left:right])
    return merged_tokens
