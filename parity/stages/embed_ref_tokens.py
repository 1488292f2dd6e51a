"""Stage "embed_ref" (tokenizer part): S3Token2Mel.embed_ref's 16 kHz copy and reference tokens,
isolated. (The mel / x-vector part of the stage is in embed_ref_speaker.py.)

  embed_ref.wav_16k       <- the reference audio.wav_24k[:240000]: torchaudio Resample(24000, 16000) port
  embed_ref.log_mel       <- the reference embed_ref.wav_16k (S3Tokenizer.log_mel_spectrogram)
  embed_ref.prompt_token  <- the reference embed_ref.log_mel through the network, then cut to
                             n_mel_frames // 2 when the 24 kHz mel is not twice as long as the tokens
                             (embed_ref's own rule; n_mel_frames of the reference embed_ref.prompt_feat)
"""
from __future__ import annotations

import numpy as np

from .s3tok import load_tokenizer, tokens_from_log_mel

STAGE = "embed_ref"
PROVIDES = ["embed_ref.wav_16k", "embed_ref.log_mel", "embed_ref.prompt_token"]

DEC_COND_LEN = 10 * 24000  # ChatterboxTTS.DEC_COND_LEN


def s3gen_mel_frames(n_samples_24k: int, n_fft: int = 1920, hop: int = 480) -> int:
    """Frames of s3gen.utils.mel.mel_spectrogram: reflect pad (n_fft - hop) / 2 each side, center=False."""
    pad = int((n_fft - hop) / 2)
    return (n_samples_24k + 2 * pad - n_fft) // hop + 1


def run(fx, ckpt) -> dict:
    from mlx_impl.audio import embed_ref_resample_16k

    model = load_tokenizer(ckpt)
    wav_24k = fx.tensor("audio.wav_24k").astype(np.float32)[:DEC_COND_LEN]
    wav_16k = embed_ref_resample_16k(wav_24k)  # (1, n)

    ref_wav_16k = fx.tensor("embed_ref.wav_16k").astype(np.float32)
    log_mel = np.array(model.log_mel_spectrogram(ref_wav_16k))  # (1, 128, T)

    tokens = tokens_from_log_mel(model, fx.tensor("embed_ref.log_mel"))
    if fx.has("embed_ref.prompt_feat"):
        n_mel = fx.tensor("embed_ref.prompt_feat").shape[1]
    else:
        n_mel = s3gen_mel_frames(wav_24k.shape[-1])
    if n_mel != 2 * tokens.shape[1]:
        tokens = tokens[:, :n_mel // 2]
    return {"embed_ref.wav_16k": wav_16k, "embed_ref.log_mel": log_mel, "embed_ref.prompt_token": tokens}
