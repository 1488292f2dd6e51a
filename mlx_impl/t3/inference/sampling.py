"""Logits processing and token draws of T3.inference, in the original's order.

The original (chatterbox/models/t3/t3.py, T3.inference) processes the CFG-combined logits of each
step with HF transformers' RepetitionPenaltyLogitsProcessor, then `logits / temperature`, then
MinPLogitsWarper, then TopPLogitsWarper, then softmax and `torch.multinomial`. These classes mirror
the HF ones (transformers 5.2 `generation/logits_process.py`) on (1, V) float32 scores.

The draw is pluggable (`Draw`): MLX's own generator, a replay of recorded uniforms through the
inverse-CDF sampler that the reference export puts in place of `torch.multinomial`, or greedy.
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence

import mlx.core as mx
import numpy as np

FILTER_VALUE = -float("inf")


def cfg_combine(logits_step: mx.array, cfg_weight: float) -> mx.array:
    """cond + cfg * (cond - uncond) from the (2, V) logits of the CFG pair (row 1 unconditional)."""
    cond, uncond = logits_step[0:1], logits_step[1:2]
    cfg = mx.array(cfg_weight, dtype=cond.dtype)
    return cond + cfg * (cond - uncond)


class RepetitionPenaltyLogitsProcessor:
    """Every id seen so far (the first start-of-speech token included): score / penalty where
    score >= 0, score * penalty where score < 0 (HF gather / where / scatter)."""

    def __init__(self, penalty: float):
        if not isinstance(penalty, float) or not (penalty > 0):
            raise ValueError(f"`penalty` has to be a strictly positive float, but is {penalty}")
        self.penalty = penalty

    def __call__(self, input_ids, scores: mx.array) -> mx.array:
        ids = np.unique(np.asarray(input_ids).reshape(-1))
        mask = np.zeros(scores.shape[-1], dtype=bool)
        mask[ids] = True  # ids out of range raise here, as torch.gather does
        penalized = mx.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return mx.where(mx.array(mask)[None], penalized, scores)


def apply_temperature(scores: mx.array, temperature: float) -> mx.array:
    """The original divides only when temperature != 1.0."""
    return scores / temperature if temperature != 1.0 else scores


class TopKLogitsWarper:
    """Scores below the k-th largest set to filter_value (HF's: `scores < topk(scores, k)[0][..., -1]`;
    ties at the k-th value all kept). Chatterbox Turbo's inference_turbo uses it (top_k 1000)."""

    def __init__(self, top_k: int, filter_value: float = FILTER_VALUE, min_tokens_to_keep: int = 1):
        if not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"`top_k` has to be a strictly positive integer, but is {top_k}")
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value

    def __call__(self, input_ids, scores: mx.array) -> mx.array:
        top_k = min(self.top_k, scores.shape[-1])
        kth = mx.sort(scores, axis=-1)[..., -top_k][..., None]  # the k-th largest
        return mx.where(scores < kth, mx.array(self.filter_value, dtype=scores.dtype), scores)


def turbo_logits_processors(temperature: float, top_k: int, top_p: float, repetition_penalty: float) -> list:
    """T3.inference_turbo's processors, in its order and on its conditions: temperature (when > 0
    and != 1), top-k (when > 0), top-p (when < 1), then the repetition penalty (when != 1), which
    thus runs on logits already filtered to -inf."""
    out = []
    if temperature > 0 and temperature != 1.0:
        out.append(lambda ids, scores: scores / temperature)
    if top_k > 0:
        out.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        out.append(TopPLogitsWarper(top_p))
    if repetition_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    return out


class MinPLogitsWarper:
    """Drop tokens whose probability is below min_p times the top token's; keep >= 1."""

    def __init__(self, min_p: float, filter_value: float = FILTER_VALUE, min_tokens_to_keep: int = 1):
        if not (0 <= min_p <= 1.0):
            raise ValueError(f"`min_p` has to be a float in the [0, 1] interval, but is {min_p}")
        if not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
            raise ValueError(f"`min_tokens_to_keep` has to be a positive integer, but is {min_tokens_to_keep}")
        self.min_p = min_p
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores: mx.array) -> mx.array:
        probs = mx.softmax(scores, axis=-1)
        top_probs = mx.max(probs, axis=-1, keepdims=True)
        remove = probs < self.min_p * top_probs
        k = min(self.min_tokens_to_keep, probs.shape[-1])
        keep_idx = mx.argsort(-probs, axis=-1)[..., :k] if k > 1 else mx.argmax(probs, axis=-1, keepdims=True)
        keep = mx.put_along_axis(mx.zeros_like(remove), keep_idx, mx.array(True), axis=-1)
        return mx.where(remove & ~keep, mx.array(self.filter_value, dtype=scores.dtype), scores)


