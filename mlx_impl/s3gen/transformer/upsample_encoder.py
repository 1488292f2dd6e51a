"""UpsampleConformerEncoder (chatterbox/models/s3gen/transformer/upsample_encoder.py). Inference only.

Channels-last inside: the original transposes to (B, C, T) around its convolutions; here the
convolutions run on (B, T, C) directly.
"""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ...backend import LayerNorm
from ..utils.mask import add_optional_chunk_mask, make_pad_mask
from .activation import ACTIVATIONS
from .attention import ATTENTION_CLASSES
from .convolution import Conv1d, ConvolutionModule
from .embedding import POS_ENC_CLASSES
from .encoder_layer import ConformerEncoderLayer
from .positionwise_feed_forward import PositionwiseFeedForward
from .subsampling import SUBSAMPLE_CLASSES


class Upsample1D(nn.Module):
    """Nearest-neighbour upsampling by `stride`, left zero-pad 2*stride, conv (kernel 2*stride+1)."""

    def __init__(self, channels: int, out_channels: int, stride: int = 2):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels
        self.stride = stride
        self.conv = Conv1d(channels, out_channels, stride * 2 + 1)

    def __call__(self, inputs: mx.array, input_lengths: mx.array):
        """inputs (B, T, C) -> (B, stride*T, out_channels)"""
        x = mx.repeat(inputs, self.stride, axis=1)
        x = mx.pad(x, [(0, 0), (self.stride * 2, 0), (0, 0)])
        return self.conv(x), input_lengths * self.stride


class PreLookaheadLayer(nn.Module):
    def __init__(self, channels: int, pre_lookahead_len: int = 1):
        super().__init__()
        self.channels = channels
        self.pre_lookahead_len = pre_lookahead_len
        self.conv1 = Conv1d(channels, channels, pre_lookahead_len + 1)
        self.conv2 = Conv1d(channels, channels, 3)

    def __call__(self, inputs: mx.array) -> mx.array:
        """inputs (B, T, C)"""
        x = mx.pad(inputs, [(0, 0), (0, self.pre_lookahead_len), (0, 0)])
        x = nn.leaky_relu(self.conv1(x), negative_slope=0.01)
        x = mx.pad(x, [(0, 0), (2, 0), (0, 0)])
        return self.conv2(x) + inputs


class UpsampleConformerEncoder(nn.Module):
    def __init__(
        self,
        input_size: int = 512,
        output_size: int = 512,
        attention_heads: int = 8,
        linear_units: int = 2048,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.1,
        input_layer: str = "linear",
        pos_enc_layer_type: str = "rel_pos_espnet",
        normalize_before: bool = True,
        static_chunk_size: int = 0,
        use_dynamic_chunk: bool = False,
        global_cmvn: nn.Module = None,
        use_dynamic_left_chunk: bool = False,
        positionwise_conv_kernel_size: int = 1,
        macaron_style: bool = False,
        selfattention_layer_type: str = "rel_selfattn",
        activation_type: str = "swish",
        use_cnn_module: bool = False,
        cnn_module_kernel: int = 15,
        causal: bool = False,
        cnn_module_norm: str = "batch_norm",
        key_bias: bool = True,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        if global_cmvn is not None:
            raise NotImplementedError("global_cmvn")
        self._output_size = output_size
        self.normalize_before = normalize_before
        self.static_chunk_size = static_chunk_size
        self.use_dynamic_chunk = use_dynamic_chunk
        self.use_dynamic_left_chunk = use_dynamic_left_chunk

        def input_layer_():
            pos_enc = POS_ENC_CLASSES[pos_enc_layer_type](output_size, positional_dropout_rate)
            return SUBSAMPLE_CLASSES[input_layer](input_size, output_size, dropout_rate, pos_enc)

        def layer():
            activation = ACTIVATIONS[activation_type]()
            return ConformerEncoderLayer(
                output_size,
                ATTENTION_CLASSES[selfattention_layer_type](attention_heads, output_size, attention_dropout_rate, key_bias),
                PositionwiseFeedForward(output_size, linear_units, dropout_rate, activation),
                PositionwiseFeedForward(output_size, linear_units, dropout_rate, activation) if macaron_style else None,
                ConvolutionModule(output_size, cnn_module_kernel, activation, cnn_module_norm, causal)
                if use_cnn_module else None,
                dropout_rate,
                normalize_before,
            )

        self.embed = input_layer_()
        self.after_norm = LayerNorm(output_size, eps=1e-5)
        self.pre_lookahead_layer = PreLookaheadLayer(channels=512, pre_lookahead_len=3)
        self.encoders = [layer() for _ in range(num_blocks)]
        self.up_layer = Upsample1D(channels=512, out_channels=512, stride=2)
        self.up_embed = input_layer_()
        self.up_encoders = [layer() for _ in range(4)]

    def output_size(self) -> int:
        return self._output_size

    def _chunk_masks(self, xs, masks, decoding_chunk_size, static_chunk_size, num_decoding_left_chunks):
        """The attention mask, or None when it masks nothing (same result, cheaper)."""
        chunk_masks = add_optional_chunk_mask(xs, masks, self.use_dynamic_chunk, self.use_dynamic_left_chunk,
                                              decoding_chunk_size, static_chunk_size, num_decoding_left_chunks)
        return None if bool(mx.all(chunk_masks).item()) else chunk_masks

    def __call__(self, xs: mx.array, xs_lens: mx.array, decoding_chunk_size: int = 0,
                 num_decoding_left_chunks: int = -1):
        """xs (B, T, D), xs_lens (B,) -> (B, 2T, D) and the (B, 1, 2T) bool mask."""
        masks = ~make_pad_mask(xs_lens, xs.shape[1])[:, None, :]
        xs, pos_emb, masks = self.embed(xs, masks)
        mask_pad = None if bool(mx.all(masks).item()) else masks
        chunk_masks = self._chunk_masks(xs, masks, decoding_chunk_size, self.static_chunk_size,
                                        num_decoding_left_chunks)
        xs = self.pre_lookahead_layer(xs)
        for layer in self.encoders:
            xs, chunk_masks = layer(xs, chunk_masks, pos_emb, mask_pad)

        xs, xs_lens = self.up_layer(xs, xs_lens)
        masks = ~make_pad_mask(xs_lens, xs.shape[1])[:, None, :]
        xs, pos_emb, masks = self.up_embed(xs, masks)
        mask_pad = None if bool(mx.all(masks).item()) else masks
        chunk_masks = self._chunk_masks(xs, masks, decoding_chunk_size,
                                        self.static_chunk_size * self.up_layer.stride, num_decoding_left_chunks)
        for layer in self.up_encoders:
            xs, chunk_masks = layer(xs, chunk_masks, pos_emb, mask_pad)

        if self.normalize_before:
            xs = self.after_norm(xs)
        return xs, masks
