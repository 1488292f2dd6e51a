"""Stage "turbo_t3_decode": Chatterbox Turbo's sampled T3 decoding, isolated: MLX's own
T3.inference_turbo from the reference's turbo.t3.input_embeds, with recording wrappers
(turbo_common.recording_t3) and teacher forcing.

Teacher-forced: every step's token is the reference's (turbo.t3.speech_tokens), so the per-step logits
after each processor (temperature, top-k, top-p, repetition penalty) compare step by step even where a
free run would diverge. At every step the recorded uniform (turbo.t3.uniform_draws) is replayed through
the reference's inverse-CDF sampler on MLX's own probabilities: turbo.t3.speech_tokens is that pick per
step, each made from the reference's history; a pick that differs is judged by the flip rule
(parity/flips.py, the reference's turbo.t3.sampling_margin). The free-running replayed decode is the
cumulative mode's (turbo_cumulative.py).
"""
from __future__ import annotations

import numpy as np

from .turbo_common import ForcedDraw, decode_params, pipeline, recording_t3, stacked

STAGE = "turbo_t3_decode"
PROVIDES = ["turbo.t3.logits_raw", "turbo.t3.logits_temp", "turbo.t3.logits_top_k", "turbo.t3.logits_top_p",
            "turbo.t3.logits_rep", "turbo.t3.speech_tokens"]


def run(fx, ckpt) -> dict:
    from mlx_impl.t3.inference import ReplayDraw

    from ..flips import TEACHER_FORCED

    t3 = pipeline(ckpt).t3
    ref_tokens = fx.tensor("turbo.t3.speech_tokens").reshape(-1)
    uniforms = fx.tensor("turbo.t3.uniform_draws")
    if uniforms.size != ref_tokens.size:
        raise ValueError(f"{uniforms.size} recorded uniforms for {ref_tokens.size} reference tokens")
    draw, record = ForcedDraw(ref_tokens, ReplayDraw(uniforms)), {}
    with recording_t3(t3, record, embeds=fx.tensor("turbo.t3.input_embeds")):
        t3.inference_turbo(t3_cond=None, text_tokens=fx.tensor("turbo.text.tokens").astype(np.int32),
                           max_gen_len=ref_tokens.size - 1, draw=draw, **decode_params(fx))
    steps = stacked(record, len(draw.picks))
    out = {f"turbo.t3.{k}": v for k, v in steps.items()}
    out["turbo.t3.speech_tokens"] = np.asarray(draw.picks, dtype=np.int32)[None]
    out[TEACHER_FORCED] = True
    return out
