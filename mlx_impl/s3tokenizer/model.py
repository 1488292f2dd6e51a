"""MLX port of `s3tokenizer/model.py` (pip `s3tokenizer`): the V1 S3 tokenizer (Whisper-style encoder
with sinusoidal positions and a Euclidean codebook), plus the layers that V2 reuses.

Layouts: the public entry points take the mel as (B, n_mels, T) like the original; inside, the
encoder runs channels-last (B, T, C) as MLX convolutions expect.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Tuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..backend import attention_split_scale, layers, native
from .utils import make_non_pad_mask, mask_to_bias, merge_tokenized_segments

# Constants of the long-audio path (identical in V1 and V2): 30 s windows, 4 s overlap.
MAX_FRAMES = 3000
_SAMPLE_RATE = 16000
_HOP_LENGTH = 160
_WINDOW_SECONDS = 30
_OVERLAP_SECONDS = 4


@dataclass
class ModelConfig:
    n_mels: int = 128
    n_audio_ctx: int = 1500
    n_audio_state: int = 1280
    n_audio_head: int = 20
    n_audio_layer: int = 6
    n_codebook_size: int = 4096

    use_sdpa: bool = False


# On the CPU (float32, kernels built) `mlx_impl.backend` replaces MLX's ops: MLX's Linux CPU
# erf / softmax / layer norm are chains of scalar passes (erf GELU of (1, 250, 5120): 51 ms, the
# kernel 1.2 ms), the attention is one kernel (backend.attention_split_scale); on a GPU MLX's own
# ops are used.
_cpu_kernels_apply = native.applies_to


def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU, torch's nn.GELU() / F.gelu."""
    return native.kernels().gelu(x) if _cpu_kernels_apply(x) else nn.gelu(x)


class GELU(nn.Module):
    """nn.GELU() of the original's MLP (no parameters: the names stay `mlp.0` / `mlp.2`)."""

    def __call__(self, x: mx.array) -> mx.array:
        return gelu(x)


# The original subclasses of nn.LayerNorm / nn.Linear / nn.Conv1d only cast weights to the input
# dtype: in float32 the plain layers (LayerNorm and Linear: one kernel call each on the CPU).
LayerNorm = layers.LayerNorm
Linear = layers.Linear
Conv1d = nn.Conv1d


def sinusoids(length: int, channels: int, max_timescale: float = 10000) -> np.ndarray:
    """Whisper's sinusoidal position table (length, channels), float32 as the original computes it
    (the increment in float64, everything after in float32; exp / sin / cos correctly rounded).
    Only the default: the table is a stored buffer of the original, loaded with the weights."""
    assert channels % 2 == 0
    log_timescale_increment = np.log(max_timescale) / (channels // 2 - 1)
    exponent = np.float32(-log_timescale_increment) * np.arange(channels // 2, dtype=np.float32)
    inv_timescales = np.exp(exponent.astype(np.float64)).astype(np.float32)
    scaled_time = (np.arange(length, dtype=np.float32)[:, np.newaxis] * inv_timescales[np.newaxis, :]).astype(np.float64)
    return np.concatenate([np.sin(scaled_time), np.cos(scaled_time)], axis=1).astype(np.float32)


def _mlp(n_state: int) -> list:
    # a list (not nn.Sequential) so that the parameter names stay the original's `mlp.0` / `mlp.2`
    return [Linear(n_state, n_state * 4), GELU(), Linear(n_state * 4, n_state)]


def _run_mlp(layers: list, x: mx.array) -> mx.array:
    for layer in layers:
        x = layer(x)
    return x


class MultiHeadAttention(nn.Module):

    def __init__(self, n_state: int, n_head: int, use_sdpa: bool = False):
        super().__init__()
        self.n_head = n_head
        self.query = Linear(n_state, n_state)
        self.key = Linear(n_state, n_state, bias=False)
        self.value = Linear(n_state, n_state)
        self.out = Linear(n_state, n_state)
        self.use_sdpa = use_sdpa

    def __call__(self, x: mx.array, mask: Optional[mx.array] = None):
        q = self.query(x)
        k = self.key(x)
        v = self.value(x)
        wv, qk = self.qkv_attention(q, k, v, mask)
        return self.out(wv), qk

    def _attend(self, q, k, v, mask):
        """q, k, v: (B, T, H, Dh), q and k not yet scaled -> (B, T, H * Dh), qk logits (or None)."""
        B, T, H, Dh = q.shape
        scale = Dh ** -0.25
        v = v.transpose(0, 2, 1, 3)
        if not self.use_sdpa:
            wv, qk = attention_split_scale(q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v, scale, mask)
            return wv.reshape(B, T, H * Dh), qk
        q = q.transpose(0, 2, 1, 3) * scale
        k = k.transpose(0, 2, 1, 3) * scale
        assert mask is not None
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0, mask=mask)
        return out.transpose(0, 2, 1, 3).reshape(B, T, H * Dh), None

    def qkv_attention(self, q, k, v, mask=None):
        B, T, D = q.shape
        q = q.reshape(B, T, self.n_head, -1)
        k = k.reshape(B, T, self.n_head, -1)
        v = v.reshape(B, T, self.n_head, -1)
        return self._attend(q, k, v, mask)


class ResidualAttentionBlock(nn.Module):

    def __init__(self, n_state: int, n_head: int, use_sdpa: bool = False):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head, use_sdpa=use_sdpa)
        self.attn_ln = LayerNorm(n_state)
        self.mlp = _mlp(n_state)
        self.mlp_ln = LayerNorm(n_state)

    def __call__(self, x: mx.array, mask: Optional[mx.array] = None):
        x = x + self.attn(self.attn_ln(x), mask=mask)[0]
        x = x + _run_mlp(self.mlp, self.mlp_ln(x))
        return x


