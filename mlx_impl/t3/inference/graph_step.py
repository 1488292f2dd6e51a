"""The "graph" step kind: T3's one-token decode step as ONE compiled call (the default on MLX's
CUDA backend in float32, bfloat16 and float16, whose one-token step is bound by host work per
kernel and per Python call; on the CPU it runs too, with MLX ops for the attention)."""
from __future__ import annotations

import weakref

import mlx.core as mx

from .cuda_kernels import attend_appended_cuda, cuda_attend_applies, gemv, gemv_applies
from .fused_layers import is_fused, kernel_rope_applies, rope, rope_tables


class GraphStep:
    """speech_logits for one-token steps as one compiled call per step. The KV cache becomes two
    stacked buffers, keys and values (layers, B, heads, capacity, D), with the valid length as an
    array input, so that one trace serves every step. Each layer attends over the cache's first
    `offset` positions plus its new key / value (`attend_appended`) and writes them into a small
    (layers, B, 2, heads, D) buffer that the call returns; two slice updates then store it in the
    cache (on CUDA the attention kernels write the cache in place instead: `writes_in_place`).
    It takes over mlx-lm's `cache` after the prefill (which it leaves as it was):
    build one per decode (fast_decode does). The weights are the trace's constants. (An earlier
    one-call step wrote the cache inside the trace at a dynamic offset, which cost more kernels
    than the Python it saved: 156 vs 214 tokens/s on the H200.)

    On CUDA (float32, bfloat16, float16: the kernels read the weights in their own dtype) each
    layer's RoPE + attention + new-key write is one kernel
    (`attention_in_kernel`), and each matrix product one kernel with its RMSNorm, SwiGLU or
    residual add (`products_in_kernels`); elsewhere MLX ops, with the residual adds inside the o /
    down products (`finish_addmm`)."""

    # capacity steps: the buffers hold the decode's positions rounded up to this (keys + values:
    # 126 MB float32 per 256 positions); on CUDA a new capacity compiles a new attention kernel
    GROW = 256

    def __init__(self, t3, capacity: int = 0):
        if not is_fused(t3.tfmr):
            raise TypeError("GraphStep needs fused projections (T3.fuse_projections)")
        self.layers, self.norm, self.head = t3.tfmr.layers, t3.tfmr.norm, t3.speech_head
        attn = self.layers[0].self_attn
        if attn.n_kv_heads != attn.n_heads:
            raise TypeError("GraphStep expects as many key / value heads as query heads")
        self.capacity_hint = capacity
        self.layer_ids = [mx.array([i], dtype=mx.int32) for i in range(len(self.layers))]
        self.source = None  # the mlx-lm cache taken over
        self.in_place = None  # whether the CUDA kernels' in-place cache writes work (checked on the first step)
        self.step = mx.compile(weakly(self._step))

    def attention_in_kernel(self, x, head_dim: int, capacity: int) -> bool:
        return cuda_attend_applies(self.layers[0].self_attn.rope, x.dtype, head_dim, capacity)

    def products_in_kernels(self, x) -> bool:
        return gemv_applies(x)

    def _step(self, x, keys, values, offset):
        L, B, H, capacity, D = keys.shape
        rope0 = self.layers[0].self_attn.rope
        in_kernel = self.attention_in_kernel(x, D, capacity)
        tables = rope_tables(rope0, offset, 1) if in_kernel or kernel_rope_applies(rope0, x) else None
        step = attend_appended if in_kernel else attend_appended_unfused
        new_kv = mx.zeros((L, B, 2, H, D), x.dtype)
        if in_kernel and self.products_in_kernels(x):
            return self._step_gemv(x, keys, values, offset, tables, new_kv)
        for layer, layer_id in zip(self.layers, self.layer_ids):
            attn = layer.self_attn
            qkv = attn.qkv_proj(layer.input_layernorm(x))
            out, new_kv = step(qkv, attn.rope, tables, keys, values, offset, layer_id, new_kv, attn.scale)
            x = finish_addmm(layer, x, out)
        return self.head(self.norm(x)[:, -1, :]), new_kv

    def _step_gemv(self, x, keys, values, offset, tables, new_kv):
        """_step with five kernels a layer: norm + qkv, attention, o + residual, norm + gate / up,
        SwiGLU + down + residual (`gemv`), and the final norm inside the head's product."""
        for layer, layer_id in zip(self.layers, self.layer_ids):
            attn = layer.self_attn
            qkv = gemv(x, attn.qkv_proj.weight, norm=layer.input_layernorm)
            out, new_kv = attend_appended(qkv, attn.rope, tables, keys, values, offset, layer_id, new_kv, attn.scale)
            h = gemv(out, attn.o_proj.weight, residual=x)
            gate_up = gemv(h, layer.mlp.gate_up_proj.weight, norm=layer.post_attention_layernorm)
            x = gemv(gate_up, layer.mlp.down_proj.weight, residual=h, swiglu=True)
        return gemv(x[:, -1:], self.head.weight, norm=self.norm)[:, 0], new_kv

    def _take_over(self, cache: list) -> None:
        self.source, self.offset = cache, cache[0].offset
        self.keys = self._padded(mx.stack([c.keys[..., : self.offset, :] for c in cache]), self.capacity_hint)
        self.values = self._padded(mx.stack([c.values[..., : self.offset, :] for c in cache]), self.capacity_hint)

    def _padded(self, stacked: mx.array, capacity: int) -> mx.array:
        """(layers, B, heads, length, D) -> the same with room for at least one more position."""
        length = stacked.shape[3]
        capacity = capacity_for(max(capacity, length + 1), self.GROW)
        pad = mx.zeros((*stacked.shape[:3], capacity - length, stacked.shape[4]), stacked.dtype)
        return mx.concatenate([stacked, pad], axis=3)

    def __call__(self, x: mx.array, cache: list) -> mx.array:
        if x.shape[1] != 1:
            raise ValueError(f"GraphStep runs one-token steps, not {x.shape[1]} positions")
        if cache is not self.source:
            self._take_over(cache)
        if self.offset >= self.keys.shape[3]:  # full: grow (and retrace)
            self.keys = self._padded(self.keys[:, :, :, : self.offset], 0)
            self.values = self._padded(self.values[:, :, :, : self.offset], 0)
        logits, new_kv = self.step(x, self.keys, self.values, mx.array(self.offset, dtype=mx.int32))
        o = self.offset
        if not (self.writes_in_place(x) and self._in_place_confirmed(new_kv, o)):
            self.keys[:, :, :, o] = new_kv[:, :, 0]
            self.values[:, :, :, o] = new_kv[:, :, 1]
        self.offset += 1
        return logits

    def writes_in_place(self, x) -> bool:
        """Whether the step's attention kernels write the new keys / values into the cache buffers
        themselves (`attend_appended_cuda`), so that no slice update is needed."""
        return self.in_place is not False and self.attention_in_kernel(x, self.keys.shape[4], self.keys.shape[3])

    def _in_place_confirmed(self, new_kv, position: int) -> bool:
        """On the first in-place step: whether the kernels' writes reached the buffers (they would
        not if MLX handed the kernel a copy); if not, this step and all later ones use slice updates."""
        if self.in_place is None:
            mx.eval(new_kv)
            if not mx.any(new_kv[:, :, 0] != 0).item():  # nothing to tell the write from the zero padding
                return False
            self.in_place = bool(mx.array_equal(self.keys[:, :, :, position], new_kv[:, :, 0]).item()
                                 and mx.array_equal(self.values[:, :, :, position], new_kv[:, :, 1]).item())
        return self.in_place


