"""Stage "flow": S3Gen's token-to-mel flow (CausalMaskedDiffWithXvec, S3Token2Wav.inference:
finalize=True, n_cfm_timesteps from the case, 10 by default), isolated.

  flow.spk_embedding    <- the reference embed_ref.xvector
  flow.input_embedding  <- embed_ref.prompt_token + flow.speech_tokens
  flow.encoder_out      <- the reference flow.input_embedding (times the pad mask)
  flow.mu               <- the reference flow.encoder_out (encoder_proj)
  flow.cond             <- embed_ref.prompt_feat, length of the reference flow.mu
  flow.estimator_first  <- the reference flow.start_noise / mu / cond / spk_embedding (step 0)
  flow.estimator_last   <- the same solve, last Euler step (its x comes from the MLX steps before)
  flow.output_mel       <- the same solve: the reference mu + recorded start noise, prompt frames cut
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

STAGE = "flow"
PROVIDES = [
    "flow.spk_embedding", "flow.input_embedding", "flow.encoder_out", "flow.mu", "flow.cond",
    "flow.estimator_first", "flow.estimator_last", "flow.output_mel",
]
PREFIX = "flow."  # the flow's tensors inside s3gen.safetensors
DEFAULT_N_TIMESTEPS = 10


@lru_cache(maxsize=2)
def _load_flow(path: str):
    from mlx_impl.convert.common import load_strict
    from mlx_impl.convert.flow import IGNORED_PREFIXES, sanitize
    from mlx_impl.s3gen.flow import build_causal_flow
    from parity.checkpoint_dir import CheckpointDir

    state = CheckpointDir.open(path).state("s3gen")
    sub = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    weights = sanitize(sub)
    model = build_causal_flow()
    load_strict(model, weights, what=f"flow ({path}/s3gen.safetensors)")
    n_ignored = sum(k.startswith(IGNORED_PREFIXES) for k in sub) if IGNORED_PREFIXES else 0
    print(f"flow weights: {len(sub)} source tensors, {len(sub) - n_ignored} consumed, {n_ignored} ignored; "
          f"{len(weights)} MLX parameters assigned")
    return model


def load_flow(ckpt):
    """The MLX CausalMaskedDiffWithXvec of a checkpoint folder (cached per path)."""
    return _load_flow(str(ckpt.path))


def run(fx, ckpt) -> dict:
    return run_flow(load_flow(ckpt), fx, n_timesteps=int(fx.params.get("n_cfm_timesteps", DEFAULT_N_TIMESTEPS)))


def run_flow(model, fx, n_timesteps: int, meanflow: bool = False) -> dict:
    """The flow's checkpoints computed from the reference's tensors of an English-named fixture; the Turbo
    stage runs it on a TurboFixture with MeanFlow's solve."""
    import mlx.core as mx

    from mlx_impl.s3gen.utils.mask import make_pad_mask

    f32 = lambda name: mx.array(np.asarray(fx.tensor(name), np.float32))
    out = {}

    # speaker embedding, token embedding (from the fixture's inputs)
    out["flow.spk_embedding"] = model.speaker_embedding(f32("embed_ref.xvector"))
    prompt_token = np.asarray(fx.tensor("embed_ref.prompt_token")).astype(np.int32).reshape(1, -1)
    speech_tokens = np.asarray(fx.tensor("flow.speech_tokens")).astype(np.int32).reshape(1, -1)
    tokens = mx.array(np.concatenate([prompt_token, speech_tokens], axis=1))
    out["flow.input_embedding"] = model.embed_tokens(tokens)

    # encoder on the reference's embedding, projection on the reference's encoder output
    ref_emb = f32("flow.input_embedding")
    token_len = mx.array([ref_emb.shape[1]])
    pad = (~make_pad_mask(token_len, ref_emb.shape[1]))[:, :, None].astype(mx.float32)
    h, _ = model.encoder(ref_emb * pad, token_len)
    out["flow.encoder_out"] = h
    ref_h = f32("flow.encoder_out")
    out["flow.mu"] = model.project(ref_h)
    out["flow.cond"] = model.build_cond(f32("embed_ref.prompt_feat"), ref_h.shape[1])

    # the CFM solve on the reference's mu / cond / speaker embedding / start noise
    ref_mu = f32("flow.mu")
    mask = mx.ones((1, 1, ref_mu.shape[2]), dtype=mx.float32)
    est = {}

    def on_step(i, dxdt):
        if i == 0:
            est["first"] = dxdt
        if i == n_timesteps - 1:
            est["last"] = dxdt

    feat, _ = model.decoder(mu=ref_mu, mask=mask, spks=f32("flow.spk_embedding"), cond=f32("flow.cond"),
                            n_timesteps=n_timesteps, noise=f32("flow.start_noise"), meanflow=meanflow,
                            on_step=on_step)
    out["flow.estimator_first"] = est["first"]
    out["flow.estimator_last"] = est["last"]
    mel_len1 = fx.tensor("embed_ref.prompt_feat").shape[1]
    out["flow.output_mel"] = feat[:, :, mel_len1:]
    mx.eval(list(out.values()))
    return {k: np.array(v) for k, v in out.items()}
