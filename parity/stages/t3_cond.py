"""Stage "t3_cond": T3 conditioning and input embeddings, isolated.

Inputs from the fixture: ve.speaker_emb, s3tok.prompt_tokens, text.tokens (for t3.text_tokens),
t3.text_tokens (for t3.input_embeds), params exaggeration and cfg_weight.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

STAGE = "t3_cond"
PROVIDES = [
    "t3.cond_prompt_speech_emb", "t3.cond_spkr", "t3.perceiver_out", "t3.cond_emotion", "t3.cond_emb",
    "t3.text_tokens", "t3.input_embeds",
]


@lru_cache(maxsize=1)
def _load_t3(path: str):
    from mlx_impl.convert.t3 import load_t3
    from parity.checkpoint_dir import CheckpointDir

    return load_t3(CheckpointDir.open(path).state("t3"))


def load_t3_model(ckpt):
    """The MLX T3 of a checkpoint folder (cached: the full-size model is 2 GB in float32)."""
    return _load_t3(str(ckpt.path))


def t3_cond_from_fixture(fx):
    import mlx.core as mx

    from mlx_impl.t3 import T3Cond

    return T3Cond(
        speaker_emb=mx.array(fx.tensor("ve.speaker_emb").astype(np.float32)),
        cond_prompt_speech_tokens=mx.array(fx.tensor("s3tok.prompt_tokens").astype(np.int32)),
        emotion_adv=float(fx.params["exaggeration"]) * mx.ones((1, 1, 1), dtype=mx.float32),
    )


def pad_text_tokens(text_tokens: np.ndarray, hp, cfg_weight: float) -> np.ndarray:
    """As ChatterboxTTS.generate: the CFG copy (when cfg_weight > 0), then [START] ... [STOP]."""
    t = np.atleast_2d(np.asarray(text_tokens, dtype=np.int32))
    if cfg_weight > 0.0:
        t = np.concatenate([t, t], axis=0)
    t = np.pad(t, ((0, 0), (1, 0)), constant_values=hp.start_text_token)
    return np.pad(t, ((0, 0), (0, 1)), constant_values=hp.stop_text_token)


def run(fx, ckpt) -> dict:
    model = load_t3_model(ckpt)
    hp = model.hp
    cfg_weight = float(fx.params["cfg_weight"])
    parts: dict = {}
    embeds, len_cond = model.prepare_input_embeds(
        t3_cond=t3_cond_from_fixture(fx),
        text_tokens=fx.tensor("t3.text_tokens").astype(np.int32),
        speech_tokens=np.full((fx.tensor("t3.text_tokens").shape[0], 1), hp.start_speech_token, dtype=np.int32),
        cfg_weight=cfg_weight,
        outputs=parts,
    )
    cond_emb = embeds[:1, :len_cond]  # T3CondEnc's output, copied unchanged into the input embeddings
    return {
        "t3.cond_prompt_speech_emb": np.array(parts["cond_prompt_speech_emb"]),
        "t3.cond_spkr": np.array(parts["cond_spkr"][:, 0]),
        "t3.perceiver_out": np.array(parts["perceiver_out"]),
        "t3.cond_emotion": np.array(parts["cond_emotion"]),
        "t3.cond_emb": np.array(cond_emb),
        "t3.text_tokens": pad_text_tokens(fx.tensor("text.tokens"), hp, cfg_weight),
        "t3.input_embeds": np.array(embeds),
    }

