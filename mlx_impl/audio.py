"""Audio front end: load a reference clip and resample it exactly as the original Chatterbox does.

What maps to what in the original (chatterbox-tts 0.1.7):

  ChatterboxTTS.prepare_conditionals
      librosa.load(wav_fpath, sr=24000)           -> load_like_librosa(path, 24000)          ("soxr_hq")
      librosa.resample(wav_24k, 24000 -> 16000)   -> resample(wav, 24000, 16000, "soxr_hq")
  S3Token2Mel.embed_ref (s3gen.py, get_resampler)
      torchaudio.transforms.Resample(24000, 16000) -> resample(wav, 24000, 16000, "torchaudio_sinc")
  an older MLX port
      scipy.signal.resample_poly                   -> resample(..., "poly")  (NOT what the original does)

Resampling is part of the model's behaviour: the speaker x-vector of S3Gen is sensitive to the
resampler (see docs / PARITY_NOTES). `export_scripts/measure_resamplers.py` measures each option
against the original at each point; the defaults below are the ones that match.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional, Tuple

import numpy as np

RESAMPLE_METHODS = ("soxr_hq", "torchaudio_sinc", "poly")

# The method that reproduces the original at each point (measured by export_scripts/measure_resamplers.py).
DEFAULT_METHOD = {
    "prepare_conditionals.load_24k": "soxr_hq",
    "prepare_conditionals.resample_16k": "soxr_hq",
    "embed_ref.resample_16k": "torchaudio_sinc",
}


# ----------------------------------------------------------------------------- loading (librosa.load)
def read_audio(path) -> Tuple[np.ndarray, int]:
    """Samples of any file libsndfile reads (wav, flac, ogg, mp3, ...) as float32, librosa's layout:
    (n,) for mono, (channels, n) otherwise; and the native sample rate."""
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            sr_native = f.samplerate
            y = f.read(frames=-1, dtype=np.float32, always_2d=False).T
    except sf.SoundFileRuntimeError as e:
        # librosa would fall back to audioread (ffmpeg); we do not, so that loading stays exact
        raise RuntimeError(f"cannot read audio file {path} with soundfile/libsndfile: {e}") from None
    return y, sr_native


def _check_audio(y: np.ndarray) -> None:
    """librosa.util.valid_audio."""
    if not np.issubdtype(y.dtype, np.floating):
        raise ValueError("Audio data must be floating-point")
    if y.ndim == 0:
        raise ValueError(f"Audio data must be at least one-dimensional, given y.shape={y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("Audio buffer is not finite everywhere")


def to_mono_like_librosa(y: np.ndarray) -> np.ndarray:
    """librosa.to_mono: the mean over the channel axes (float32 in, float32 out)."""
    _check_audio(y)
    if y.ndim > 1:
        y = np.mean(y, axis=tuple(range(y.ndim - 1)))
    return y


def load_like_librosa(path, sr: Optional[int] = 22050, mono: bool = True,
                      method: str = "soxr_hq") -> Tuple[np.ndarray, int]:
    """librosa.load(path, sr=sr, mono=mono) (offset 0, no duration, float32): read with soundfile,
    average the channels, resample with `method` (librosa's default res_type is soxr_hq)."""
    y, sr_native = read_audio(path)
    if mono:
        y = to_mono_like_librosa(y)
    if sr is not None:
        y = resample(y, sr_native, sr, method)
    else:
        sr = sr_native
    return y, sr


# ----------------------------------------------------------------------------- resampling
def resample(wav: np.ndarray, sr_in: int, sr_out: int, method: str = "soxr_hq") -> np.ndarray:
    """Resample the last axis of `wav` from sr_in to sr_out.

    soxr_hq          librosa.resample(res_type="soxr_hq"): python-soxr HQ, the length fixed to
                     ceil(n * sr_out / sr_in). What librosa.load / librosa.resample use.
    torchaudio_sinc  torchaudio.transforms.Resample(sr_in, sr_out) with its defaults (windowed sinc,
                     hann, 6 zero crossings, rolloff 0.99); length ceil(n * sr_out / sr_in).
    poly             scipy.signal.resample_poly(up, down) (what an older MLX port used), float32.
    """
    if method == "soxr_hq":
        return resample_like_librosa(wav, sr_in, sr_out)
    if method == "torchaudio_sinc":
        return resample_torchaudio_sinc(wav, sr_in, sr_out)
    if method == "poly":
        return resample_poly(wav, sr_in, sr_out)
    raise ValueError(f"unknown resampling method '{method}', expected one of {RESAMPLE_METHODS}")


def resample_like_librosa(y: np.ndarray, orig_sr: int, target_sr: int, res_type: str = "soxr_hq") -> np.ndarray:
    """librosa.resample(y, orig_sr=, target_sr=, res_type="soxr_hq", fix=True, scale=False)."""
    import soxr

    _check_audio(y)
    if orig_sr == target_sr:
        return y
    if not res_type.startswith("soxr"):
        raise ValueError(f"resample_like_librosa supports the soxr types only, got '{res_type}'")
    ratio = float(target_sr) / orig_sr
    n_samples = int(np.ceil(y.shape[-1] * ratio))
    y_hat = np.apply_along_axis(soxr.resample, axis=-1, arr=y, in_rate=orig_sr, out_rate=target_sr,
                                quality=res_type)
    y_hat = _fix_length(y_hat, n_samples)
    return np.asarray(y_hat, dtype=y.dtype)


def _fix_length(y: np.ndarray, size: int) -> np.ndarray:
    """librosa.util.fix_length on the last axis (zero pad or trim)."""
    n = y.shape[-1]
    if n > size:
        return y[..., :size]
    if n < size:
        return np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, size - n)], mode="constant")
    return y


