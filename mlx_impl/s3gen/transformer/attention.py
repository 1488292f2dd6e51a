"""Multi-head attention with relative positions (chatterbox/models/s3gen/transformer/attention.py)."""
from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from ... import backend
from ...backend import Linear


class MultiHeadedAttention(nn.Module):
    def __init__(self, n_head: int, n_feat: int, dropout_rate: float = 0.0, key_bias: bool = True):
        super().__init__()
        assert n_feat % n_head == 0
        self.d_k = n_feat // n_head
        self.h = n_head
        self.linear_q = Linear(n_feat, n_feat)
        self.linear_k = Linear(n_feat, n_feat, bias=key_bias)
        self.linear_v = Linear(n_feat, n_feat)
        self.linear_out = Linear(n_feat, n_feat)

    def _heads(self, x: mx.array) -> mx.array:
        """(B, T, h*d_k) -> (B, T, h, d_k)"""
        return x.reshape(x.shape[0], -1, self.h, self.d_k)

    def forward_qkv(self, query, key, value):
        """-> q, k, v of shape (B, h, T, d_k)."""
        q = self._heads(self.linear_q(query)).transpose(0, 2, 1, 3)
        k = self._heads(self.linear_k(key)).transpose(0, 2, 1, 3)
        v = self._heads(self.linear_v(value)).transpose(0, 2, 1, 3)
        return q, k, v

    def forward_attention(self, value: mx.array, scores: mx.array, mask) -> mx.array:
        """scores (B, h, T1, T2); mask (B, 1, T2) or (B, T1, T2) bool, or None / size-0 (no mask:
        pass None when every entry is True; the result is the same, one pass cheaper)."""
        if mask is not None and mask.shape[-1] > 0:
            keep = mask[:, None, :, : scores.shape[-1]]
            scores = mx.where(keep, scores, -mx.inf)
            attn = mx.where(keep, backend.softmax(scores, axis=-1), 0.0)
            x = attn @ value
        else:
            x = backend.softmax_matmul(scores, value)
        x = x.transpose(0, 2, 1, 3)
        return self.linear_out(x.reshape(x.shape[0], -1, self.h * self.d_k))

    def __call__(self, query, key, value, mask=None, pos_emb=None):
        q, k, v = self.forward_qkv(query, key, value)
        scores = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(self.d_k)
        return self.forward_attention(v, scores, mask)


def rel_shift(x: mx.array) -> mx.array:
    """(B, h, T1, 2*T1-1) scores against relative positions T1-1 ... -(T1-1) -> (B, h, T1, T1):
    out[i, j] = x[i, T1-1-i+j]. The original's zero-pad / reshape trick, kept as is."""
    b, h, t1, n = x.shape
    x = mx.concatenate([mx.zeros((b, h, t1, 1), dtype=x.dtype), x], axis=-1)
    x = x.reshape(b, h, n + 1, t1)[:, :, 1:].reshape(b, h, t1, n)
    return x[..., : n // 2 + 1]


class RelPositionMultiHeadedAttention(MultiHeadedAttention):
    """Transformer-XL style attention: scores = (q+u)k^T + rel_shift((q+v)p^T), over sqrt(d_k)."""

    def __init__(self, n_head: int, n_feat: int, dropout_rate: float = 0.0, key_bias: bool = True):
        super().__init__(n_head, n_feat, dropout_rate, key_bias)
        self.linear_pos = Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = mx.zeros((self.h, self.d_k))
        self.pos_bias_v = mx.zeros((self.h, self.d_k))

    def __call__(self, query, key, value, mask=None, pos_emb=None):
        b = query.shape[0]
        q = self._heads(self.linear_q(query))  # (B, T1, h, d_k)
        k = self._heads(self.linear_k(key)).transpose(0, 2, 1, 3)
        v = self._heads(self.linear_v(value)).transpose(0, 2, 1, 3)
        p = self._heads(self.linear_pos(pos_emb)).transpose(0, 2, 1, 3)  # (1, h, 2T-1, d_k)

        q_with_bias_u = (q + self.pos_bias_u).transpose(0, 2, 1, 3)
        q_with_bias_v = (q + self.pos_bias_v).transpose(0, 2, 1, 3)
        matrix_ac = q_with_bias_u @ k.transpose(0, 1, 3, 2)
        matrix_bd = q_with_bias_v @ p.transpose(0, 1, 3, 2)
        if matrix_ac.shape != matrix_bd.shape:
            matrix_bd = rel_shift(matrix_bd)
        scores = (matrix_ac + matrix_bd) / math.sqrt(self.d_k)
        return self.forward_attention(v, scores, mask)


ATTENTION_CLASSES = {
    "selfattn": MultiHeadedAttention,
    "rel_selfattn": RelPositionMultiHeadedAttention,
}
