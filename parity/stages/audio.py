"""Stage "audio": the reference clip as ChatterboxTTS.prepare_conditionals loads it, isolated.

  audio.wav_24k  <- the case's audio file: librosa.load(sr=24000) port (soundfile, channel mean, soxr_hq)
  audio.wav_16k  <- the reference audio.wav_24k: librosa.resample(24000 -> 16000) port (soxr_hq)
"""
from __future__ import annotations

import numpy as np

STAGE = "audio"
PROVIDES = ["audio.wav_24k", "audio.wav_16k"]

S3GEN_SR = 24000
S3_SR = 16000


def run(fx, ckpt) -> dict:
    from mlx_impl.audio import DEFAULT_METHOD, load_like_librosa, resample

    wav_24k, _ = load_like_librosa(fx.audio_path(), sr=S3GEN_SR, method=DEFAULT_METHOD["prepare_conditionals.load_24k"])
    ref_24k = fx.tensor("audio.wav_24k").astype(np.float32)
    wav_16k = resample(ref_24k, S3GEN_SR, S3_SR, DEFAULT_METHOD["prepare_conditionals.resample_16k"])
    return {"audio.wav_24k": np.asarray(wav_24k, np.float32), "audio.wav_16k": np.asarray(wav_16k, np.float32)}