@lru_cache(maxsize=32)
def sinc_resample_kernel(orig_freq: int, new_freq: int, lowpass_filter_width: int = 6, rolloff: float = 0.99,
                         resampling_method: str = "sinc_interp_hann", beta: Optional[float] = None):
    """torchaudio.functional._get_sinc_resample_kernel (dtype=None path): the kernels
    (new, 2 * width + orig) float32 for the GCD-reduced rates, and `width`. Same float64 arithmetic,
    including the one float32 term of the original (the output phases j / new)."""
    if int(orig_freq) != orig_freq or int(new_freq) != new_freq:
        raise ValueError("Frequencies must be of integer type")
    if resampling_method not in ("sinc_interp_hann", "sinc_interp_kaiser"):
        raise ValueError(f"Invalid resampling method: {resampling_method}")
    if lowpass_filter_width <= 0:
        raise ValueError("Low pass filter width should be positive.")
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig = int(orig_freq) // gcd
    new = int(new_freq) // gcd
    base_freq = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    idx = np.arange(-width, width + orig, dtype=np.float64)[None, :] / orig
    # torch.arange(0, -new, -1) / new is an int64 tensor divided in the default dtype (float32)
    phase = (np.arange(0, -new, -1).astype(np.float32) / np.float32(new)).astype(np.float64)
    t = phase[:, None] + idx
    t = t * base_freq
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width)
    if resampling_method == "sinc_interp_hann":
        window = np.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    else:
        beta = 14.769656459379492 if beta is None else beta
        window = np.i0(beta * np.sqrt(1 - (t / lowpass_filter_width) ** 2)) / np.i0(float(beta))
    t = t * math.pi
    scale = base_freq / orig
    with np.errstate(invalid="ignore", divide="ignore"):
        kernels = np.where(t == 0, 1.0, np.sin(t) / t)
    kernels = kernels * (window * scale)
    return kernels.astype(np.float32), width


def resample_torchaudio_sinc(waveform: np.ndarray, orig_freq: int, new_freq: int, lowpass_filter_width: int = 6,
                             rolloff: float = 0.99, resampling_method: str = "sinc_interp_hann",
                             beta: Optional[float] = None) -> np.ndarray:
    """torchaudio.transforms.Resample(orig_freq, new_freq)(waveform) on the last axis, float32.

    torchaudio pads (width, width + orig), runs a strided conv1d with the kernels above and keeps
    ceil(new * n / orig) samples. Here: the same frames gathered and multiplied by the kernels, summed
    in float64 and rounded once (torch sums in float32: differences are float32 rounding)."""
    waveform = np.asarray(waveform)
    if not np.issubdtype(waveform.dtype, np.floating):
        raise TypeError(f"Expected floating point type for waveform, but received {waveform.dtype}.")
    if orig_freq == new_freq:
        return waveform
    kernel, width = sinc_resample_kernel(int(orig_freq), int(new_freq), lowpass_filter_width, rolloff,
                                         resampling_method, beta)
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig = int(orig_freq) // gcd
    new = int(new_freq) // gcd
    shape = waveform.shape
    x = waveform.reshape(-1, shape[-1]).astype(np.float32)
    length = x.shape[-1]
    x = np.pad(x, [(0, 0), (width, width + orig)])
    k = kernel.shape[-1]
    n_frames = (x.shape[-1] - k) // orig + 1
    frames = np.lib.stride_tricks.sliding_window_view(x, k, axis=-1)[:, ::orig][:, :n_frames]  # (N, F, K)
    out = np.einsum("nfk,pk->nfp", frames.astype(np.float64), kernel.astype(np.float64))
    out = out.reshape(x.shape[0], -1).astype(np.float32)
    target_length = int(math.ceil(new * length / orig))
    out = out[..., :target_length]
    return out.reshape(shape[:-1] + out.shape[-1:])


def resample_poly(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """scipy.signal.resample_poly(wav, sr_out // g, sr_in // g) (Kaiser window, scipy's defaults), float32."""
    from scipy.signal import resample_poly as _resample_poly

    if sr_in == sr_out:
        return wav
    g = math.gcd(int(sr_in), int(sr_out))
    return _resample_poly(wav, int(sr_out) // g, int(sr_in) // g, axis=-1).astype(np.float32)


# ----------------------------------------------------------------------------- Chatterbox entry points
def prepare_conditionals_audio(path, s3gen_sr: int = 24000, s3_sr: int = 16000) -> Tuple[np.ndarray, np.ndarray]:
    """The two waveforms ChatterboxTTS.prepare_conditionals makes from a reference file: the 24 kHz
    load and its 16 kHz copy (before any truncation)."""
    wav_24k, _ = load_like_librosa(path, sr=s3gen_sr, method=DEFAULT_METHOD["prepare_conditionals.load_24k"])
    wav_16k = resample(wav_24k, s3gen_sr, s3_sr, DEFAULT_METHOD["prepare_conditionals.resample_16k"])
    return wav_24k, wav_16k


def embed_ref_resample_16k(wav_24k: np.ndarray, s3gen_sr: int = 24000, s3_sr: int = 16000) -> np.ndarray:
    """S3Token2Mel.embed_ref's 16 kHz copy: torchaudio Resample of the (1, L) 24 kHz reference."""
    wav = np.asarray(wav_24k, dtype=np.float32)
    if wav.ndim == 1:
        wav = wav[None]
    return resample(wav, s3gen_sr, s3_sr, DEFAULT_METHOD["embed_ref.resample_16k"])
