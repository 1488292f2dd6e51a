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

from .turbo_common import N_CFM_TIMESTEPS, pipeline

STAGE = "turbo_flow"
PROVIDES = ["turbo.flow.speech_tokens", "turbo.flow.spk_embedding", "turbo.flow.input_embedding",
            "turbo.flow.encoder_out", "turbo.flow.mu", "turbo.flow.cond", "turbo.flow.estimator_first",
            "turbo.flow.estimator_last", "turbo.flow.output_mel"]


def run(fx, ckpt) -> dict:
    import mlx.core as mx

    from mlx_impl.s3gen.utils.mask import make_pad_mask
    from mlx_impl.tts_turbo import s3gen_tokens

    model = pipeline(ckpt).s3gen.flow
    f32 = lambda name: mx.array(np.asarray(fx.tensor(name), np.float32))
    out = {"turbo.flow.speech_tokens": s3gen_tokens(fx.tensor("turbo.t3.speech_tokens"))[None]}

    out["turbo.flow.spk_embedding"] = model.speaker_embedding(f32("turbo.embed_ref.xvector"))
    prompt_token = np.asarray(fx.tensor("turbo.embed_ref.prompt_token")).astype(np.int32).reshape(1, -1)
    speech_tokens = np.asarray(fx.tensor("turbo.flow.speech_tokens")).astype(np.int32).reshape(1, -1)
    out["turbo.flow.input_embedding"] = model.embed_tokens(mx.array(np.concatenate([prompt_token, speech_tokens], axis=1)))

    ref_emb = f32("turbo.flow.input_embedding")
    token_len = mx.array([ref_emb.shape[1]])
    pad = (~make_pad_mask(token_len, ref_emb.shape[1]))[:, :, None].astype(mx.float32)
    h, _ = model.encoder(ref_emb * pad, token_len)
    out["turbo.flow.encoder_out"] = h
    ref_h = f32("turbo.flow.encoder_out")
    out["turbo.flow.mu"] = model.project(ref_h)
    out["turbo.flow.cond"] = model.build_cond(f32("turbo.embed_ref.prompt_feat"), ref_h.shape[1])

    ref_mu = f32("turbo.flow.mu")
    est = {}

    def on_step(i, dxdt):
        est.setdefault("first", dxdt)
        est["last"] = dxdt

    feat, _ = model.decoder(mu=ref_mu, mask=mx.ones((1, 1, ref_mu.shape[2]), dtype=mx.float32),
                            spks=f32("turbo.flow.spk_embedding"), cond=f32("turbo.flow.cond"),
                            n_timesteps=N_CFM_TIMESTEPS, noise=f32("turbo.flow.start_noise"), meanflow=True,
                            on_step=on_step)
    out["turbo.flow.estimator_first"], out["turbo.flow.estimator_last"] = est["first"], est["last"]
    out["turbo.flow.output_mel"] = feat[:, :, fx.tensor("turbo.embed_ref.prompt_feat").shape[1]:]
    mx.eval([v for v in out.values() if isinstance(v, mx.array)])
    return {k: np.array(v) for k, v in out.items()}
