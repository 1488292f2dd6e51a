"""Stage "ve": the VoiceEncoder speaker embedding, isolated.

Each checkpoint is computed from the reference's own input of that step:
  ve.trimmed_wav     <- audio.wav_16k (librosa.effects.trim(top_db=20) port)
  ve.mel             <- the reference ve.trimmed_wav
  ve.partials        <- the reference ve.mel (rate=1.3, min_coverage=0.8)
  ve.partial_embeds  <- the reference ve.partials
  ve.speaker_emb     <- the MLX partial embeddings: mean, L2 norm, then the mean over utterances
                        (one here) that prepare_conditionals takes
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

STAGE = "ve"
PROVIDES = ["ve.trimmed_wav", "ve.mel", "ve.partials", "ve.partial_embeds", "ve.speaker_emb"]

TRIM_TOP_DB = 20  # VoiceEncoder.embeds_from_wavs default
RATE = 1.3  # embeds_from_wavs sets rate=1.3 ("Resemble's default value")
BATCH_SIZE = 32  # embeds_from_wavs / embeds_from_mels default


@lru_cache(maxsize=2)
def _load_ve(path: str):
    from mlx_impl.convert.voice_encoder import load_voice_encoder
    from parity.checkpoint_dir import CheckpointDir

    return load_voice_encoder(CheckpointDir.open(path).state("ve"))


def load_ve_model(ckpt):
    """The MLX VoiceEncoder of a checkpoint folder (cached per path)."""
    return _load_ve(str(ckpt.path))


def run(fx, ckpt) -> dict:
    import mlx.core as mx

    from mlx_impl.voice_encoder.melspec import melspectrogram
    from mlx_impl.voice_encoder.voice_encoder import trim

    model = load_ve_model(ckpt)
    out: dict = {}

    trimmed, _ = trim(fx.tensor("audio.wav_16k").astype(np.float32), top_db=TRIM_TOP_DB)
    out["ve.trimmed_wav"] = np.array(trimmed)

    out["ve.mel"] = np.array(melspectrogram(fx.tensor("ve.trimmed_wav").astype(np.float32), model.hp).T)

    ref_mel = mx.array(fx.tensor("ve.mel").astype(np.float32))
    partials, _ = model.make_partials(ref_mel[None], [ref_mel.shape[0]], rate=RATE)
    out["ve.partials"] = np.array(partials)

    partial_embeds = model.embed_partials(mx.array(fx.tensor("ve.partials").astype(np.float32)), BATCH_SIZE)
    out["ve.partial_embeds"] = np.array(partial_embeds)

    utt_embeds = model.reduce_partials(partial_embeds, [partial_embeds.shape[0]])  # (1, 256)
    out["ve.speaker_emb"] = np.array(mx.mean(utt_embeds, axis=0, keepdims=True))
    return out
