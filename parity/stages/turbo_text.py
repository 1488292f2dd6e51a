"""Stage "turbo_text": Chatterbox Turbo's text front end, isolated.

  turbo.text.normalized_utf8  <- the case's text: Turbo's punc_norm (mlx_impl.tts_turbo.punc_norm)
  turbo.text.tokens           <- the reference's normalised text through the GPT-2 tokenizer as the
                                 MLX port loads it (AutoTokenizer.from_pretrained(folder)) and calls it
"""
from __future__ import annotations

import numpy as np

from .turbo_common import pipeline

STAGE = "turbo_text"
PROVIDES = ["turbo.text.normalized_utf8", "turbo.text.tokens"]


def run(fx, ckpt) -> dict:
    from mlx_impl.tts_turbo import punc_norm

    tts = pipeline(ckpt)
    ref_text = bytes(fx.tensor("turbo.text.normalized_utf8").astype(np.uint8)).decode("utf-8")
    ids = tts.tokenizer(ref_text, return_tensors="np", padding=True, truncation=True).input_ids  # as text_tokens()
    return {"turbo.text.normalized_utf8": np.frombuffer(punc_norm(fx.case["text"]).encode("utf-8"), dtype=np.uint8),
            "turbo.text.tokens": np.asarray(ids).astype(np.int32)}
