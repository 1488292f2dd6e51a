"""t3_turbo_v1.safetensors (Chatterbox Turbo's T3 state dict) -> MLX T3 on the GPT-2 backbone.

The original loads the file strictly into `T3(hp)` with `hp.llama_config_name = "GPT2_medium"` and
then deletes `tfmr.wte`. Per component: T3's own tensors (cond_enc.spkr_enc weight and bias,
text_emb, speech_emb, text_head, speech_head weight and bias: 7, keys unchanged), the backbone's
`tfmr.*` (wpe, ln_f weight and bias, 12 per block: 3 + 12 x 24 = 291 for GPT-2 medium; Conv1D
weights transposed by convert/gpt2.py). Dropped by name only: `tfmr.wte.weight` (deleted by
from_local) and the `attn.bias` / `attn.masked_bias` mask buffers of older transformers versions.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from . import gpt2
from .common import ConversionError, Weights, check_all_consumed, take

T3_KEYS = (
    "cond_enc.spkr_enc.weight",
    "cond_enc.spkr_enc.bias",
    "text_emb.weight",
    "speech_emb.weight",
    "text_head.weight",
    "speech_head.weight",
    "speech_head.bias",
)
BACKBONE_KEYS = ("wpe.weight", "ln_f.weight", "ln_f.bias")
BLOCK_KEYS = tuple(f"{m}.{p}" for m in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")
                   for p in ("weight", "bias"))


def num_blocks(state: Weights) -> int:
    idx = {int(k.split(".")[2]) for k in state if k.startswith("tfmr.h.")}
    if not idx:
        raise ConversionError("t3_turbo: no 'tfmr.h.N.*' tensors in the source (not a Chatterbox Turbo T3)")
    missing = sorted(set(range(max(idx) + 1)) - idx)
    if missing:
        raise ConversionError(f"t3_turbo: backbone blocks {missing} have no tensors")
    return max(idx) + 1


def sanitize(state: Weights) -> Tuple[Weights, dict]:
    """The original's Turbo T3 state dict -> (MLX T3 weights, float32; counts per component)."""
    consumed: set = set()
    out: Weights = {k: np.asarray(take(state, k, consumed), dtype=np.float32) for k in T3_KEYS}
    n = num_blocks(state)
    expected = list(BACKBONE_KEYS) + [f"h.{i}.{k}" for i in range(n) for k in BLOCK_KEYS]
    tfmr = {k: np.asarray(take(state, "tfmr." + k, consumed), dtype=np.float32) for k in expected}
    out.update({"tfmr." + k: v for k, v in gpt2.sanitize(tfmr).items()})
    dropped = sorted(k for k in state if k.startswith("tfmr.") and gpt2.ignored(k[len("tfmr."):]))
    consumed.update(dropped)
    check_all_consumed(state, consumed, what="t3_turbo")
    return out, dict(t3=len(T3_KEYS), backbone=len(expected), blocks=n, dropped=dropped)


def load_t3_turbo(state: Weights, *, verbose: bool = False):
    """An MLX T3 with Turbo's hyper-parameters (as ChatterboxTurboTTS.from_local sets them) and the
    converted weights of `state`, strictly."""
    from mlx_impl.t3 import T3

    from .common import load_strict

    weights, counts = sanitize(state)
    model = T3(turbo_hp())
    load_strict(model, weights, what="t3_turbo")
    model.eval()
    if verbose:
        print(f"t3_turbo: {len(state)} source tensors: T3 {counts['t3']}, GPT-2 backbone {counts['backbone']} "
              f"({counts['blocks']} blocks), dropped {counts['dropped']}")
    return model


def turbo_hp():
    """ChatterboxTurboTTS.from_local's T3 hyper-parameters."""
    from mlx_impl.t3 import T3Config

    hp = T3Config(text_tokens_dict_size=50276)
    hp.llama_config_name = "GPT2_medium"
    hp.speech_tokens_dict_size = 6563
    hp.input_pos_emb = None
    hp.speech_cond_prompt_len = 375
    hp.use_perceiver_resampler = False
    hp.emotion_adv = False
    return hp
