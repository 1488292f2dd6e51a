"""Stage "turbo_audio": the reference clip as ChatterboxTurboTTS.prepare_conditionals prepares it, isolated.

  turbo.audio.wav_24k_loaded  <- the case's audio file: librosa.load(sr=24000) port (soundfile, channel mean, soxr_hq)
  turbo.audio.wav_24k         <- the reference turbo.audio.wav_24k_loaded: norm_loudness to -27 LUFS (pyloudnorm,
                                 the original's library and call); unchanged when the case sets norm_loudness false
  turbo.audio.wav_16k         <- the reference turbo.audio.wav_24k: librosa.resample(24000 -> 16000) port (soxr_hq)
"""
from __future__ import annotations

import numpy as np

STAGE = "turbo_audio"
PROVIDES = ["turbo.audio.wav_24k_loaded", "turbo.audio.wav_24k", "turbo.audio.wav_16k"]

S3GEN_SR, S3_SR = 24000, 16000


def run(fx, ckpt) -> dict:
    from mlx_impl.audio import DEFAULT_METHOD, load_like_librosa, resample
    from mlx_impl.tts_turbo import norm_loudness

    loaded, _ = load_like_librosa(fx.audio_path(), sr=S3GEN_SR, method=DEFAULT_METHOD["prepare_conditionals.load_24k"])
    ref_loaded = fx.tensor("turbo.audio.wav_24k_loaded")
    wav_24k = norm_loudness(ref_loaded, S3GEN_SR) if fx.params["norm_loudness"] else ref_loaded
    wav_16k = resample(fx.tensor("turbo.audio.wav_24k"), S3GEN_SR, S3_SR, DEFAULT_METHOD["prepare_conditionals.resample_16k"])
    return {"turbo.audio.wav_24k_loaded": np.asarray(loaded), "turbo.audio.wav_24k": np.asarray(wav_24k),
            "turbo.audio.wav_16k": np.asarray(wav_16k)}
