"""Stage "turbo_t3_greedy": free-running greedy T3 decoding of Chatterbox Turbo (MLX's own
T3.inference_turbo, argmax of the processed probabilities), isolated from the reference's
turbo.t3.input_embeds, with the case's processor arguments and step bound."""
from __future__ import annotations

import numpy as np

from .turbo_common import decode_params, pipeline, recording_t3, stacked

STAGE = "turbo_t3_greedy"
PROVIDES = ["turbo.t3_greedy.logits_raw", "turbo.t3_greedy.speech_tokens"]


def run(fx, ckpt) -> dict:
    from mlx_impl.t3.inference import GreedyDraw

    t3 = pipeline(ckpt).t3
    record, tokens = {}, []
    with recording_t3(t3, record, embeds=fx.tensor("turbo.t3.input_embeds")):
        t3.inference_turbo(t3_cond=None, text_tokens=fx.tensor("turbo.text.tokens").astype(np.int32),
                           max_gen_len=int(fx.params["max_gen_len"]), draw=GreedyDraw(),
                           on_token=lambda i, t: tokens.append(t), **decode_params(fx))
    steps = stacked(record, len(tokens))
    return {"turbo.t3_greedy.logits_raw": steps["logits_raw"],
            "turbo.t3_greedy.speech_tokens": np.asarray(tokens, dtype=np.int32)[None]}
