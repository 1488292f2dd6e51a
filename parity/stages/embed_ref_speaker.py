"""Stage "embed_ref" (speaker part): S3Gen's reference mel and the CAMPPlus x-vector, isolated.

  embed_ref.prompt_feat  <- audio.wav_24k[:240000] (S3Gen's 80-bin mel, (1, T, 80))
  embed_ref.fbank        <- the reference embed_ref.wav_16k (Kaldi fbank minus its time mean)
  embed_ref.xvector      <- the reference embed_ref.fbank (CAMPPlus forward)
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

STAGE = "embed_ref"
PROVIDES = ["embed_ref.prompt_feat", "embed_ref.fbank", "embed_ref.xvector"]

DEC_COND_LEN = 240000  # ChatterboxTTS.DEC_COND_LEN: 10 s at 24 kHz
PREFIX = "speaker_encoder."


@lru_cache(maxsize=2)
def _load_campplus(path: str):
    from mlx_impl.convert.campplus import load_campplus
    from parity.checkpoint_dir import CheckpointDir

    state = CheckpointDir.open(path).state("s3gen")
    return load_campplus({k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)})


def load_campplus_model(ckpt):
    """The MLX CAMPPlus of a checkpoint folder (cached per path)."""
    return _load_campplus(str(ckpt.path))


def run(fx, ckpt) -> dict:
    import mlx.core as mx

    from mlx_impl.s3gen.utils.mel import mel_spectrogram
    from mlx_impl.s3gen.xvector import extract_feature

    model = load_campplus_model(ckpt)
    out: dict = {}

    wav_24k = fx.tensor("audio.wav_24k").astype(np.float32)[:DEC_COND_LEN]
    out["embed_ref.prompt_feat"] = np.array(mel_spectrogram(wav_24k).transpose(0, 2, 1))

    feats, _, _ = extract_feature(mx.array(fx.tensor("embed_ref.wav_16k").astype(np.float32)))
    out["embed_ref.fbank"] = np.array(feats)

    out["embed_ref.xvector"] = np.array(model(mx.array(fx.tensor("embed_ref.fbank").astype(np.float32))))
    return out