def weakly(method):
    """`method` called through a weak reference to its object. A compiled bound method kept on its
    own object is a reference cycle: the step, its KV buffers (2 x 252 MB in float32) and the
    prefill cache it took over would stay held after the decode until Python's cyclic collector
    ran, one more set for every generate() call."""
    ref = weakref.WeakMethod(method)
    return lambda *args: ref()(*args)


def capacity_for(positions: int, grow: int = GraphStep.GROW) -> int:
    """The buffers' capacity for `positions`: rounded up to a multiple of `grow`."""
    return -(-max(positions, 1) // grow) * grow


def finish_addmm(layer, x, attn_out):
    """layer_step.finish_layer with each residual add inside its matrix product (`mx.addmm`: one
    kernel instead of a product and an add on a GPU; the sum is rounded once instead of twice)."""
    B = x.shape[0]
    h = mx.addmm(x.reshape(B, -1), attn_out.reshape(B, -1), layer.self_attn.o_proj.weight.T)
    act = layer.mlp.activation(layer.mlp.gate_up_proj(layer.post_attention_layernorm(h)))
    return mx.addmm(h, act, layer.mlp.down_proj.weight.T).reshape(x.shape)


def attend_appended(qkv, rope_module, tables, keys, values, offset, layer_id, new_kv, scale: float):
    """One layer's one-token attention for GraphStep. qkv: the projection row (B, 1, 3 H D: q, k, v);
    rope_module / tables: RoPE and its cos / sin (1, D/2) at this position (`rope_tables`); keys /
    values: the stacked cache (layers, B, H, capacity, D), valid up to `offset` (int32, one element);
    layer_id: (1,) int32; new_kv: (layers, B, 2, H, D). Returns the attention of the rotated query
    over the valid positions plus the rotated new key / the new value, (B, 1, H D), and new_kv with
    this layer's key / value in. On MLX's CUDA backend one custom kernel (`attend_appended_cuda`),
    RoPE included; otherwise `attend_appended_unfused`."""
    L, B, H, capacity, D = keys.shape
    if not cuda_attend_applies(rope_module, qkv.dtype, D, capacity):
        return attend_appended_unfused(qkv, rope_module, tables, keys, values, offset, layer_id, new_kv, scale)
    return attend_appended_cuda(qkv, tables, keys, values, offset, layer_id, new_kv, scale)


def attend_appended_unfused(qkv, rope_module, tables, keys, values, offset, layer_id, new_kv, scale: float):
    """attend_appended with RoPE as its own op (`rope`: the CPU kernel or mx.fast.rope)."""
    L, B, H, capacity, D = keys.shape
    heads = qkv.reshape(B, 1, 3 * H, D).transpose(0, 2, 1, 3)
    qk = rope(rope_module, heads[:, : 2 * H], offset.reshape(()), tables).astype(qkv.dtype)
    return attend_appended_ops(qk, heads[:, 2 * H:], keys, values, offset, layer_id, new_kv, scale)


def attend_appended_ops(qk, v, keys, values, offset, layer_id, new_kv, scale: float):
    """The attention in MLX ops over the whole capacity, the positions past `offset` masked; qk:
    rotated queries and keys (B, 2H, 1, D), v (B, H, 1, D)."""
    L, B, H, capacity, D = keys.shape
    i = layer_id.reshape(())
    q, k = qk[:, :H] * scale, qk[:, H:]
    cached = mx.where(mx.arange(capacity) < offset.reshape(()), q @ mx.take(keys, i, axis=0).swapaxes(-1, -2),
                      -float("inf"))
    p = mx.softmax(mx.concatenate([cached, q @ k.swapaxes(-1, -2)], axis=-1), axis=-1, precise=True)
    out = p[..., :capacity] @ mx.take(values, i, axis=0) + p[..., capacity:] * v
    this_layer = (mx.arange(L) == i)[:, None, None, None, None]
    new_kv = mx.where(this_layer, mx.stack([k[:, :, 0], v[:, :, 0]], axis=1)[None], new_kv)
    return out.reshape(B, 1, H * D), new_kv  # (B, H, 1, D) is laid out as (B, 1, H*D)
