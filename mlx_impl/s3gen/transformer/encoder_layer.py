"""Conformer encoder layer (chatterbox/models/s3gen/transformer/encoder_layer.py). Inference only."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ...backend import LayerNorm


class ConformerEncoderLayer(nn.Module):
    def __init__(self, size: int, self_attn: nn.Module, feed_forward: nn.Module = None,
                 feed_forward_macaron: nn.Module = None, conv_module: nn.Module = None,
                 dropout_rate: float = 0.0, normalize_before: bool = True):
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.norm_ff = LayerNorm(size, eps=1e-12)
        self.norm_mha = LayerNorm(size, eps=1e-12)
        if feed_forward_macaron is not None:
            self.feed_forward_macaron = feed_forward_macaron
            self.norm_ff_macaron = LayerNorm(size, eps=1e-12)
            self.ff_scale = 0.5
        else:
            self.feed_forward_macaron = None
            self.ff_scale = 1.0
        self.conv_module = conv_module
        if conv_module is not None:
            self.norm_conv = LayerNorm(size, eps=1e-12)
            self.norm_final = LayerNorm(size, eps=1e-12)
        self.size = size
        self.normalize_before = normalize_before

    def _sublayer(self, x, norm, fn, scale=None):
        residual = x
        if self.normalize_before:
            x = norm(x)
        y = fn(x)
        x = residual + (y if scale is None or scale == 1.0 else scale * y)
        if not self.normalize_before:
            x = norm(x)
        return x

    def __call__(self, x: mx.array, mask: mx.array, pos_emb: mx.array, mask_pad: mx.array = None):
        """x (B, T, size); mask (B, 1, T) or (B, T, T) bool; pos_emb (1, 2T-1, size)."""
        if self.feed_forward_macaron is not None:
            x = self._sublayer(x, self.norm_ff_macaron, self.feed_forward_macaron, self.ff_scale)
        x = self._sublayer(x, self.norm_mha, lambda h: self.self_attn(h, h, h, mask, pos_emb))
        if self.conv_module is not None:
            x = self._sublayer(x, self.norm_conv, lambda h: self.conv_module(h, mask_pad))
        x = self._sublayer(x, self.norm_ff, self.feed_forward, self.ff_scale)
        if self.conv_module is not None:
            x = self.norm_final(x)
        return x, mask
