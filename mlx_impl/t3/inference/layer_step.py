"""The "layers" step kind: T3's one-token decode step as one compiled call per layer (the default
on the CPU; bit-identical logits to mlx-lm's model call there)."""
from __future__ import annotations

from functools import partial

import mlx.core as mx

from .fused_layers import attend, is_fused, kernel_rope_applies, rope_tables


def _project(layer, x, offset, rope_tables=None):
    """input norm, then FusedAttention.project."""
    return layer.self_attn.project(layer.input_layernorm(x), offset, rope_tables)


def finish_layer(layer, x, attn_out):
    """o_proj + residual, post-attention norm, MLP + residual, for one-token steps."""
    h = x + layer.self_attn.o_proj(attn_out)
    return h + layer.mlp(layer.post_attention_layernorm(h))


def _link(layer, next_layer, x, attn_out, offset, rope_tables=None):
    x = finish_layer(layer, x, attn_out)
    return (x, *_project(next_layer, x, offset, rope_tables))


def _head(layer, norm, speech_head, x, attn_out):
    return speech_head(norm(finish_layer(layer, x, attn_out))[:, -1, :])


class CompiledStep:
    """speech_logits for one-token steps of the fused backbone, with the host's work cut down: per
    layer one compiled call (MLX replays the traced graph without running Python per operation),
    covering everything but the KV-cache update and the attention, whose length grows every step
    (they stay mlx-lm's). The weights are the trace's constants: build a new CompiledStep after
    changing them (fast_decode builds one per call)."""

    def __init__(self, t3):
        if not is_fused(t3.tfmr):
            raise TypeError("CompiledStep needs fused projections (T3.fuse_projections)")
        self.layers = layers = t3.tfmr.layers
        self.first = mx.compile(partial(_project, layers[0]))
        self.links = [mx.compile(partial(_link, a, b)) for a, b in zip(layers[:-1], layers[1:])]
        self.last = mx.compile(partial(_head, layers[-1], t3.tfmr.norm, t3.speech_head))

    def __call__(self, x: mx.array, cache: list) -> mx.array:
        if x.shape[1] != 1:
            raise ValueError(f"CompiledStep runs one-token steps, not {x.shape[1]} positions")
        offset = mx.array(cache[0].offset, dtype=mx.int32)
        rope0 = self.layers[0].self_attn.rope
        tables = rope_tables(rope0, offset, 1) if kernel_rope_applies(rope0, x) else None  # once for all layers
        q, k, v = self.first(x, offset, tables)
        for i, layer in enumerate(self.layers):
            k, v = cache[i].update_and_fetch(k, v)
            out = attend(q, k, v, layer.self_attn.scale, None, cache[i])
            if i + 1 < len(self.layers):
                x, q, k, v = self.links[i](x, out, offset, tables)
        return self.last(x, out)
