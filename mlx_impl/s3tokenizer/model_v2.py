"""MLX port of `s3tokenizer/model_v2.py` (pip `s3tokenizer`): S3TokenizerV2, the 25 Hz FSQ speech
tokenizer that Chatterbox uses (`speech_tokenizer_v2_25hz`).

Encoder: conv1 (stride 2) -> conv2 (stride 2) -> 6 blocks of [RoPE attention + FSMN memory, MLP];
quantizer: project down to 8 dims, tanh, round to {-1, 0, 1}, read as a base-3 number (3**8 codes).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Tuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..backend import depthwise_conv1d, rotate_half_rope
from .model import (Conv1d, LayerNorm, Linear, MultiHeadAttention, QuantizeMixin, _mlp, _run_mlp,
                    conv_out_len, gelu)
from .utils import make_non_pad_mask, mask_to_bias


@dataclass
class ModelConfig:
    n_mels: int = 128
    n_audio_ctx: int = 1500
    n_audio_state: int = 1280
    n_audio_head: int = 20
    n_audio_layer: int = 6
    n_codebook_size: int = 3 ** 8

    use_sdpa: bool = False


def precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0, scaling=None) -> mx.array:
    """The rotary table of the original, complex64 of shape (end, dim): the dim // 2 frequencies
    theta ** -(2i / dim), i < dim // 2, times the positions 0..end-1, repeated twice along the last axis
    (rotate-half layout, not interleaved). float32 throughout, as the original computes it."""
    exponents = np.arange(0, dim, 2)[:(dim // 2)].astype(np.float32) / np.float32(dim)
    # theta ** e correctly rounded to float32 (as torch's pow gives here), then a float32 division:
    # bit-identical to the original's frequencies, hence to its angles
    freqs = np.float32(1.0) / (np.float64(theta) ** exponents.astype(np.float64)).astype(np.float32)
    t = np.arange(end, dtype=np.float32)
    if scaling is not None:
        t = t * np.float32(scaling)
    angles = np.outer(t, freqs).astype(np.float32)
    # cos / sin of the float32 angle, correctly rounded to float32
    a64 = angles.astype(np.float64)
    freqs_cis = (np.cos(a64).astype(np.float32) + 1j * np.sin(a64).astype(np.float32)).astype(np.complex64)
    return mx.array(np.concatenate([freqs_cis, freqs_cis], axis=-1))


def apply_rotary_emb(xq: mx.array, xk: mx.array, freqs_cis: mx.array) -> Tuple[mx.array, mx.array]:
    """xq, xk: (B, T, H, D); freqs_cis: (T, D) complex. x * cos + rotate_half(x) * sin with
    rotate_half(x) = [-x[D/2:], x[:D/2]]."""
    cos = mx.real(freqs_cis).astype(xq.dtype)
    sin = mx.imag(freqs_cis).astype(xq.dtype)
    return rotate_half_rope(xq, cos, sin), rotate_half_rope(xk, cos, sin)


class FSQCodebook(nn.Module):

    def __init__(self, dim: int, level: int = 3):
        super().__init__()
        self.project_down = Linear(dim, 8)
        self.level = level

    def preprocess(self, x: mx.array) -> mx.array:
        return x.reshape(-1, x.shape[-1])

    def encode(self, x: mx.array) -> mx.array:
        """(B, T, dim) -> (B, T) int32 codes in [0, 3**8)."""
        x_shape = x.shape
        x = self.preprocess(x)
        h = self.project_down(x).astype(mx.float32)
        h = mx.tanh(h)
        h = h * 0.9990000128746033
        h = mx.round(h) + 1  # round half to even, like torch.round
        powers = mx.array([float(self.level ** i) for i in range(2 ** self.level)], dtype=h.dtype)  # exact
        mu = mx.sum(h * powers[None, :], axis=-1)
        return mu.reshape(x_shape[0], x_shape[1]).astype(mx.int32)

    def decode(self, embed_ind: mx.array) -> mx.array:
        raise NotImplementedError("There is no official up project component provided")


class FSQVectorQuantization(nn.Module):
    """The original's `_codebook` is `codebook` here (MLX hides `_`-prefixed attributes from the
    parameters); `mlx_impl/convert/s3tokenizer.py` renames the keys."""

    def __init__(self, dim: int, codebook_size: int):
        super().__init__()
        assert 3 ** 8 == codebook_size
        self.codebook = FSQCodebook(dim=dim, level=3)
        self.codebook_size = codebook_size

    def encode(self, x: mx.array) -> mx.array:
        return self.codebook.encode(x)

    def decode(self, embed_ind: mx.array) -> mx.array:
        return self.codebook.decode(embed_ind)


class FSMNBlock(nn.Module):
    """Parameter holder for the original's `torch.nn.Conv1d(n_state, n_state, K, groups=n_state,
    bias=False)`: `weight` (C, K, 1)."""

    def __init__(self, n_state: int, kernel_size: int):
        super().__init__()
        self.weight = mx.zeros((n_state, kernel_size, 1))

    def __call__(self, x: mx.array) -> mx.array:
        return depthwise_conv1d(x, self.weight)


class FSMNMultiHeadAttention(MultiHeadAttention):

    def __init__(self, n_state: int, n_head: int, kernel_size: int = 31, use_sdpa: bool = False):
        super().__init__(n_state, n_head)
        self.fsmn_block = FSMNBlock(n_state, kernel_size)
        self.left_padding = (kernel_size - 1) // 2
        self.right_padding = kernel_size - 1 - self.left_padding
        self.use_sdpa = use_sdpa
        self.key = Linear(n_state, n_state, bias=False)

    def forward_fsmn(self, inputs: mx.array, mask: Optional[mx.array] = None) -> mx.array:
        """inputs: v as (B, T, H, Dh); mask: (B, T, 1) -> (B, T, D)."""
        b, t = inputs.shape[:2]
        inputs = inputs.reshape(b, t, -1)
        if mask is not None and mask.shape[2] > 0:
            inputs = inputs * mask
        x = mx.pad(inputs, [(0, 0), (self.left_padding, self.right_padding), (0, 0)])
        x = self.fsmn_block(x)
        x = x + inputs
        return x * mask

    def qkv_attention(self, q, k, v, mask=None, mask_pad=None, freqs_cis=None):
        B, T, D = q.shape
        q = q.reshape(B, T, self.n_head, -1)
        k = k.reshape(B, T, self.n_head, -1)
        v = v.reshape(B, T, self.n_head, -1)
        if freqs_cis is not None:
            q, k = apply_rotary_emb(q, k, freqs_cis=freqs_cis)
        fsm_memory = self.forward_fsmn(v, mask_pad)
        wv, qk = self._attend(q, k, v, mask)
        return wv, qk, fsm_memory

    def __call__(self, x, mask=None, mask_pad=None, freqs_cis=None):
        q = self.query(x)
        k = self.key(x)
        v = self.value(x)
        wv, qk, fsm_memory = self.qkv_attention(q, k, v, mask, mask_pad, freqs_cis)
        return self.out(wv) + fsm_memory, qk


class ResidualAttentionBlock(nn.Module):

    def __init__(self, n_state: int, n_head: int, kernel_size: int = 31, use_sdpa: bool = False):
        super().__init__()
        self.attn = FSMNMultiHeadAttention(n_state, n_head, kernel_size, use_sdpa=use_sdpa)
        self.attn_ln = LayerNorm(n_state, eps=1e-5)
        self.mlp = _mlp(n_state)
        self.mlp_ln = LayerNorm(n_state)

    def __call__(self, x, mask=None, mask_pad=None, freqs_cis=None):
        x = x + self.attn(self.attn_ln(x), mask=mask, mask_pad=mask_pad, freqs_cis=freqs_cis)[0]
        x = x + _run_mlp(self.mlp, self.mlp_ln(x))
        return x


class AudioEncoderV2(nn.Module):

    def __init__(self, n_mels: int, n_state: int, n_head: int, n_layer: int, stride: int, use_sdpa: bool):
        super().__init__()
        self.stride = stride
        self.conv1 = Conv1d(n_mels, n_state, kernel_size=3, stride=stride, padding=1)
        self.conv2 = Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        # not a parameter (no state-dict entry in the original): `_` keeps it out of MLX's parameters
        self._freqs_cis = precompute_freqs_cis(64, 1024 * 2)
        self.blocks = [ResidualAttentionBlock(n_state, n_head, use_sdpa=use_sdpa) for _ in range(n_layer)]

    @property
    def freqs_cis(self) -> mx.array:
        return self._freqs_cis

    def __call__(self, x: mx.array, x_len: mx.array) -> Tuple[mx.array, mx.array]:
        """x: (B, n_mels, T) mel; x_len: (B,) -> hidden (B, T', n_state), lengths (B,)."""
        T = x.shape[-1]
        x = x.transpose(0, 2, 1)  # (B, T, n_mels)
        x_len = mx.array(x_len)
        mask = make_non_pad_mask(x_len, T)[..., None]
        x = gelu(self.conv1(x * mask))
        x_len = conv_out_len(x_len, self.stride)
        x_slen = conv_out_len(T, self.stride)
        mask = make_non_pad_mask(x_len, x_slen)[..., None]
        x = gelu(self.conv2(x * mask))
        x_len = conv_out_len(x_len, 2)
        x_slen = conv_out_len(x_slen, self.stride)
        mask = make_non_pad_mask(x_len, x_slen)  # (B, T')
        mask_pad = mask[:, :, None]  # (B, T', 1)
        bias = mask_to_bias(mask[:, None, :], x.dtype)  # (B, 1, T')
        freqs_cis = self._freqs_cis[:x.shape[1]]
        for block in self.blocks:
            x = block(x, bias[:, None], mask_pad, freqs_cis)
        return x, x_len


class S3TokenizerV2(QuantizeMixin, nn.Module):
    """S3 tokenizer V2 (inference only)."""

    def __init__(self, name: str, config: Optional[ModelConfig] = None):
        super().__init__()
        self.name = name
        config = replace(config) if config is not None else ModelConfig()
        if "v1" not in name:
            assert "v2" in name
            config.n_codebook_size = 3 ** 8
        self.config = config
        self.encoder = AudioEncoderV2(config.n_mels, config.n_audio_state, config.n_audio_head,
                                      config.n_audio_layer, 2, config.use_sdpa)
        self.quantizer = FSQVectorQuantization(config.n_audio_state, config.n_codebook_size)