def conv_out_len(length, stride: int):
    """Output length of the k=3, padding=1 convolutions: (L + 2 - 1 * (3 - 1) - 1) // stride + 1."""
    return (length + 2 - 1 * (3 - 1) - 1) // stride + 1


class AudioEncoder(nn.Module):

    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int, stride: int,
                 use_sdpa: bool):
        super().__init__()
        self.stride = stride
        self.conv1 = Conv1d(n_mels, n_state, kernel_size=3, stride=stride, padding=1)
        self.conv2 = Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        # a persistent buffer in the original: part of the state dict, hence a parameter here
        self.positional_embedding = mx.array(sinusoids(n_ctx, n_state))
        self.blocks = [ResidualAttentionBlock(n_state, n_head, use_sdpa=use_sdpa) for _ in range(n_layer)]

    def __call__(self, x: mx.array, x_len: mx.array) -> Tuple[mx.array, mx.array]:
        """x: (B, n_mels, T) mel; x_len: (B,) -> hidden (B, T', n_state), lengths (B,)."""
        x = x.transpose(0, 2, 1)  # (B, T, n_mels)
        mask = make_non_pad_mask(x_len)[..., None]
        x = gelu(self.conv1(x * mask))
        x_len = conv_out_len(x_len, self.stride)
        mask = make_non_pad_mask(x_len)[..., None]
        x = gelu(self.conv2(x * mask))
        x_len = conv_out_len(x_len, 2)
        mask = make_non_pad_mask(x_len)[:, None, :]
        mask = mask_to_bias(mask, x.dtype)
        x = (x + self.positional_embedding[:x.shape[1], :]).astype(x.dtype)
        for block in self.blocks:
            x = block(x, mask[:, None])
        return x, x_len


class EuclideanCodebook(nn.Module):
    """Codebook with Euclidean distance (inference only). `embed`: (codebook_size, dim)."""

    def __init__(self, dim: int, codebook_size: int):
        super().__init__()
        self.codebook_size = codebook_size
        self.embed = mx.zeros((codebook_size, dim))

    def preprocess(self, x: mx.array) -> mx.array:
        return x.reshape(-1, x.shape[-1])

    def quantize(self, x: mx.array) -> mx.array:
        embed = self.embed.T.astype(x.dtype)
        dist = -(mx.sum(x ** 2, axis=1, keepdims=True) - 2 * (x @ embed) + mx.sum(embed ** 2, axis=0, keepdims=True))
        return mx.argmax(dist, axis=-1)

    def postprocess_emb(self, embed_ind: mx.array, shape) -> mx.array:
        return embed_ind.reshape(*shape[:-1])

    def dequantize(self, embed_ind: mx.array) -> mx.array:
        return self.embed[embed_ind]

    def encode(self, x: mx.array) -> mx.array:
        shape = x.shape
        x = self.preprocess(x)
        embed_ind = self.quantize(x)
        return self.postprocess_emb(embed_ind, shape)

    def decode(self, embed_ind: mx.array) -> mx.array:
        return self.dequantize(embed_ind)


class VectorQuantization(nn.Module):
    """Vector quantization (inference only). The original's `_codebook` is `codebook` here: MLX
    does not treat attributes whose name starts with `_` as parameters."""

    def __init__(self, dim: int, codebook_size: int):
        super().__init__()
        self.codebook = EuclideanCodebook(dim=dim, codebook_size=codebook_size)
        self.codebook_size = codebook_size

    def encode(self, x: mx.array) -> mx.array:
        x = x.astype(mx.float32)
        norm = mx.sqrt(mx.sum(x * x, axis=-1, keepdims=True))
        x = x / mx.maximum(norm, 1e-12)  # F.normalize(p=2, eps=1e-12)
        return self.codebook.encode(x)

    def decode(self, embed_ind: mx.array) -> mx.array:
        return self.codebook.decode(embed_ind).transpose(0, 2, 1)


