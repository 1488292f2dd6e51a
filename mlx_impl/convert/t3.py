"""t3_cfg.safetensors (the original T3 state dict) -> MLX T3 weights.

The MLX T3 mirrors the original's module names, and mlx-lm's LlamaModel uses HF's parameter names,
so every key keeps its name: `tfmr.*` (embed_tokens, layers.N.{self_attn.{q,k,v,o}_proj,
mlp.{gate,up,down}_proj, input_layernorm, post_attention_layernorm}, norm), `cond_enc.*`,
`{text,speech}_emb`, `{text,speech}_pos_emb.emb`, `{text,speech}_head`. Linear weights are (out, in)
in both frameworks, so no transposes. Strict: every source key must match one of the patterns
below, every expected key must be present (for each layer found), else ConversionError.
"""
from __future__ import annotations

import re
from typing import Dict

import numpy as np

from .common import ConversionError, Weights, check_all_consumed, take

FIXED_KEYS = (
    "tfmr.embed_tokens.weight",  # unused by T3 (inputs are embeddings) but part of the backbone
    "tfmr.norm.weight",
    "cond_enc.spkr_enc.weight",
    "cond_enc.spkr_enc.bias",
    "cond_enc.emotion_adv_fc.weight",
    "cond_enc.perceiver.pre_attention_query",
    "cond_enc.perceiver.attn.norm.weight",
    "cond_enc.perceiver.attn.norm.bias",
    *(f"cond_enc.perceiver.attn.{m}.{p}" for m in ("to_q", "to_k", "to_v", "proj_out") for p in ("weight", "bias")),
    "text_emb.weight",
    "speech_emb.weight",
    "text_pos_emb.emb.weight",
    "speech_pos_emb.emb.weight",
    "text_head.weight",
    "speech_head.weight",
)

LAYER_KEYS = (
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
)

# Source keys that are consumed by nothing, with the reason.
IGNORED_PREFIXES: Dict[str, str] = {}

_LAYER_RE = re.compile(r"^tfmr\.layers\.(\d+)\.(.+)$")


def num_layers(state: Weights) -> int:
    idx = {int(m.group(1)) for k in state if (m := _LAYER_RE.match(k))}
    if not idx:
        raise ConversionError("t3: no 'tfmr.layers.N.*' tensors in the source")
    n = max(idx) + 1
    missing = sorted(set(range(n)) - idx)
    if missing:
        raise ConversionError(f"t3: backbone layers {missing} have no tensors")
    return n


def sanitize(state: Weights) -> Weights:
    """Original T3 state dict (keys relative to T3) -> MLX T3 weights (flat keys), float32."""
    consumed: set = set()
    out: Weights = {}
    for key in FIXED_KEYS:
        out[key] = np.asarray(take(state, key, consumed), dtype=np.float32)
    for i in range(num_layers(state)):
        for name in LAYER_KEYS:
            key = f"tfmr.layers.{i}.{name}"
            out[key] = np.asarray(take(state, key, consumed), dtype=np.float32)
    check_all_consumed(state, consumed, IGNORED_PREFIXES, what="t3")
    return out


def load_t3(state: Weights, hp=None, *, verbose: bool = False):
    """An MLX T3 with the converted weights of `state` (hp: English config by default; the text
    vocabulary size is taken from the weights)."""
    from mlx_impl.t3 import T3, T3Config

    from .common import load_strict

    weights, n_source = sanitize(state), len(state)
    del state  # the converted arrays' only holder from here (see load_strict)
    n_weights = len(weights)
    if hp is None:
        hp = T3Config(text_tokens_dict_size=int(weights["text_emb.weight"].shape[0]))
    model = T3(hp)
    load_strict(model, weights, what="t3")
    model.eval()
    if verbose:  # keys map one to one, so consumed == assigned
        print(f"t3: {n_source} source tensors, {n_weights} consumed, {n_source - n_weights} ignored; "
              f"{n_weights} MLX parameters assigned")
    return model
