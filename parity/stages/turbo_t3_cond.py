"""Stage "turbo_t3_cond": T3's conditioning and input embeddings in inference_turbo, isolated: from the
reference's turbo.ve.speaker_emb, turbo.s3tok.prompt_tokens and turbo.text.tokens (GPT-2 T3: no position
embeddings of T3's own, no perceiver, no emotion input, no CFG row), the start-of-speech token appended.
"""
from __future__ import annotations

import numpy as np

from .turbo_common import f32, pipeline

STAGE = "turbo_t3_cond"
PROVIDES = ["turbo.t3.cond_prompt_speech_emb", "turbo.t3.cond_spkr", "turbo.t3.cond_emb", "turbo.t3.input_embeds"]


def t3_cond_from_fixture(fx):
    import mlx.core as mx

    from mlx_impl.t3 import T3Cond

    return T3Cond(speaker_emb=mx.array(f32(fx, "turbo.ve.speaker_emb")),
                  cond_prompt_speech_tokens=mx.array(fx.tensor("turbo.s3tok.prompt_tokens").astype(np.int32)),
                  emotion_adv=float(fx.params["exaggeration"]) * mx.ones((1, 1, 1), dtype=mx.float32))


def run(fx, ckpt) -> dict:
    t3 = pipeline(ckpt).t3
    text_tokens = fx.tensor("turbo.text.tokens").astype(np.int32)
    parts: dict = {}
    embeds, len_cond = t3.prepare_input_embeds(
        t3_cond=t3_cond_from_fixture(fx), text_tokens=text_tokens,
        speech_tokens=np.full((1, 1), t3.hp.start_speech_token, dtype=np.int32), cfg_weight=0.0, outputs=parts)
    return {
        "turbo.t3.cond_prompt_speech_emb": np.array(parts["cond_prompt_speech_emb"]),
        "turbo.t3.cond_spkr": np.array(parts["cond_spkr"][:, 0]),
        "turbo.t3.cond_emb": np.array(embeds[:, :len_cond]),
        "turbo.t3.input_embeds": np.array(embeds),
    }
