"""Attention / padding masks (chatterbox/models/s3gen/utils/mask.py). Inference only."""
from __future__ import annotations

import mlx.core as mx


def subsequent_chunk_mask(size: int, chunk_size: int, num_left_chunks: int = -1) -> mx.array:
    """(size, size) bool: position i sees every position of its own chunk and the chunks before.
    Like the original, `num_left_chunks` is accepted but not used."""
    pos_idx = mx.arange(size)
    block_value = (pos_idx // chunk_size + 1) * chunk_size
    return pos_idx[None, :] < block_value[:, None]


def add_optional_chunk_mask(xs: mx.array, masks: mx.array, use_dynamic_chunk: bool,
                            use_dynamic_left_chunk: bool, decoding_chunk_size: int,
                            static_chunk_size: int, num_decoding_left_chunks: int,
                            enable_full_context: bool = True) -> mx.array:
    """masks (B, 1, L) bool -> the attention mask (B, 1, L) or (B, L, L) bool."""
    if use_dynamic_chunk:
        max_len = xs.shape[1]
        if decoding_chunk_size < 0:
            chunk_size, num_left_chunks = max_len, -1
        elif decoding_chunk_size > 0:
            chunk_size, num_left_chunks = decoding_chunk_size, num_decoding_left_chunks
        else:
            raise NotImplementedError("random dynamic chunks (decoding_chunk_size=0) are training only")
        chunk_masks = masks & subsequent_chunk_mask(xs.shape[1], chunk_size, num_left_chunks)[None]
    elif static_chunk_size > 0:
        chunk_masks = masks & subsequent_chunk_mask(xs.shape[1], static_chunk_size, num_decoding_left_chunks)[None]
    else:
        chunk_masks = masks
    # the original forces rows that see nothing to see everything (they are masked later)
    empty_rows = mx.sum(chunk_masks, axis=-1, keepdims=True) == 0
    return chunk_masks | empty_rows


def make_pad_mask(lengths: mx.array, max_len: int = 0) -> mx.array:
    """(B,) lengths -> (B, max_len) bool, True at padded positions."""
    lengths = lengths.astype(mx.int64)
    max_len = max_len if max_len > 0 else int(lengths.max().item())
    return mx.arange(max_len)[None, :] >= lengths[:, None]
