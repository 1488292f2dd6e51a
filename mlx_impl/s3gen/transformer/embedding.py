"""Positional encodings (chatterbox/models/s3gen/transformer/embedding.py). Inference only (no dropout).

The sinusoid tables are computed as the original computes them in float32 (the argument
`position * div_term` is a float32 product), with exp/sin/cos evaluated in float64 and rounded:
MLX's float32 exp differs from torch's by an ulp on most entries, and an ulp of the frequency
times a position of ~1000 would move the sinusoid's argument by ~1e-4.
"""
from __future__ import annotations

import math
from functools import lru_cache

import mlx.core as mx
import mlx.nn as nn
import numpy as np


def _div_term(d_model: int) -> np.ndarray:
    k = np.arange(0, d_model, 2, dtype=np.float32) * np.float32(-(math.log(10000.0) / d_model))
    return np.exp(k.astype(np.float64)).astype(np.float32)


def _sinusoids(positions: np.ndarray, d_model: int) -> np.ndarray:
    """(n,) float32 positions -> (n, d_model): sin on even, cos on odd channels."""
    arg = (positions.astype(np.float32)[:, None] * _div_term(d_model)[None, :]).astype(np.float64)
    pe = np.zeros((positions.shape[0], d_model), dtype=np.float32)
    pe[:, 0::2] = np.sin(arg).astype(np.float32)
    pe[:, 1::2] = np.cos(arg).astype(np.float32)
    return pe


@lru_cache(maxsize=8)
def _absolute_pe(d_model: int, max_len: int) -> np.ndarray:
    return _sinusoids(np.arange(max_len, dtype=np.float32), d_model)


@lru_cache(maxsize=32)
def _espnet_rel_pe(d_model: int, size: int) -> np.ndarray:
    """(2*size-1, d_model): relative positions size-1, ..., 1, 0, -1, ..., -(size-1)."""
    pos = np.arange(size, dtype=np.float32)
    positive = _sinusoids(pos, d_model)[::-1]
    arg = ((np.float32(-1) * pos)[:, None] * _div_term(d_model)[None, :]).astype(np.float64)
    negative = np.zeros((size, d_model), dtype=np.float32)
    negative[:, 0::2] = np.sin(arg).astype(np.float32)
    negative[:, 1::2] = np.cos(arg).astype(np.float32)
    return np.ascontiguousarray(np.concatenate([positive, negative[1:]], axis=0))


class PositionalEncoding(nn.Module):
    """x * sqrt(d_model) + PE[offset:offset+T]."""

    def __init__(self, d_model: int, dropout_rate: float = 0.0, max_len: int = 5000, reverse: bool = False):
        super().__init__()
        self.d_model = d_model
        self.xscale = math.sqrt(d_model)
        self.max_len = max_len

    def position_encoding(self, offset: int, size: int) -> mx.array:
        assert offset + size <= self.max_len
        return mx.array(_absolute_pe(self.d_model, self.max_len)[offset:offset + size])[None]

    def __call__(self, x: mx.array, offset: int = 0):
        pos_emb = self.position_encoding(offset, x.shape[1])
        return x * self.xscale + pos_emb, pos_emb


class RelPositionalEncoding(PositionalEncoding):
    """x * sqrt(d_model), and PE[offset:offset+T] returned apart."""

    def __call__(self, x: mx.array, offset: int = 0):
        return x * self.xscale, self.position_encoding(offset, x.shape[1])


class EspnetRelPositionalEncoding(nn.Module):
    """x * sqrt(d_model), and the (1, 2T-1, d_model) relative table (positions T-1 ... -(T-1))."""

    def __init__(self, d_model: int, dropout_rate: float = 0.0, max_len: int = 5000):
        super().__init__()
        self.d_model = d_model
        self.xscale = math.sqrt(d_model)
        self.max_len = max_len

    def position_encoding(self, offset: int, size: int) -> mx.array:
        # the original slices the centre of its (2 * max_len - 1) table: the same rows
        return mx.array(_espnet_rel_pe(self.d_model, size))[None]

    def __call__(self, x: mx.array, offset: int = 0):
        return x * self.xscale, self.position_encoding(offset, x.shape[1])


class NoPositionalEncoding(nn.Module):
    def __init__(self, d_model: int, dropout_rate: float = 0.0):
        super().__init__()
        self.d_model = d_model

    def position_encoding(self, offset: int, size: int) -> mx.array:
        return mx.zeros((1, size, self.d_model))

    def __call__(self, x: mx.array, offset: int = 0):
        return x, self.position_encoding(offset, x.shape[1])


POS_ENC_CLASSES = {
    "abs_pos": PositionalEncoding,
    "embed": PositionalEncoding,
    "rel_pos": RelPositionalEncoding,
    "rel_pos_espnet": EspnetRelPositionalEncoding,
    "no_pos": NoPositionalEncoding,
}