class TopPLogitsWarper:
    """Nucleus filtering: sort ascending, drop tokens whose cumulative probability is <= 1 - top_p
    (probability-0 tokens are dropped even at top_p = 1.0); the last min_tokens_to_keep stay."""

    def __init__(self, top_p: float, filter_value: float = FILTER_VALUE, min_tokens_to_keep: int = 1):
        top_p = float(top_p)
        if top_p < 0 or top_p > 1.0:
            raise ValueError(f"`top_p` has to be a float > 0 and < 1, but is {top_p}")
        if not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
            raise ValueError(f"`min_tokens_to_keep` has to be a positive integer, but is {min_tokens_to_keep}")
        self.top_p = top_p
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores: mx.array) -> mx.array:
        sorted_indices = mx.argsort(scores, axis=-1)
        sorted_logits = mx.take_along_axis(scores, sorted_indices, axis=-1)
        # torch's CPU cumsum accumulates float32 in double and rounds each partial sum: do the same
        # (on the CPU stream: float64 is CPU-only in MLX).
        probs = mx.softmax(sorted_logits, axis=-1)
        cumulative = mx.cumsum(probs.astype(mx.float64, stream=mx.cpu), axis=-1, stream=mx.cpu).astype(
            mx.float32, stream=mx.cpu)
        remove_sorted = cumulative <= (1 - self.top_p)
        n = remove_sorted.shape[-1]
        keep_tail = mx.arange(n) >= n - self.min_tokens_to_keep
        remove_sorted = remove_sorted & ~keep_tail
        remove = mx.put_along_axis(mx.zeros_like(remove_sorted), sorted_indices, remove_sorted, axis=-1)
        return mx.where(remove, mx.array(self.filter_value, dtype=scores.dtype), scores)


# ---------------------------------------------------------------- draws


class Draw(Protocol):
    def __call__(self, probs: mx.array, step: int) -> int:
        """The token drawn at decode step `step` from probabilities `probs` (1, V)."""


def inverse_cdf_token(probs: np.ndarray, u: float) -> int:
    """The reference export's stand-in for torch.multinomial, mirrored exactly."""
    p = np.asarray(probs, dtype=np.float32).reshape(-1)
    cdf = np.cumsum(p.astype(np.float64))
    return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), p.size - 1))


def host_probs(probs: mx.array) -> np.ndarray:
    """The probabilities as numpy float32 (numpy has no bfloat16: a half-precision T3's are widened)."""
    return np.array(probs.astype(mx.float32) if probs.dtype != mx.float32 else probs)


class ReplayDraw:
    """Inverse-CDF draw with the step's recorded float64 uniform (fixture `t3.uniform_draws`)."""

    def __init__(self, uniforms: Sequence[float]):
        self.uniforms = np.asarray(uniforms, dtype=np.float64).reshape(-1)

    def __call__(self, probs: mx.array, step: int) -> int:
        if step >= self.uniforms.size:
            raise IndexError(f"no recorded uniform for decode step {step} ({self.uniforms.size} recorded)")
        return inverse_cdf_token(host_probs(probs), float(self.uniforms[step]))


class GreedyDraw:
    """argmax of the probabilities (first index of the max)."""

    def __call__(self, probs: mx.array, step: int) -> int:
        return int(np.argmax(host_probs(probs).reshape(-1)))


class MLXDraw:
    """MLX's own generator: categorical draw from the probabilities (optionally with a PRNG key)."""

    def __init__(self, key: Optional[mx.array] = None):
        self.key = key

    def __call__(self, probs: mx.array, step: int) -> int:
        key = None
        if self.key is not None:
            self.key, key = mx.random.split(self.key)
        return int(mx.random.categorical(mx.log(probs), axis=-1, key=key).item())
