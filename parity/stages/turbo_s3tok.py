"""Stage "turbo_s3tok": T3's prompt speech tokens of ChatterboxTurboTTS.prepare_conditionals, isolated.

  turbo.s3tok.prompt_log_mel  <- the reference turbo.audio.wav_16k[:240000] (ENC_COND_LEN: 15 s;
                                 S3Tokenizer.log_mel_spectrogram)
  turbo.s3tok.prompt_tokens   <- the reference turbo.s3tok.prompt_log_mel cut to 375 * 4 frames (forward's
                                 max_len = T3's speech_cond_prompt_len), through the S3TokenizerV2 network
"""
from __future__ import annotations

import numpy as np

from .s3tok import tokens_from_log_mel
from .turbo_common import f32, pipeline

STAGE = "turbo_s3tok"
PROVIDES = ["turbo.s3tok.prompt_log_mel", "turbo.s3tok.prompt_tokens"]


def run(fx, ckpt) -> dict:
    tts = pipeline(ckpt)
    tokenizer = tts.s3gen.tokenizer
    wav_16k = f32(fx, "turbo.audio.wav_16k")[: tts.ENC_COND_LEN]
    log_mel = tokenizer.log_mel_spectrogram(wav_16k[None])
    tokens = tokens_from_log_mel(tokenizer, fx.tensor("turbo.s3tok.prompt_log_mel"), max_len=tts.t3.hp.speech_cond_prompt_len)
    return {"turbo.s3tok.prompt_log_mel": np.array(log_mel), "turbo.s3tok.prompt_tokens": tokens}
