"""Fast T3 decoding, MLX only (the original has no counterpart; `T3.inference_from_embeds` is the
step-by-step mirror of the original's loop and stays the parity reference).

Same math as the original's loop — CFG, repetition penalty, temperature, min-p, top-p, softmax and
an inverse-CDF draw — with three changes that only move work:
- the whole logits processing and the draw run on the device as one compiled function, with the
  seen-token set kept as a device mask (`device_sampler`);
- the next step is queued before the previous token is read (`mx.async_eval`), so the host builds
  step i+1 while the device runs step i; the stop token is therefore noticed one step late (that
  extra step's result is discarded);
- float32 cumulative sums on the device where the mirror loop sums in float64 on the host (the
  draw) or on the CPU stream (top-p, matching torch's CPU cumsum): a token can differ only where a
  uniform or the top-p threshold falls within float32 rounding of a CDF boundary.

Each one-token step runs as `T3.compile_steps` says (`step_kinds.make_step`): on a model with fused
projections (`fused_layers`) one compiled call per layer on the CPU (`layer_step`, bit-identical
logits), one compiled call per step with CUDA kernels on MLX's CUDA backend (`graph_step`).
"""
from __future__ import annotations

from typing import Callable, List, Optional

import mlx.core as mx
import numpy as np

from .device_sampler import Uniforms, make_sampler
from .sampling import GreedyDraw, MLXDraw, ReplayDraw
from .step_kinds import make_step


def supports(t3, draw) -> bool:
    """The draws it replays, on a T3 without the multilingual AlignmentStreamAnalyzer (whose checks
    read attention weights and change the logits at every step: T3's step-by-step loop runs it)."""
    return not t3.hp.is_multilingual and (draw is None or isinstance(draw, (ReplayDraw, MLXDraw, GreedyDraw)))


def fast_decode(t3, embeds: mx.array, *, max_new_tokens: int, temperature: float, top_p: float, min_p: float,
                repetition_penalty: float, cfg_weight: float, draw=None,
                on_token: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """Speech tokens (1, n) decoded from the CFG pair's input embeddings (2, len, dim)."""
    draw = draw if draw is not None else MLXDraw()
    if t3.hp.is_multilingual:
        raise NotImplementedError("fast_decode does not run the multilingual AlignmentStreamAnalyzer "
                                  "(T3.inference_from_embeds decodes the multilingual T3 step by step)")
    if not supports(t3, draw):
        raise TypeError(f"fast_decode draws with ReplayDraw, MLXDraw or GreedyDraw, not {type(draw).__name__}")
    t3.check_decode_args(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, min_p=min_p,
                         repetition_penalty=repetition_penalty, cfg_weight=cfg_weight)
    sampler = make_sampler(cfg_weight=float(cfg_weight), repetition_penalty=float(repetition_penalty),
                           temperature=float(temperature), min_p=float(min_p), top_p=float(top_p),
                           greedy=isinstance(draw, GreedyDraw))
    uniform = Uniforms(draw)
    hp = t3.hp
    V = hp.speech_tokens_dict_size
    stop = hp.stop_speech_token
    bos = t3.speech_token_embed(hp.start_speech_token, 0)
    cache = t3.make_cache()
    logits = t3.speech_logits(mx.concatenate([embeds, mx.concatenate([bos, bos])], axis=1), cache)
    step_logits = make_step(t3, capacity=embeds.shape[1] + 1 + max_new_tokens)
    seen = mx.arange(V) == hp.start_speech_token

    def step(logits, seen, i):
        return sampler(logits, seen, uniform(i))

    token, seen = step(logits, seen, 0)
    mx.async_eval(token, seen)
    predicted: List[int] = []
    for i in range(max_new_tokens):
        if i + 1 < max_new_tokens:  # queue step i+1 before reading token i
            embed = t3.speech_token_embed(token, i + 1)
            next_logits = step_logits(mx.concatenate([embed, embed]), cache)
            next_token, next_seen = step(next_logits, seen, i + 1)
            mx.async_eval(next_token, next_seen)
        t = int(token.item())
        uniform.check(i)
        predicted.append(t)
        if on_token is not None:
            on_token(i, t)
        if t == stop or i + 1 >= max_new_tokens:
            break
        token, seen = next_token, next_seen
    return np.array(predicted, dtype=np.int32)[None]
