"""T3's GPT-2 backbone (the `tfmr.*` tensors of t3_turbo_v1.safetensors) -> mlx_impl.t3.gpt2.GPT2Backbone.

HF's GPT-2 stores its projections as Conv1D, (in, out): transposed to MLX's Linear (out, in), as
mlx_lm.models.gpt2.Model.sanitize does, and stored row-major (a transposed view would load as a
column-major MLX array, which the backend's Linear kernel copies to row-major on every call: 17 ms
of a 22 ms (199, 1024) x (1024, 4096) product). Left out, by name: `wte.weight` (ChatterboxTurboTTS.from_local
deletes tfmr.wte after loading) and the `attn.bias` / `attn.masked_bias` causal-mask buffers of older
transformers versions.
"""
from __future__ import annotations

import numpy as np

from .common import Weights

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
IGNORED = {
    "wte.weight": "deleted by ChatterboxTurboTTS.from_local after loading (T3 has its own token tables)",
    "attn.bias": "causal-mask buffer of older transformers versions (MLX builds the mask)",
    "attn.masked_bias": "masking constant of older transformers versions",
}


def ignored(key: str) -> bool:
    return key == "wte.weight" or key.endswith((".attn.bias", ".attn.masked_bias"))


def sanitize(state: Weights) -> Weights:
    """The backbone's tensors (keys without the `tfmr.` prefix) in GPT2Backbone's layout."""
    out = {}
    for k, v in state.items():
        if ignored(k):
            continue
        out[k] = np.ascontiguousarray(v.T) if k.endswith(CONV1D) else v
    return out
