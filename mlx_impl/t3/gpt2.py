"""T3's GPT-2 medium backbone for Chatterbox Turbo (chatterbox/models/t3/t3.py builds
`GPT2Model(GPT2Config(**LLAMA_CONFIGS["GPT2_medium"]))` when `hp.llama_config_name == "GPT2_medium"`).

mlx-lm's GPT-2 blocks (`mlx_lm.models.gpt2.TransformerBlock`: pre-LayerNorm, fused c_attn, the tanh
GELU that HF's "gelu_new" is) fed input embeddings, as T3 calls HF's GPT2Model(inputs_embeds=...):
the learned absolute position `wpe(past_length + arange(L))` is added to the embeddings. No token
table: ChatterboxTurboTTS.from_local deletes `tfmr.wte` after loading (T3 embeds its own tokens).
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.base import create_attention_mask
from mlx_lm.models.gpt2 import ModelArgs, TransformerBlock


def gpt2_model_args(config: dict) -> ModelArgs:
    """mlx-lm's GPT-2 arguments from the original's config dict (llama_configs.GPT2_MEDIUM_CONFIG)."""
    return ModelArgs(model_type="gpt2", n_ctx=config["n_ctx"], n_embd=config["n_embd"], n_head=config["n_head"],
                     n_layer=config["n_layer"], n_positions=config["n_positions"],
                     layer_norm_epsilon=config["layer_norm_epsilon"], vocab_size=config["vocab_size"])


class GPT2Backbone(nn.Module):
    """HF GPT2Model without its token table: (B, L, dim) input embeddings -> (B, L, dim) hidden states."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.wpe = nn.Embedding(args.n_positions, args.n_embd)
        self.h = [TransformerBlock(args=args) for _ in range(args.n_layer)]
        self.ln_f = nn.LayerNorm(args.n_embd, eps=args.layer_norm_epsilon)

    @property
    def layers(self):  # what mlx_lm's make_prompt_cache reads
        return self.h

    def __call__(self, inputs=None, cache: Optional[list] = None, input_embeddings: Optional[mx.array] = None):
        h = input_embeddings
        cache = cache if cache is not None else [None] * len(self.h)
        offset = cache[0].offset if cache[0] is not None else 0
        h = h + self.wpe(mx.arange(offset, offset + h.shape[1]))
        mask = create_attention_mask(h, cache[0])
        for layer, c in zip(self.h, cache):
            h = layer(h, mask, cache=c)
        return self.ln_f(h)
