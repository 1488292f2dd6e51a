"""T3's GPT-2 medium backbone for Chatterbox Turbo (chatterbox/models/t3/t3.py builds
`GPT2Model(GPT2Config(**LLAMA_CONFIGS["GPT2_medium"]))` when `hp.llama_config_name == "GPT2_medium"`).

HF's GPT-2 blocks (transformers `modeling_gpt2`: GPT2Attention, GPT2MLP, GPT2Block: pre-LayerNorm,
fused c_attn, the tanh GELU "gelu_new", ln_f) fed input embeddings, as T3 calls HF's
GPT2Model(inputs_embeds=...): the learned absolute position `wpe(past_length + arange(L))` is added
to the embeddings. No token table: ChatterboxTurboTTS.from_local deletes `tfmr.wte` after loading
(T3 embeds its own tokens). The KV cache is mlx-lm's (`make_prompt_cache`), the arguments mlx-lm's
GPT-2 `ModelArgs`. Linear, LayerNorm, the GELU and the attention are the backend's (on the CPU one
kernel each; on a GPU MLX's ops).
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.base import create_attention_mask
from mlx_lm.models.gpt2 import ModelArgs

from ..backend.decoder_linear import DecoderLinear
from ..backend.gelu_tanh import gelu_tanh
from ..backend.layers import LayerNorm
from .inference.fused_layers import attend


def gpt2_model_args(config: dict) -> ModelArgs:
    """mlx-lm's GPT-2 arguments from the original's config dict (llama_configs.GPT2_MEDIUM_CONFIG)."""
    return ModelArgs(model_type="gpt2", n_ctx=config["n_ctx"], n_embd=config["n_embd"], n_head=config["n_head"],
                     n_layer=config["n_layer"], n_positions=config["n_positions"],
                     layer_norm_epsilon=config["layer_norm_epsilon"], vocab_size=config["vocab_size"])


class GPT2Attention(nn.Module):
    """Causal self-attention: c_attn -> q, k, v by heads; the KV cache extended; softmax attention
    scaled by 1 / sqrt(head_dim); c_proj."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.num_heads = args.n_head
        self.head_dim = args.n_embd // args.n_head
        self.scale = self.head_dim ** -0.5
        self.c_attn = DecoderLinear(args.n_embd, 3 * args.n_embd)
        self.c_proj = DecoderLinear(args.n_embd, args.n_embd)

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        B, L, _ = x.shape
        # (B, L, 3 * heads, head_dim) -> (B, 3 * heads, L, head_dim): q, k, v as views of one projection
        heads = self.c_attn(x).reshape(B, L, 3 * self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
        query, key, value = mx.split(heads, 3, axis=1)
        if cache is not None:
            key, value = cache.update_and_fetch(key, value)
        return self.c_proj(attend(query, key, value, self.scale, mask, cache))


class GPT2MLP(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.c_fc = DecoderLinear(args.n_embd, 4 * args.n_embd)
        self.c_proj = DecoderLinear(4 * args.n_embd, args.n_embd)

    def __call__(self, x: mx.array) -> mx.array:
        return self.c_proj(gelu_tanh(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.ln_1 = LayerNorm(args.n_embd, eps=args.layer_norm_epsilon)
        self.attn = GPT2Attention(args)
        self.ln_2 = LayerNorm(args.n_embd, eps=args.layer_norm_epsilon)
        self.mlp = GPT2MLP(args)

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        h = x + self.attn(self.ln_1(x), mask, cache)
        return h + self.mlp(self.ln_2(h))


class GPT2Backbone(nn.Module):
    """HF GPT2Model without its token table: (B, L, dim) input embeddings -> (B, L, dim) hidden states."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.wpe = nn.Embedding(args.n_positions, args.n_embd)
        self.h = [GPT2Block(args) for _ in range(args.n_layer)]
        self.ln_f = LayerNorm(args.n_embd, eps=args.layer_norm_epsilon)

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
