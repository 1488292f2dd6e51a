"""fast_decode's logits processing and draw, compiled on the device: the mirror loop's processors
(CFG, repetition penalty, temperature, min-p, top-p, softmax, the inverse-CDF draw) in the
original's order, with the seen-token set kept as a device mask (no host round trip inside a step)."""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import mlx.core as mx
import numpy as np

from .sampling import MLXDraw, ReplayDraw


@lru_cache(maxsize=16)  # one compiled function per setting: compiling costs ~1-2 s on the CPU
def make_sampler(*, cfg_weight: float, repetition_penalty: float, temperature: float, min_p: float,
                 top_p: float, greedy: bool = False) -> Callable:
    """Compiled (logits (2, V), seen (V,) bool, u scalar) -> (token (1,) int32, seen with the token
    added), in the original's order. Half-precision logits are processed in float32 (a no-op for
    float32 ones): a bfloat16 cumulative sum over 8194 probabilities would round the CDF to steps
    of 2^-8 near 1 and drop or merge the unlikely tokens' share of the draw."""
    neg_inf = -float("inf")

    def sample(logits, seen, u):
        logits = logits.astype(mx.float32)
        cond, uncond = logits[0:1], logits[1:2]
        x = cond + mx.array(cfg_weight, logits.dtype) * (cond - uncond)
        penalized = mx.where(x < 0, x * repetition_penalty, x / repetition_penalty)
        x = mx.where(seen[None], penalized, x)
        if temperature != 1.0:
            x = x / temperature
        n = x.shape[-1]
        positions = mx.arange(n)
        # min-p: below min_p x the top probability goes, the top token stays
        probs = mx.softmax(x, axis=-1)
        remove = probs < min_p * mx.max(probs, axis=-1, keepdims=True)
        remove = remove & (positions[None] != mx.argmax(probs, axis=-1, keepdims=True))
        x = mx.where(remove, neg_inf, x)
        if top_p < 1.0:  # at 1.0 top-p drops only entries whose probability is already 0: a no-op
            # ascending sort, drop cumulative <= 1 - top_p, the last (largest) stays
            order = mx.argsort(x, axis=-1)
            cumulative = mx.cumsum(mx.softmax(mx.take_along_axis(x, order, axis=-1), axis=-1), axis=-1)
            remove_sorted = (cumulative <= (1 - top_p)) & (positions[None] < n - 1)
            remove = mx.put_along_axis(mx.zeros_like(remove_sorted), order, remove_sorted, axis=-1)
            x = mx.where(remove, neg_inf, x)
        probs = mx.softmax(x, axis=-1)
        if greedy:
            token = mx.argmax(probs, axis=-1).astype(mx.int32)
        else:
            cdf = mx.cumsum(probs, axis=-1)
            token = mx.minimum(mx.sum(cdf <= u * cdf[..., -1:], axis=-1), n - 1).astype(mx.int32)
        return token, seen | (positions == token)

    return mx.compile(sample)


class Uniforms:
    """The step's uniform on the device, from the draw object the mirror loop takes (a replay's
    record uploaded once)."""

    def __init__(self, draw):
        self.replay = draw.uniforms if isinstance(draw, ReplayDraw) else None
        self.key = draw.key if isinstance(draw, MLXDraw) else None
        if self.replay is not None:
            self.recorded = mx.array(np.asarray(self.replay, dtype=np.float32))
            self.placeholder = mx.array(0.5, dtype=mx.float32)

    def __call__(self, step: int) -> mx.array:
        if self.replay is not None:  # past the record: a placeholder, refused by `check` if used
            return self.recorded[step] if step < self.replay.size else self.placeholder
        if self.key is not None:
            self.key, key = mx.random.split(self.key)
            return mx.random.uniform(key=key)
        return mx.random.uniform()

    def check(self, step: int) -> None:
        if self.replay is not None and step >= self.replay.size:
            raise IndexError(f"no recorded uniform for decode step {step} ({self.replay.size} recorded)")
