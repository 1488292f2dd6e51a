"""The multilingual T3's online alignment checks (mirrors
chatterbox/models/t3/inference/alignment_stream_analyzer.py).

Three attention heads of the backbone, (layer, head) = (12, 15), (13, 11), (9, 2), follow the text
while speech is generated. Their mean attention over the text tokens gives an alignment position;
heuristics on it suppress the stop token before the text is spoken and force it on a hallucinated
tail, a repetition, or the same token twice in a row.

The original switches HF's backbone to eager attention with `output_attentions=True` and reads the
weights through forward hooks. Here an `AttentionSpy` wraps only the three watched layers: the
layer runs as before (same SDPA output), and the spy computes softmax(q k^T * scale + mask) of its
one head for the conditional row (batch 0), q from the layer's own projection, k from the cache.

`step()` keeps the original's state and quirks (the token passed is the PREVIOUS one; argmax
keeps the first maximum; a reduction over an empty slice fails as torch's does) and records each
step's decisions in `steps` (a dict per call), for the parity harness.
"""
from __future__ import annotations

import logging
from typing import List, Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .fused_layers import causal_bias, rope

logger = logging.getLogger(__name__)


LLAMA_ALIGNED_HEADS = [(12, 15), (13, 11), (9, 2)]

EOS_LOGIT = 2 ** 15  # (±2**15 is safe for all dtypes >= 16bit)


class AlignmentStreamAnalyzer:
    def __init__(self, tfmr, queue, text_tokens_slice, alignment_layer_idx=9, eos_idx=0):
        """`tfmr`: mlx-lm's LlamaModel whose watched layers get an `AttentionSpy` (None: no spies,
        `last_aligned_attns` is then set by the caller). Call `remove_spies()` when decoding ends."""
        self.text_tokens_slice = (i, j) = text_tokens_slice
        self.eos_idx = eos_idx
        self.alignment = np.zeros((0, j - i), dtype=np.float32)
        self.curr_frame_pos = 0
        self.text_position = 0

        self.started = False
        self.started_at = None

        self.complete = False
        self.completed_at = None

        # Track generated tokens for repetition detection
        self.generated_tokens = []

        # each step's decisions (not in the original: the parity harness compares them)
        self.steps: List[dict] = []

        self.last_aligned_attns = []
        self._spied = []
        for i, (layer_idx, head_idx) in enumerate(LLAMA_ALIGNED_HEADS):
            self.last_aligned_attns += [None]
            if tfmr is not None:
                self._add_attention_spy(tfmr, i, layer_idx, head_idx)

    def _add_attention_spy(self, tfmr, buffer_idx, layer_idx, head_idx):
        """Wraps the layer's attention so that each call stores its head's weights (L, S) of batch 0."""
        def store(weights):
            self.last_aligned_attns[buffer_idx] = weights

        layer = tfmr.layers[layer_idx]
        layer.self_attn = AttentionSpy(layer.self_attn, head_idx, store)
        self._spied.append(layer)

    def remove_spies(self) -> None:
        for layer in self._spied:
            layer.self_attn = layer.self_attn.restore()
        self._spied = []

    def step(self, logits: mx.array, next_token=None) -> mx.array:
        """The (1, V) logits after the checks: the stop token suppressed, or forced. Appends this
        step's decisions to `steps`."""
        mx.eval(logits, *[a for a in self.last_aligned_attns if isinstance(a, mx.array)])  # one evaluation
        # extract approximate alignment matrix chunk (1 frame at a time after the first chunk)
        aligned_attn = mean_of_heads(self.last_aligned_attns)  # (N, N)
        i, j = self.text_tokens_slice
        if self.curr_frame_pos == 0:
            # first chunk has conditioning info, text tokens, and BOS token
            A_chunk = aligned_attn[j:, i:j].copy()  # (T, S)
        else:
            # subsequent chunks have 1 frame due to KV-caching
            A_chunk = aligned_attn[:, i:j].copy()  # (1, S)

        A_chunk[:, self.curr_frame_pos + 1:] = 0

        self.alignment = np.concatenate((self.alignment, A_chunk), axis=0)

        A = self.alignment
        T, S = A.shape

        # update position
        cur_text_posn = int(np.argmax(A_chunk[-1]))  # the first maximum, as torch's argmax
        discontinuity = not (-4 < cur_text_posn - self.text_position < 7)  # NOTE: very lenient!
        if not discontinuity:
            self.text_position = cur_text_posn

        # Hallucinations at the start of speech show up as activations at the bottom of the attention maps!
        false_start = (not self.started) and bool(torch_max(A[-2:, -2:]) > 0.1 or torch_max(A[:, :4]) < 0.5)
        self.started = not false_start
        if self.started and self.started_at is None:
            self.started_at = T

        # Is generation likely complete?
        self.complete = self.complete or self.text_position >= S - 3
        if self.complete and self.completed_at is None:
            self.completed_at = T

        # Activations for the final token that last too long are likely hallucinations.
        long_tail = self.complete and bool(torch_max(A[self.completed_at:, -3:].sum(axis=0)) >= 5)  # 200ms

        # If there are activations in previous tokens after generation has completed, assume this is a repetition error.
        alignment_repetition = self.complete and bool(torch_max(A[self.completed_at:, :-5], dim=1).sum() > 5)

        if next_token is not None:
            self.generated_tokens.append(int(next_token))
            if len(self.generated_tokens) > 8:
                self.generated_tokens = self.generated_tokens[-8:]

        # Check for excessive token repetition (3x same token in a row)
        token_repetition = (
            len(self.generated_tokens) >= 3 and
            len(set(self.generated_tokens[-2:])) == 1
        )
        if token_repetition:
            logger.warning(f"Detected 2x repetition of token {self.generated_tokens[-1]}")

        # Suppress EoS to prevent early termination
        eos_suppressed = cur_text_posn < S - 3 and S > 5  # Only suppress if text is longer than 5 tokens
        eos = mx.broadcast_to(mx.arange(logits.shape[-1]) == self.eos_idx, logits.shape)
        if eos_suppressed:
            logits = mx.where(eos, mx.array(-EOS_LOGIT, dtype=logits.dtype), logits)

        # If a bad ending is detected, force emit EOS by modifying logits
        # NOTE: this means logits may be inconsistent with latents!
        forced_eos = bool(long_tail or alignment_repetition or token_repetition)
        if forced_eos:
            logger.warning(f"forcing EOS token, {long_tail=}, {alignment_repetition=}, {token_repetition=}")
            logits = mx.where(eos, mx.array(EOS_LOGIT, dtype=logits.dtype), mx.array(-EOS_LOGIT, dtype=logits.dtype))

        self.steps.append(dict(
            text_position=int(self.text_position), cur_text_posn=cur_text_posn, discontinuity=discontinuity,
            false_start=false_start, started=self.started, complete=bool(self.complete), long_tail=bool(long_tail),
            alignment_repetition=bool(alignment_repetition), token_repetition=token_repetition,
            eos_suppressed=eos_suppressed, forced_eos=forced_eos, A_chunk=A_chunk))
        self.curr_frame_pos += 1
        return logits


