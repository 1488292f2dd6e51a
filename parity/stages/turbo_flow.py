"""Stage "turbo_flow": the tokens S3Gen gets and S3Gen's flow with MeanFlow (CausalMaskedDiffWithXvec of
S3Gen(meanflow=True), 2 steps as ChatterboxTurboTTS.generate runs it), isolated, on the Turbo folder's
s3gen_meanflow.safetensors. As the English flow stage (flow.py), with MeanFlow's solve:
  turbo.flow.speech_tokens    <- the reference turbo.t3.speech_tokens: generate()'s tokens < 6561 plus three
                                 S3GEN_SIL (mlx_impl.tts_turbo.s3gen_tokens)
  turbo.flow.spk_embedding    <- the reference turbo.embed_ref.xvector
  turbo.flow.input_embedding  <- turbo.embed_ref.prompt_token + the reference turbo.flow.speech_tokens
  turbo.flow.encoder_out      <- the reference turbo.flow.input_embedding (times the pad mask)
  turbo.flow.mu               <- the reference turbo.flow.encoder_out (encoder_proj)
  turbo.flow.cond             <- turbo.embed_ref.prompt_feat, length of the reference turbo.flow.mu
  turbo.flow.estimator_first  <- basic_euler's first step on the reference start / mu / cond / spk_embedding
  turbo.flow.estimator_last   <- its last (second) step (its x from MLX's first)
  turbo.flow.output_mel       <- the same solve, prompt frames cut
"""
from __future__ import annotations

import numpy as np

from .flow import run_flow
from .turbo_common import N_CFM_TIMESTEPS, PREFIX, TurboFixture, pipeline

STAGE = "turbo_flow"
PROVIDES = ["turbo.flow.speech_tokens", "turbo.flow.spk_embedding", "turbo.flow.input_embedding",
            "turbo.flow.encoder_out", "turbo.flow.mu", "turbo.flow.cond", "turbo.flow.estimator_first",
            "turbo.flow.estimator_last", "turbo.flow.output_mel"]


def run(fx, ckpt) -> dict:
    from mlx_impl.tts_turbo import s3gen_tokens

    out = {"turbo.flow.speech_tokens": np.array(s3gen_tokens(fx.tensor("turbo.t3.speech_tokens"))[None])}
    flow = run_flow(pipeline(ckpt).s3gen.flow, TurboFixture(fx), N_CFM_TIMESTEPS, meanflow=True)
    out.update({PREFIX + k: v for k, v in flow.items()})
    return out
