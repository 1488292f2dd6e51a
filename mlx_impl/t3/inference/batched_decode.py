"""Batched T3 decoding, MLX only (the original decodes one text at a time): several texts, each with
its own voice, decoded together, each row the tokens of its one-text `fast_decode`.

The batch holds 2 B rows, each text's CFG pair (cond, uncond) side by side. Prompts of different
lengths are left-padded to one length P with zero embeddings; an additive attention bias hides
the pad keys from every real query (a pad query sees only itself, so that no softmax row is empty
and the pad keys' values stay finite). Each row's positions are then shifted by its padding: Llama's
RoPE depends only on the distance between query and key, so the scores are the one-text run's up to
float32 rounding (tests/unit/test_batched_decode.py measures the logits). T3's learned position
embeddings are added before the padding, per text, as in the one-text run.

Per step: one backbone call on the (2 B, 1) tokens, then `BatchedSampler` (device_sampler's
processors row by row: CFG, each row's repetition-penalty history as a device mask, temperature,
min-p, top-p, the inverse-CDF draw with each row's uniform), queued ahead as in fast_decode so
that the host reads step i's tokens (one sync) while the device runs step i + 1. A row that drew
the stop token is finished: its later tokens are dropped (it is still computed, the batch keeps its
shape); the decode ends when every row finished or after `max_new_tokens`.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, List, Optional, Sequence

import mlx.core as mx
import numpy as np
from mlx_lm.models.base import scaled_dot_product_attention

from ...backend import native
from .device_sampler import Uniforms
from .fused_layers import is_fused, kernel_rope_applies, rope_tables
from .layer_step import CompiledStep, finish_layer
from .sampling import GreedyDraw, MLXDraw, ReplayDraw

NEG_INF = -float("inf")


def supports(draws) -> bool:
    return all(d is None or isinstance(d, (ReplayDraw, MLXDraw, GreedyDraw)) for d in draws)


def inference_batch(t3, *, t3_conds: Sequence, text_tokens: Sequence, max_new_tokens: Optional[int] = None,
                    cfg_weight: float = 0.5, **decode_options) -> List[np.ndarray]:
    """T3.inference for several texts (each (2, n + 2) with [START]/[STOP], the CFG copy in row 1)
    and their voices (one T3Cond each), decoded together: each text's input embeddings as
    T3.inference builds them, then `batched_decode`. (T3.inference_batch checks the [START]/[STOP]
    tokens first, as T3.inference does.)"""
    if t3.is_gpt or t3.hp.is_multilingual:
        raise NotImplementedError("batched decoding runs the English T3 (the LLaMA backbone with CFG)")
    if len(t3_conds) != len(text_tokens):
        raise ValueError(f"inference_batch: {len(text_tokens)} texts and {len(t3_conds)} conditionings; "
                         f"one conditioning per text expected")
    embeds = []
    for cond, tokens in zip(t3_conds, text_tokens):
        tokens = np.atleast_2d(np.asarray(tokens)).astype(np.int32)
        if tokens.shape[0] != 2:
            raise ValueError(f"inference_batch: each text's tokens are its CFG pair (2, n), not {tokens.shape}")
        start = np.full_like(tokens[:, :1], t3.hp.start_speech_token)
        e, _ = t3.prepare_input_embeds(t3_cond=cond, text_tokens=tokens, speech_tokens=start, cfg_weight=cfg_weight)
        embeds.append(e)
    if max_new_tokens is None:
        max_new_tokens = t3.hp.max_speech_tokens
    return batched_decode(t3, embeds, max_new_tokens=max_new_tokens, cfg_weight=cfg_weight, **decode_options)


def batched_decode(t3, row_embeds: Sequence[mx.array], *, max_new_tokens: int, temperature: float, top_p: float,
                   min_p: float, repetition_penalty: float, cfg_weight: float, draws: Optional[Sequence] = None,
                   on_token: Optional[Callable[[int, int, int], None]] = None) -> List[np.ndarray]:
    """Speech tokens (1, n_r) of each text, decoded together from each text's CFG-pair input
    embeddings (2, len_r, dim). `draws`: one per text (ReplayDraw, MLXDraw, GreedyDraw or None for
    MLXDraw(); greedy for all texts or none). `on_token(row, step, token)` reports each row's
    tokens until its stop token."""
    B = len(row_embeds)
    draws = [d if d is not None else MLXDraw() for d in (draws if draws is not None else [None] * B)]
    if B == 0 or len(draws) != B:
        raise ValueError(f"batched_decode: {B} texts and {len(draws)} draws; one draw per text expected")
    if not supports(draws):
        raise TypeError("batched_decode draws with ReplayDraw, MLXDraw or GreedyDraw")
    greedy = [isinstance(d, GreedyDraw) for d in draws]
    if any(greedy) and not all(greedy):
        raise ValueError("batched_decode: greedy draws for every text or for none")
    for e in row_embeds:
        if e.ndim != 3 or e.shape[0] != 2:
            raise ValueError(f"batched_decode: each text's embeds are its CFG pair (2, len, dim), not {e.shape}")
    t3.check_decode_args(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, min_p=min_p,
                         repetition_penalty=repetition_penalty, cfg_weight=cfg_weight)
    sampler = make_batched_sampler(cfg_weight=float(cfg_weight), repetition_penalty=float(repetition_penalty),
                                   temperature=float(temperature), min_p=float(min_p), top_p=float(top_p),
                                   greedy=all(greedy))
    uniforms = RowUniforms(draws)
    hp = t3.hp
    dtype = t3.speech_emb.weight.dtype
    bos = t3.speech_token_embed(hp.start_speech_token, 0).astype(dtype)
    embeds, pads = left_padded([mx.concatenate([e.astype(dtype), mx.concatenate([bos, bos])], axis=1)
                                for e in row_embeds])
    cache = t3.make_cache()
    logits = prefill(t3, embeds, pads, cache)
    step_logits = BatchedStep(t3, pads)
    seen = mx.broadcast_to(mx.arange(hp.speech_tokens_dict_size) == hp.start_speech_token,
                           (B, hp.speech_tokens_dict_size))

    def sample(logits, seen, i):
        return sampler(logits, seen, uniforms(i))

    token, seen = sample(logits, seen, 0)
    mx.async_eval(token, seen)
    predicted: List[List[int]] = [[] for _ in range(B)]
    active = np.ones(B, dtype=bool)
    for i in range(max_new_tokens):
        if i + 1 < max_new_tokens:  # queue step i + 1 before reading step i's tokens
            embed = t3.speech_emb(token[:, None]) + t3.speech_pos_emb.get_fixed_embedding(i + 1)
            next_logits = step_logits(mx.repeat(embed, 2, axis=0), cache)
            next_token, next_seen = sample(next_logits, seen, i + 1)
            mx.async_eval(next_token, next_seen)
        tokens = np.array(token)
        uniforms.check(i, active)
        for r in np.flatnonzero(active):
            t = int(tokens[r])
            predicted[r].append(t)
            if on_token is not None:
                on_token(int(r), i, t)
            if t == hp.stop_speech_token:
                active[r] = False
        if not active.any() or i + 1 >= max_new_tokens:
            break
        token, seen = next_token, next_seen
    return [np.array(p, dtype=np.int32)[None] for p in predicted]


# ------------------------------------------------------------------ padding and the backbone


def left_padded(rows: Sequence[mx.array]):
    """The CFG pairs (2, len_r, dim) stacked as (2 B, P, dim), each left-padded with zeros to the
    longest; and each batch row's pad length (2 B,) int32."""
    P = max(r.shape[1] for r in rows)
    padded = [mx.pad(r, [(0, 0), (P - r.shape[1], 0), (0, 0)]) for r in rows]
    pads = np.repeat([P - r.shape[1] for r in rows], 2).astype(np.int32)
    return mx.concatenate(padded, axis=0), mx.array(pads)


