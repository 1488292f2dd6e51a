"""Stage "turbo_ve": the VoiceEncoder speaker embedding of prepare_conditionals (on the loudness-normalised
16 kHz clip), isolated, on the Turbo folder's ve.safetensors. Each checkpoint from the reference's own
input of that step, as the English ve stage (ve.py):
  turbo.ve.trimmed_wav     <- turbo.audio.wav_16k (librosa.effects.trim(top_db=20) port)
  turbo.ve.mel             <- the reference turbo.ve.trimmed_wav
  turbo.ve.partials        <- the reference turbo.ve.mel (rate=1.3, min_coverage=0.8)
  turbo.ve.partial_embeds  <- the reference turbo.ve.partials
  turbo.ve.speaker_emb     <- the MLX partial embeddings: mean, L2 norm, the mean over the one utterance
"""
from __future__ import annotations

import numpy as np

from .turbo_common import f32, pipeline
from .ve import BATCH_SIZE, RATE, TRIM_TOP_DB

STAGE = "turbo_ve"
PROVIDES = ["turbo.ve.trimmed_wav", "turbo.ve.mel", "turbo.ve.partials", "turbo.ve.partial_embeds",
            "turbo.ve.speaker_emb"]


def run(fx, ckpt) -> dict:
    import mlx.core as mx

    from mlx_impl.voice_encoder.melspec import melspectrogram
    from mlx_impl.voice_encoder.voice_encoder import trim

    model = pipeline(ckpt).ve
    out = {}
    trimmed, _ = trim(f32(fx, "turbo.audio.wav_16k"), top_db=TRIM_TOP_DB)
    out["turbo.ve.trimmed_wav"] = np.array(trimmed)
    out["turbo.ve.mel"] = np.array(melspectrogram(f32(fx, "turbo.ve.trimmed_wav"), model.hp).T)
    ref_mel = mx.array(f32(fx, "turbo.ve.mel"))
    partials, _ = model.make_partials(ref_mel[None], [ref_mel.shape[0]], rate=RATE)
    out["turbo.ve.partials"] = np.array(partials)
    partial_embeds = model.embed_partials(mx.array(f32(fx, "turbo.ve.partials")), BATCH_SIZE)
    out["turbo.ve.partial_embeds"] = np.array(partial_embeds)
    utt_embeds = model.reduce_partials(partial_embeds, [partial_embeds.shape[0]])
    out["turbo.ve.speaker_emb"] = np.array(mx.mean(utt_embeds, axis=0, keepdims=True))
    return out
