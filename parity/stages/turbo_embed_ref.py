"""Stage "turbo_embed_ref": S3Token2Mel.embed_ref on the first 10 s of the loudness-normalised clip (S3Gen's
reference dict), isolated, on the Turbo folder's s3gen_meanflow.safetensors. As the English embed_ref
stage (embed_ref_tokens.py, embed_ref_speaker.py):
  turbo.embed_ref.wav_16k       <- the reference turbo.audio.wav_24k[:240000]: torchaudio Resample(24000, 16000) port
  turbo.embed_ref.log_mel       <- the reference turbo.embed_ref.wav_16k
  turbo.embed_ref.prompt_token  <- the reference turbo.embed_ref.log_mel through the network, cut to n_mel // 2
                                   where the mel is not twice as long as the tokens (embed_ref's rule)
  turbo.embed_ref.fbank         <- the reference turbo.embed_ref.wav_16k (Kaldi fbank minus its time mean)
  turbo.embed_ref.prompt_feat   <- the reference turbo.audio.wav_24k[:240000] (S3Gen's 80-bin mel, (1, T, 80))
  turbo.embed_ref.xvector       <- the reference turbo.embed_ref.fbank (CAMPPlus)
"""
from __future__ import annotations

import numpy as np

from .s3tok import tokens_from_log_mel
from .turbo_common import f32, pipeline

STAGE = "turbo_embed_ref"
PROVIDES = ["turbo.embed_ref.wav_16k", "turbo.embed_ref.log_mel", "turbo.embed_ref.prompt_token",
            "turbo.embed_ref.fbank", "turbo.embed_ref.prompt_feat", "turbo.embed_ref.xvector"]


def run(fx, ckpt) -> dict:
    import mlx.core as mx

    from mlx_impl.audio import embed_ref_resample_16k
    from mlx_impl.s3gen.utils.mel import mel_spectrogram
    from mlx_impl.s3gen.xvector import extract_feature

    tts = pipeline(ckpt)
    tokenizer, campplus = tts.s3gen.tokenizer, tts.s3gen.speaker_encoder
    wav_24k = f32(fx, "turbo.audio.wav_24k")[: tts.DEC_COND_LEN]
    out = {"turbo.embed_ref.wav_16k": embed_ref_resample_16k(wav_24k),
           "turbo.embed_ref.log_mel": np.array(tokenizer.log_mel_spectrogram(f32(fx, "turbo.embed_ref.wav_16k")))}
    tokens = tokens_from_log_mel(tokenizer, fx.tensor("turbo.embed_ref.log_mel"))
    n_mel = fx.tensor("turbo.embed_ref.prompt_feat").shape[1]
    out["turbo.embed_ref.prompt_token"] = tokens[:, : n_mel // 2] if n_mel != 2 * tokens.shape[1] else tokens
    feats, _, _ = extract_feature(mx.array(f32(fx, "turbo.embed_ref.wav_16k")))
    out["turbo.embed_ref.fbank"] = np.array(feats)
    out["turbo.embed_ref.prompt_feat"] = np.array(mel_spectrogram(wav_24k).transpose(0, 2, 1))
    out["turbo.embed_ref.xvector"] = np.array(campplus(mx.array(f32(fx, "turbo.embed_ref.fbank"))))
    return out
