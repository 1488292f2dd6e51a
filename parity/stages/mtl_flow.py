"""Stage "mtl_flow": S3Gen's flow (tokens -> mel, 10 Euler steps: generate() passes no n_cfm_timesteps), isolated:
the English flow runner (flow.py) on the multilingual fixture and the flow of the multilingual folder's s3gen.pt,
the recorded start noise replayed. mtl.flow.speech_tokens, the tokens s3gen.inference gets, is drop_invalid_tokens
of T3's row (the multilingual generate() has no < 6561 filter): MLX's hand-over on the reference's T3 tokens."""
from __future__ import annotations

import numpy as np

from . import flow
from .mtl_common import mtl_names, run_english

STAGE = "mtl_flow"
PROVIDES = mtl_names(["flow.speech_tokens", *flow.PROVIDES])


def run(fx, ckpt) -> dict:
    from mlx_impl.mtl_tts import drop_invalid_tokens

    out = run_english(flow, fx, ckpt, mtl_names(flow.PROVIDES))
    t3_row = np.asarray(fx.tensor("mtl.t3.speech_tokens")).reshape(-1)
    out["mtl.flow.speech_tokens"] = np.asarray(drop_invalid_tokens(t3_row), dtype=np.int32)[None]
    return out