def prompt_bias(pads: mx.array, P: int) -> mx.array:
    """(2 B, 1, P, P) additive bias of the prefill: causal, pad keys hidden from real queries; a pad
    query sees itself only."""
    q, k = mx.arange(P)[:, None], mx.arange(P)[None]
    real_key = k[None] >= pads[:, None, None]
    keep = ((k <= q)[None] & real_key) | (k == q)[None]
    return mx.where(keep, 0.0, NEG_INF).astype(mx.float32)[:, None]


def step_bias(pads: mx.array, S: int) -> mx.array:
    """(2 B, 1, 1, S) additive bias of a one-token step over S keys: the pad keys hidden."""
    return mx.where(mx.arange(S)[None] >= pads[:, None], 0.0, NEG_INF).astype(mx.float32)[:, None, None]


def attend_biased(q, k, v, scale: float, bias: mx.array, cache) -> mx.array:
    """fused_layers.attend with an additive bias per batch row: the CPU attention kernel (float32,
    kernels built), else mlx-lm's scaled_dot_product_attention. (B, H, L, D) -> (B, L, H*D)."""
    B, _, L, _ = q.shape
    if native.applies_to(q):
        return native.kernels().attention(q, k, v, scale, bias).reshape(B, L, -1)
    out = scaled_dot_product_attention(q, k, v, cache=cache, scale=scale, mask=bias.astype(q.dtype))
    return out.reshape(B, L, -1) if L == 1 else out.transpose(0, 2, 1, 3).reshape(B, L, -1)


def biased_layer(layer, x, bias, cache):
    """One backbone layer with the bias: the fused layers' projection, kernels and finish; an
    unfused (mlx-lm) layer takes the bias as its attention mask."""
    if not is_fused_layer(layer):
        return layer(x, bias.astype(x.dtype), cache=cache)
    attn = layer.self_attn
    q, k, v = attn.project(layer.input_layernorm(x), cache.offset)
    k, v = cache.update_and_fetch(k, v)
    return finish_layer(layer, x, attend_biased(q, k, v, attn.scale, bias, cache))


def is_fused_layer(layer) -> bool:
    return hasattr(layer.self_attn, "project")


