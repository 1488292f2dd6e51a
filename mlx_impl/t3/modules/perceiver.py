"""Perceiver resampler of the T3 speech prompt (mirrors chatterbox/models/t3/modules/perceiver.py).

The original's RelativePositionBias is not ported: the Perceiver builds its AttentionBlock2 with
relative_pos_embeddings=False, so it holds no weights and never runs. Dropout is a no-op at inference.
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx
import mlx.nn as nn


class AttentionQKV(nn.Module):
    def __init__(self, n_heads: int, head_dim: int, scale: Optional[float] = None):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.scale = scale if scale is not None else head_dim ** -0.5

    def __call__(self, q: mx.array, k: mx.array, v: mx.array, mask: Optional[mx.array] = None) -> mx.array:
        q, k, v = (self.split_heads(t) for t in (q, k, v))
        # The original's default (flash=True) path is F.scaled_dot_product_attention, whose boolean
        # mask keeps True entries, like MLX's.
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.combine_heads(out)

    def split_heads(self, x: mx.array) -> mx.array:
        bs, length, _ = x.shape
        return x.reshape(bs, length, self.n_heads, self.head_dim).transpose(0, 2, 1, 3)

    def combine_heads(self, x: mx.array) -> mx.array:
        bs, _, length, _ = x.shape
        return x.transpose(0, 2, 1, 3).reshape(bs, length, -1)


class AttentionBlock2(nn.Module):
    """Pre-LayerNorm attention with separate Q, K, V projections; x1 attends to x2."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1, scale: Optional[float] = None):
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            assert channels % num_head_channels == 0, f"channels {channels} not divisible by {num_head_channels}"
            self.num_heads = channels // num_head_channels
        self.norm = nn.LayerNorm(channels)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.attention = AttentionQKV(self.num_heads, channels // self.num_heads, scale=scale)
        self.proj_out = nn.Linear(channels, channels)

    def __call__(self, x1: mx.array, x2: mx.array, mask: Optional[mx.array] = None) -> mx.array:
        x1_norm = self.norm(x1)
        x2_norm = self.norm(x2)
        q = self.to_q(x1_norm)
        k = self.to_k(x2_norm)
        v = self.to_v(x2_norm)
        h = self.attention(q, k, v, mask=mask)
        return x1 + self.proj_out(h)


class Perceiver(nn.Module):
    """32 learned queries cross-attend to the prompt, then self-attend (same attention block twice)."""

    def __init__(self, pre_attention_query_token: int = 32, pre_attention_query_size: int = 1024,
                 embedding_dim: int = 1024, num_attn_heads: int = 4):
        super().__init__()
        self.pre_attention_query = mx.zeros((1, pre_attention_query_token, pre_attention_query_size))
        self.attn = AttentionBlock2(embedding_dim, num_attn_heads)

    def __call__(self, h: mx.array) -> mx.array:
        query_ = mx.broadcast_to(self.pre_attention_query, (h.shape[0], *self.pre_attention_query.shape[1:]))
        pre_att = self.attn(query_, h)  # cross-attention
        return self.attn(pre_att, pre_att)  # self-attention