def mean_of_heads(attns) -> np.ndarray:
    """torch.stack(attns).mean(dim=0) in float32: ((a + b) + c) / 3, the original's rounding."""
    stacked = np.stack([np.asarray(a.astype(mx.float32) if isinstance(a, mx.array) else a, dtype=np.float32)
                        for a in attns])
    total = stacked[0].copy()
    for a in stacked[1:]:
        total += a
    return total / np.float32(len(stacked))


def torch_max(x: np.ndarray, dim: Optional[int] = None) -> np.ndarray:
    """torch's max of a float32 array (the values when `dim` is given), failing on an empty reduction
    as torch does (the original's checks then raise)."""
    if dim is None:
        if x.size == 0:
            raise RuntimeError("max(): Expected reduction dim to be specified for input.numel() == 0. "
                               "Specify the reduction dim with the 'dim' argument.")
        return x.max()
    if x.shape[dim] == 0:
        raise IndexError(f"max(): Expected reduction dim {dim} to have non-zero size.")
    return x.max(axis=dim)


# ------------------------------------------------------------------ the attention spy


class _OutputTap(nn.Module):
    """A projection that hands its output to `sink` (the spy reads the layer's own q from it)."""

    def __init__(self, proj, sink):
        super().__init__()
        self.proj = proj
        self._sink = sink

    def __call__(self, x):
        y = self.proj(x)
        self._sink(y)
        return y


class AttentionSpy(nn.Module):
    """mlx-lm's Llama attention (or fused_layers.FusedAttention) run unchanged, plus the softmax
    attention weights of head `head_idx` for batch row 0: q from the layer's q projection (the q
    rows lead the fused q/k/v projection too), RoPE'd at the cache offset, k from the updated cache;
    scores * scale + the causal mask, softmax in float32 (the original's eager attention)."""

    def __init__(self, attn, head_idx: int, on_weights):
        super().__init__()
        self.attn = attn
        self.head_idx = head_idx
        self._on_weights = on_weights
        self._q = None
        self._proj_name = "qkv_proj" if "qkv_proj" in attn else "q_proj"
        attn[self._proj_name] = _OutputTap(attn[self._proj_name], self._keep_q)

    def _keep_q(self, y):
        self._q = y

    def restore(self):
        """The wrapped attention, its projection untapped."""
        self.attn[self._proj_name] = self.attn[self._proj_name].proj
        return self.attn

    def __call__(self, x, mask=None, cache=None):
        offset = cache.offset if cache is not None else 0
        out = self.attn(x, mask, cache)
        self._on_weights(self.head_weights(offset, cache))
        self._q = None
        return out

    def head_weights(self, offset: int, cache) -> mx.array:
        """(L, S) attention weights of the watched head, batch row 0."""
        keys = cache.keys[0:1, :, : cache.offset]  # (1, H_kv, S, D), rotated
        n_kv, D = keys.shape[1], keys.shape[-1]
        L = self._q.shape[1]
        q = self._q[0:1].reshape(1, L, -1, D)[:, :, self.head_idx][:, None]  # (1, 1, L, D)
        q = rope(self.attn.rope, q, offset).astype(mx.float32)
        n_heads = self.attn.n_heads
        k = keys[:, self.head_idx // (n_heads // n_kv)][:, None].astype(mx.float32)  # (1, 1, S, D)
        scores = (q @ k.swapaxes(-1, -2)) * self.attn.scale
        if L > 1:
            scores = scores + causal_bias(L, k.shape[2])
        return mx.softmax(scores, axis=-1)[0, 0]
