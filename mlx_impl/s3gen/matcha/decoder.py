"""U-Net building blocks (chatterbox/models/s3gen/matcha/decoder.py). Channels-last: (B, T, C);
masks (B, T, 1). Only the blocks S3Gen uses (the Matcha `Decoder` itself is not ported)."""
from __future__ import annotations

import math
from functools import lru_cache

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ... import backend
from ..transformer.convolution import Conv1d


@lru_cache(maxsize=8)
def _sinusoidal_freqs(half_dim: int) -> np.ndarray:
    # float32 product as the original, exp in float64 then rounded (matches torch's float32 table)
    k = np.arange(half_dim, dtype=np.float32) * np.float32(-(math.log(10000) / (half_dim - 1)))
    return np.exp(k.astype(np.float64)).astype(np.float32)


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        assert dim % 2 == 0, "SinusoidalPosEmb requires dim to be even"
        self.dim = dim

    def __call__(self, x: mx.array, scale: float = 1000) -> mx.array:
        """x (B,) -> (B, dim): [sin(scale*x*f), cos(scale*x*f)]"""
        if x.ndim < 1:
            x = x[None]
        freqs = mx.array(_sinusoidal_freqs(self.dim // 2))
        emb = (scale * x)[:, None] * freqs[None, :]
        return mx.concatenate([mx.sin(emb), mx.cos(emb)], axis=-1)


class Block1D(nn.Module):
    """conv(k=3, pad 1) -> GroupNorm -> Mish, masked. Original `block.0` / `block.1` are `conv` / `norm`."""

    def __init__(self, dim: int, dim_out: int, groups: int = 8):
        super().__init__()
        self.conv = Conv1d(dim, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out, pytorch_compatible=True)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        return backend.mish(self.norm(self.conv(x * mask))) * mask


class ResnetBlock1D(nn.Module):
    """Original `mlp.1` (after a Mish) is `mlp`."""

    def __init__(self, dim: int, dim_out: int, time_emb_dim: int, groups: int = 8):
        super().__init__()
        self.mlp = nn.Linear(time_emb_dim, dim_out)
        self.block1 = Block1D(dim, dim_out, groups=groups)
        self.block2 = Block1D(dim_out, dim_out, groups=groups)
        self.res_conv = Conv1d(dim, dim_out, 1)

    def __call__(self, x: mx.array, mask: mx.array, time_emb: mx.array) -> mx.array:
        """x (B, T, dim), mask (B, T, 1), time_emb (B, time_emb_dim)"""
        h = self.block1(x, mask)
        h = h + self.mlp(backend.mish(time_emb))[:, None, :]
        h = self.block2(h, mask)
        return h + self.res_conv(x * mask)


class Downsample1D(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = Conv1d(dim, dim, 3, stride=2, padding=1)

    def __call__(self, x: mx.array) -> mx.array:
        return self.conv(x)


class TimestepEmbedding(nn.Module):
    """linear_1 -> SiLU -> linear_2 (diffusers-style; only act_fn="silu", no cond_proj / post_act)."""

    def __init__(self, in_channels: int, time_embed_dim: int, act_fn: str = "silu", out_dim: int = None,
                 post_act_fn: str = None, cond_proj_dim=None):
        super().__init__()
        if act_fn != "silu" or post_act_fn is not None or cond_proj_dim is not None:
            raise NotImplementedError("TimestepEmbedding: only act_fn='silu' without cond_proj / post_act")
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.linear_2 = nn.Linear(time_embed_dim, out_dim if out_dim is not None else time_embed_dim)

    def __call__(self, sample: mx.array) -> mx.array:
        return self.linear_2(backend.silu(self.linear_1(sample)))


class Upsample1D(nn.Module):
    """x2 upsampling: ConvTranspose1d(4, stride 2, pad 1), or nearest + optional conv.
    (Not used by S3Gen's causal decoder; the transposed conv runs MLX's native op.)"""

    def __init__(self, channels: int, use_conv: bool = False, use_conv_transpose: bool = True,
                 out_channels: int = None, name: str = "conv"):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.use_conv_transpose = use_conv_transpose
        if use_conv_transpose:
            self.conv = nn.ConvTranspose1d(channels, self.out_channels, 4, stride=2, padding=1)
        elif use_conv:
            self.conv = Conv1d(channels, self.out_channels, 3, padding=1)
        else:
            self.conv = None

    def __call__(self, inputs: mx.array) -> mx.array:
        assert inputs.shape[-1] == self.channels
        if self.use_conv_transpose:
            return self.conv(inputs)
        outputs = mx.repeat(inputs, 2, axis=1)
        return self.conv(outputs) if self.use_conv else outputs
