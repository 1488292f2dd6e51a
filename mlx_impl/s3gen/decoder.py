"""ConditionalDecoder: the causal U-Net estimator of S3Gen's CFM (chatterbox/models/s3gen/decoder.py).

The module boundary keeps the original layout ((B, 80, T) tensors, (B, 1, T) mask); inside,
everything runs channels-last ((B, T, C), masks (B, T, 1)).
"""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .. import backend
from .matcha.decoder import (Block1D, Downsample1D, ResnetBlock1D, SinusoidalPosEmb, TimestepEmbedding,
                             Upsample1D)
from .matcha.transformer import BasicTransformerBlock
from .transformer.convolution import Conv1d
from .utils.mask import add_optional_chunk_mask


def mask_to_bias(mask: mx.array, dtype=mx.float32) -> mx.array:
    """bool mask -> additive attention bias: 0 where kept, -1e10 where masked."""
    return (1.0 - mask.astype(dtype)) * -1.0e10


class CausalConv1d(Conv1d):
    """Conv1d with (kernel_size - 1) * dilation zeros padded on the left. (B, T, C) in and out."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True):
        assert stride == 1
        super().__init__(in_channels, out_channels, kernel_size, stride=1, padding=0,
                         dilation=dilation, groups=groups, bias=bias)
        self.causal_padding = (kernel_size - 1) * dilation

    def __call__(self, x: mx.array) -> mx.array:
        return super().__call__(mx.pad(x, [(0, 0), (self.causal_padding, 0), (0, 0)]))


class CausalBlock1D(Block1D):
    """CausalConv1d(k=3) -> LayerNorm over channels -> Mish, masked. Original `block.0` / `block.2`
    are `conv` / `norm`."""

    def __init__(self, dim: int, dim_out: int):
        nn.Module.__init__(self)
        self.conv = CausalConv1d(dim, dim_out, 3)
        self.norm = backend.LayerNorm(dim_out)


class CausalResnetBlock1D(ResnetBlock1D):
    def __init__(self, dim: int, dim_out: int, time_emb_dim: int, groups: int = 8):
        nn.Module.__init__(self)
        self.mlp = nn.Linear(time_emb_dim, dim_out)
        self.block1 = CausalBlock1D(dim, dim_out)
        self.block2 = CausalBlock1D(dim_out, dim_out)
        self.res_conv = Conv1d(dim, dim_out, 1)


class DownBlock(nn.Module):
    """Original `down_blocks.i.{0,1,2}`: `resnet`, `transformer_blocks`, `downsample`."""

    def __init__(self, resnet, transformer_blocks, downsample):
        super().__init__()
        self.resnet = resnet
        self.transformer_blocks = transformer_blocks
        self.downsample = downsample


class MidBlock(nn.Module):
    """Original `mid_blocks.i.{0,1}`: `resnet`, `transformer_blocks`."""

    def __init__(self, resnet, transformer_blocks):
        super().__init__()
        self.resnet = resnet
        self.transformer_blocks = transformer_blocks


class UpBlock(nn.Module):
    """Original `up_blocks.i.{0,1,2}`: `resnet`, `transformer_blocks`, `upsample`."""

    def __init__(self, resnet, transformer_blocks, upsample):
        super().__init__()
        self.resnet = resnet
        self.transformer_blocks = transformer_blocks
        self.upsample = upsample


class ConditionalDecoder(nn.Module):
    def __init__(self, in_channels=320, out_channels=80, causal=True, channels=(256,), dropout=0.0,
                 attention_head_dim=64, n_blocks=4, num_mid_blocks=12, num_heads=8, act_fn="gelu",
                 meanflow=False):
        super().__init__()
        channels = tuple(channels)
        self.meanflow = meanflow
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.causal = causal
        self.static_chunk_size = 0
        self.time_embeddings = SinusoidalPosEmb(in_channels)
        time_embed_dim = channels[0] * 4
        self.time_mlp = TimestepEmbedding(in_channels=in_channels, time_embed_dim=time_embed_dim, act_fn="silu")

        def resnet(dim, dim_out):
            return (CausalResnetBlock1D if causal else ResnetBlock1D)(dim=dim, dim_out=dim_out,
                                                                      time_emb_dim=time_embed_dim)

        def transformers(dim):
            return [BasicTransformerBlock(dim=dim, num_attention_heads=num_heads,
                                          attention_head_dim=attention_head_dim, dropout=dropout,
                                          activation_fn=act_fn) for _ in range(n_blocks)]

        def same_length_conv(dim):
            return CausalConv1d(dim, dim, 3) if causal else Conv1d(dim, dim, 3, padding=1)

        self.down_blocks = []
        output_channel = in_channels
        for i in range(len(channels)):
            input_channel, output_channel = output_channel, channels[i]
            is_last = i == len(channels) - 1
            self.down_blocks.append(DownBlock(
                resnet(input_channel, output_channel), transformers(output_channel),
                same_length_conv(output_channel) if is_last else Downsample1D(output_channel)))

        self.mid_blocks = [MidBlock(resnet(channels[-1], output_channel), transformers(output_channel))
                           for _ in range(num_mid_blocks)]

        channels = channels[::-1] + (channels[0],)
        self.up_blocks = []
        for i in range(len(channels) - 1):
            input_channel, output_channel = channels[i] * 2, channels[i + 1]
            is_last = i == len(channels) - 2
            self.up_blocks.append(UpBlock(
                resnet(input_channel, output_channel), transformers(output_channel),
                same_length_conv(output_channel) if is_last else Upsample1D(output_channel, use_conv_transpose=True)))
        self.final_block = CausalBlock1D(channels[-1], channels[-1]) if causal else Block1D(channels[-1], channels[-1])
        self.final_proj = Conv1d(channels[-1], out_channels, 1)

        self.time_embed_mixer = None
        if self.meanflow:  # intmeanflow.get_intmeanflow_time_mixer: [t_emb, r_emb] -> time_embed_dim
            self.time_embed_mixer = nn.Linear(time_embed_dim * 2, time_embed_dim, bias=False)

    def _attention_bias(self, x: mx.array, mask: mx.array):
        """mask (B, T, 1) -> the (B, 1, 1, T) additive bias the original builds from (B, 1, T), or
        None when it is all zeros (adding 0 changes nothing)."""
        attn_mask = add_optional_chunk_mask(x, mask.transpose(0, 2, 1) > 0, False, False, 0,
                                            self.static_chunk_size, -1)
        if bool(mx.all(attn_mask).item()):
            return None
        return mask_to_bias(attn_mask, x.dtype)[:, None]

    def __call__(self, x, mask, mu, t, spks=None, cond=None, r=None):
        """x, mu, cond (B, 80, T); mask (B, 1, T); t (B,); spks (B, 80) -> (B, 80, T).

        Each resnet's and transformer block's output is an interleave point: where the flow runs
        the conditional and unconditional halves at once (`backend.parallel_batch`), their graphs
        are queued block by block, in turn."""
        t = self.time_mlp(self.time_embeddings(t).astype(t.dtype))

        if self.meanflow:  # r: the end time of the MeanFlow step
            r = self.time_mlp(self.time_embeddings(r).astype(t.dtype))
            t = self.time_embed_mixer(mx.concatenate([t, r], axis=1))

        parts = [x, mu]
        if spks is not None:
            parts.append(mx.broadcast_to(spks[:, :, None], (spks.shape[0], spks.shape[1], x.shape[-1])))
        if cond is not None:
            parts.append(cond)
        h = mx.concatenate(parts, axis=1).transpose(0, 2, 1)  # (B, T, C)
        mask_cl = mask.transpose(0, 2, 1)  # (B, T, 1)
        masks = [mask_cl]
        for _ in self.down_blocks:
            masks.append(masks[-1][:, ::2])
        biases = [self._attention_bias(h, m) for m in masks[:-1]]

        hiddens = []
        for level, block in enumerate(self.down_blocks):
            h = self._level(block, h, masks[level], biases[level], t)
            hiddens.append(h)
            h = block.downsample(h * masks[level])
        mask_mid, bias_mid = masks[len(self.down_blocks) - 1], biases[len(self.down_blocks) - 1]

        for block in self.mid_blocks:
            h = self._level(block, h, mask_mid, bias_mid, t)

        for level, block in zip(reversed(range(len(self.up_blocks))), self.up_blocks):
            mask_up = masks[level]
            skip = hiddens.pop()
            h = mx.concatenate([h[:, : skip.shape[1]], skip], axis=-1)
            h = self._level(block, h, mask_up, biases[level], t)
            h = block.upsample(h * mask_up)
        h = self.final_block(h, mask_up)
        output = self.final_proj(h * mask_up)
        return (output * mask_cl).transpose(0, 2, 1)

    def _level(self, block, h, mask, bias, t):
        """A down / mid / up block's resnet and transformer blocks."""
        h = backend.interleave_point(block.resnet(h, mask, t))
        for transformer in block.transformer_blocks:
            h = backend.interleave_point(transformer(h, attention_mask=bias, timestep=t))
        return h