def prefill(t3, embeds: mx.array, pads: mx.array, cache: list) -> mx.array:
    """Speech-head logits (2 B, V) of the last position of the left-padded prompts, filling `cache`."""
    x = embeds
    bias = prompt_bias(pads, embeds.shape[1])
    for layer, c in zip(t3.tfmr.layers, cache):
        x = biased_layer(layer, x, bias, c)
    return t3.speech_head(t3.tfmr.norm(x)[:, -1, :])


class BatchedStep:
    """One-token steps of the padded batch: layer_step's compiled per-layer calls (fused backbone)
    with the attention over the cache biased per row; an unfused backbone runs its layers plainly."""

    def __init__(self, t3, pads: mx.array):
        self.t3, self.pads = t3, pads
        self.compiled = CompiledStep(t3) if is_fused(t3.tfmr) else None

    def __call__(self, x: mx.array, cache: list) -> mx.array:
        offset = cache[0].offset
        bias = step_bias(self.pads, offset + 1)
        if self.compiled is None:
            for layer, c in zip(self.t3.tfmr.layers, cache):
                x = biased_layer(layer, x, bias, c)
            return self.t3.speech_head(self.t3.tfmr.norm(x)[:, -1, :])
        step, layers = self.compiled, self.compiled.layers
        offset = mx.array(offset, dtype=mx.int32)
        rope0 = layers[0].self_attn.rope
        tables = rope_tables(rope0, offset, 1) if kernel_rope_applies(rope0, x) else None
        q, k, v = step.first(x, offset, tables)
        for i, layer in enumerate(layers):
            k, v = cache[i].update_and_fetch(k, v)
            out = attend_biased(q, k, v, layer.self_attn.scale, bias, cache[i])
            if i + 1 < len(layers):
                x, q, k, v = step.links[i](x, out, offset, tables)
        return step.last(x, out)


# ------------------------------------------------------------------ sampling, row by row


@lru_cache(maxsize=16)
def make_batched_sampler(*, cfg_weight: float, repetition_penalty: float, temperature: float, min_p: float,
                         top_p: float, greedy: bool = False) -> Callable:
    """device_sampler.make_sampler for B texts at once: compiled (logits (2 B, V) of the CFG pairs,
    seen (B, V) bool, u (B,)) -> (tokens (B,) int32, seen with each row's token added). The same
    operations along each row (test_batched_decode checks the tokens and masks against make_sampler's,
    row by row)."""

    def sample(logits, seen, u):
        logits = logits.astype(mx.float32)
        cond, uncond = logits[0::2], logits[1::2]
        x = cond + mx.array(cfg_weight, logits.dtype) * (cond - uncond)
        penalized = mx.where(x < 0, x * repetition_penalty, x / repetition_penalty)
        x = mx.where(seen, penalized, x)
        if temperature != 1.0:
            x = x / temperature
        n = x.shape[-1]
        positions = mx.arange(n)[None]
        probs = mx.softmax(x, axis=-1)
        remove = probs < min_p * mx.max(probs, axis=-1, keepdims=True)
        remove = remove & (positions != mx.argmax(probs, axis=-1, keepdims=True))
        x = mx.where(remove, NEG_INF, x)
        if top_p < 1.0:
            order = mx.argsort(x, axis=-1)
            cumulative = mx.cumsum(mx.softmax(mx.take_along_axis(x, order, axis=-1), axis=-1), axis=-1)
            remove_sorted = (cumulative <= (1 - top_p)) & (positions < n - 1)
            remove = mx.put_along_axis(mx.zeros_like(remove_sorted), order, remove_sorted, axis=-1)
            x = mx.where(remove, NEG_INF, x)
        probs = mx.softmax(x, axis=-1)
        if greedy:
            token = mx.argmax(probs, axis=-1).astype(mx.int32)
        else:
            cdf = mx.cumsum(probs, axis=-1)
            token = mx.minimum(mx.sum(cdf <= u[:, None] * cdf[..., -1:], axis=-1), n - 1).astype(mx.int32)
        return token, seen | (positions == token[:, None])

    return mx.compile(sample)


class RowUniforms:
    """Each row's uniform of a step, (B,) on the device: replayed records as one uploaded table,
    MLXDraw's through device_sampler.Uniforms row by row; greedy rows read none (and take nothing
    from MLX's generator)."""

    def __init__(self, draws: Sequence):
        self.rows = [Uniforms(d) for d in draws]
        self.replays = [u.replay for u in self.rows]
        self.table = None
        if all(isinstance(d, GreedyDraw) for d in draws):
            self.table = mx.zeros((len(draws), 1), dtype=mx.float32)
        elif all(r is not None for r in self.replays):
            width = max(r.size for r in self.replays) + 1  # the last column: placeholders
            table = np.full((len(draws), width), 0.5, dtype=np.float32)
            for i, r in enumerate(self.replays):
                table[i, : r.size] = r
            self.table = mx.array(table)

    def __call__(self, step: int) -> mx.array:
        if self.table is not None:
            return self.table[:, min(step, self.table.shape[1] - 1)]
        return mx.stack([u(step) for u in self.rows]).astype(mx.float32)

    def check(self, step: int, active: np.ndarray) -> None:
        for row, uniform in enumerate(self.rows):
            if active[row]:
                uniform.check(step)