class QuantizeMixin:
    """`quantize` with the long-audio path, shared by V1 and V2 (the original repeats it in both)."""

    def _token_rate(self) -> int:
        return 25

    def quantize_simple(self, mel: mx.array, mel_len: mx.array) -> Tuple[mx.array, mx.array]:
        """Encoder + quantizer on the whole batch, no 30 s windowing (the original's short path)."""
        hidden, code_len = self.encoder(mel, mel_len)
        code = self.quantizer.encode(hidden)
        return code.astype(mx.int32), code_len.astype(mx.int32)

    def quantize(self, mel: mx.array, mel_len: mx.array) -> Tuple[mx.array, mx.array]:
        """mel (B, n_mels, T), mel_len (B,) -> codes (B, T') int32, code lengths (B,) int32.
        A batch in which any item exceeds 30 s (3000 frames) goes through `_quantize_mixed_batch`."""
        mel_len = mx.array(mel_len)
        long_audio_mask = np.asarray(mel_len) > MAX_FRAMES
        if long_audio_mask.any():
            return self._quantize_mixed_batch(mel, mel_len, long_audio_mask, MAX_FRAMES)
        return self.quantize_simple(mel, mel_len)

    def __call__(self, mel: mx.array, mel_len: mx.array) -> Tuple[mx.array, mx.array]:
        return self.quantize(mel, mel_len)

    def _quantize_mixed_batch(self, mel: mx.array, mel_len: mx.array, long_audio_mask: np.ndarray,
                              max_frames: int) -> Tuple[mx.array, mx.array]:
        """Every short item becomes one segment, every long item 30 s windows with a 4 s overlap
        (stride 26 s); all segments are padded to 3000 frames and encoded as one batch; the windows of
        a long item are merged with `merge_tokenized_segments`."""
        batch_size = mel.shape[0]
        lens = [int(v) for v in np.asarray(mel_len)]
        frames_per_window = _WINDOW_SECONDS * _SAMPLE_RATE // _HOP_LENGTH  # 3000
        frames_per_overlap = _OVERLAP_SECONDS * _SAMPLE_RATE // _HOP_LENGTH  # 400
        frames_per_stride = frames_per_window - frames_per_overlap  # 2600

        segments, segment_lens, segment_info = [], [], []
        for b in range(batch_size):
            audio_mel, audio_len = mel[b], lens[b]
            if not long_audio_mask[b]:
                starts = [0]
            else:
                starts = list(range(0, audio_len, frames_per_stride))
            for start in starts:
                end = audio_len if not long_audio_mask[b] else min(start + frames_per_window, audio_len)
                segment = audio_mel[:, start:end]
                seg_len = segment.shape[1]
                if seg_len < frames_per_window:
                    segment = mx.pad(segment, [(0, 0), (0, frames_per_window - seg_len)])
                segments.append(segment)
                segment_lens.append(seg_len)
                segment_info.append((b, bool(long_audio_mask[b])))

        if not segments:
            return mx.zeros((batch_size, 0), dtype=mx.int32), mx.zeros((batch_size,), dtype=mx.int32)

        hidden, code_len = self.encoder(mx.stack(segments), mx.array(segment_lens, dtype=mx.int32))
        codes = np.asarray(self.quantizer.encode(hidden))
        code_len = np.asarray(code_len)

        results = {}
        for i, (b, is_long) in enumerate(segment_info):
            segment_code = codes[i, :int(code_len[i])].tolist()
            if not is_long:
                results[b] = segment_code
            else:
                results.setdefault(b, []).append(segment_code)
        for b in range(batch_size):
            if long_audio_mask[b]:
                results[b] = merge_tokenized_segments(results[b], overlap=_OVERLAP_SECONDS,
                                                      token_rate=self._token_rate())

        max_code_len = max(len(c) for c in results.values())
        out = np.zeros((batch_size, max_code_len), dtype=np.int32)
        out_len = np.zeros((batch_size,), dtype=np.int32)
        for b, c in results.items():
            out[b, :len(c)] = c
            out_len[b] = len(c)
        return mx.array(out), mx.array(out_len)


class S3Tokenizer(QuantizeMixin, nn.Module):
    """S3 tokenizer V1 (inference only): `speech_tokenizer_v1` (50 Hz, conv1 stride 1) or
    `speech_tokenizer_v1_25hz` (conv1 stride 2)."""

    def __init__(self, name: str, config: Optional[ModelConfig] = None):
        super().__init__()
        self.name = name
        self.config = replace(config) if config is not None else ModelConfig()
        c = self.config
        self.encoder = AudioEncoder(c.n_mels, c.n_audio_ctx, c.n_audio_state, c.n_audio_head, c.n_audio_layer,
                                    2 if name == "speech_tokenizer_v1_25hz" else 1, c.use_sdpa)
        self.quantizer = VectorQuantization(c.n_audio_state, c.n_codebook_size)

    def _token_rate(self) -> int:
        return 50 if self.name == "speech_tokenizer_v1" else 25
