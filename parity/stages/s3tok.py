"""Stage "s3tok": the T3 prompt speech tokens of prepare_conditionals, isolated.

  s3tok.prompt_log_mel  <- the reference audio.wav_16k[:96000] (S3Tokenizer.log_mel_spectrogram)
  s3tok.prompt_tokens   <- the reference s3tok.prompt_log_mel, cut to 150 * 4 frames (forward's
                           max_len=150), through the S3TokenizerV2 network
  s3tok.full_tokens     <- the reference audio.wav_16k, whole clip: S3Tokenizer.forward without max_len
                           (log-mel computed here: the reference records no log-mel of the whole clip;
                           > 30 s goes through the long-audio path)
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

STAGE = "s3tok"
PROVIDES = ["s3tok.prompt_log_mel", "s3tok.prompt_tokens", "s3tok.full_tokens"]

ENC_COND_LEN = 6 * 16000  # ChatterboxTTS.ENC_COND_LEN
PROMPT_LEN = 150  # T3Config.speech_cond_prompt_len: s3_tokzr.forward(..., max_len=plen)
PREFIX = "tokenizer."  # the tokenizer's tensors inside s3gen.safetensors


@lru_cache(maxsize=2)
def _load_tokenizer(path: str):
    from mlx_impl.convert.common import load_strict
    from mlx_impl.convert.s3tokenizer import sanitize, strip_prefix
    from mlx_impl.s3tokenizer.s3tokenizer import S3Tokenizer
    from parity.checkpoint_dir import CheckpointDir

    state = CheckpointDir.open(path).state("s3gen")
    model = S3Tokenizer("speech_tokenizer_v2_25hz")
    load_strict(model, sanitize(strip_prefix(state, PREFIX)), what=f"s3tokenizer ({path}/s3gen.safetensors)")
    return model


def load_tokenizer(ckpt):
    """The MLX Chatterbox S3Tokenizer of a checkpoint folder (cached per path)."""
    return _load_tokenizer(str(ckpt.path))


def tokens_from_log_mel(model, log_mel: np.ndarray, max_len=None) -> np.ndarray:
    """The part of S3Tokenizer.forward after the log-mel: optional max_len cut, batching, quantize."""
    import mlx.core as mx

    from mlx_impl.s3tokenizer.utils import padding

    mel = mx.array(np.asarray(log_mel, np.float32))  # (1, 128, T)
    if max_len is not None:
        mel = mel[..., :max_len * 4]
    mels, mel_lens = padding([mel[0]])
    tokens, _ = model.quantize(mels, mel_lens)
    return np.array(tokens).astype(np.int32)


def run(fx, ckpt) -> dict:
    model = load_tokenizer(ckpt)
    wav_16k = fx.tensor("audio.wav_16k").astype(np.float32)
    log_mel = model.log_mel_spectrogram(wav_16k[:ENC_COND_LEN][None])  # (1, 128, T)
    tokens = tokens_from_log_mel(model, fx.tensor("s3tok.prompt_log_mel"), max_len=PROMPT_LEN)
    full_tokens, _ = model.forward([wav_16k])
    return {"s3tok.prompt_log_mel": np.array(log_mel), "s3tok.prompt_tokens": tokens,
            "s3tok.full_tokens": np.array(full_tokens).astype(np.int32)}
