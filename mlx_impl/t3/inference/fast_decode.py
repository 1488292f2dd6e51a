"""Fast T3 decoding, MLX only (the original has no counterpart; `T3.inference_from_embeds` is the
step-by-step mirror of the original's loop and stays the parity reference).

Same math as the original's loop — CFG, repetition penalty, temperature, min-p, top-p, softmax and
an inverse-CDF draw — with three changes that only move work:
- the whole logits processing and the draw run on the device as one compiled function, with the
  seen-token set kept as a device mask (no host round trip inside a step);
- the next step is queued before the previous token is read (`mx.async_eval`), so the host builds
  step i+1 while the device runs step i; the stop token is therefore noticed one step late (that
  extra step's result is discarded);
- float32 cumulative sums on the device where the mirror loop sums in float64 on the host (the
  draw) or on the CPU stream (top-p, matching torch's CPU cumsum): a token can differ only where a
  uniform or the top-p threshold falls within float32 rounding of a CDF boundary.

`fuse_projections(tfmr)` concatenates q/k/v and gate/up weights so that each layer runs two matrix
products fewer (same dot products; the kernels may block them differently). On a fused model the
one-token steps run as `CompiledStep` (one `mx.compile`d call per layer; `T3.compile_steps`):
bit-identical logits on the CPU, less host work per step; on a GPU (MLX's GPU backends are
host-bound here) as `GraphStep`: one compiled call per step, its attention one CUDA kernel.
"""
from __future__ import annotations

from functools import lru_cache, partial
from typing import Callable, List, Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ... import cpu_kernels
from .sampling import GreedyDraw, MLXDraw, ReplayDraw

# ------------------------------------------------------------------ fused projections


class FusedAttention(nn.Module):
    """mlx-lm's Llama Attention with q/k/v as one Linear (rows: q, then k, then v)."""

    def __init__(self, attn):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.scale, self.rope = attn.n_heads, attn.n_kv_heads, attn.scale, attn.rope
        self.qkv_proj = _concat_linears([attn.q_proj, attn.k_proj, attn.v_proj])
        self.o_proj = attn.o_proj

    def project(self, x, offset, rope_tables=None):
        """q, k, v as (B, heads, L, head_dim), q and k rotated from `offset` (an int, or an array so
        that one compiled trace serves every position). The q/k/v row is split by heads after one
        reshape (views; splitting the row first made v's reshape a copy), and q and k share one RoPE
        kernel (the rotation is per head). `rope_tables`: RoPE's cos / sin for these positions when
        the caller computed them once for all layers (`rope_tables`), else computed here."""
        B, L, _ = x.shape
        heads = self.qkv_proj(x).reshape(B, L, self.n_heads + 2 * self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        n_qk = self.n_heads + self.n_kv_heads
        # llama3 RoPE's frequencies are float32: in half precision its output (then the KV cache,
        # the attention and the whole residual stream) would turn float32, and every later matrix
        # product would cast its weights to float32
        qk = rope(self.rope, heads[:, :n_qk], offset, rope_tables).astype(x.dtype)
        return qk[:, : self.n_heads], qk[:, self.n_heads:], heads[:, n_qk:]

    def __call__(self, x, mask=None, cache=None):
        B, L, _ = x.shape
        q, k, v = self.project(x, cache.offset if cache is not None else 0)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        return self.o_proj(attend(q, k, v, self.scale, mask, cache))


def rope(rope_module, x: mx.array, offset, tables=None) -> mx.array:
    """mlx-lm's RoPE of x (B, H, L, D) from position `offset` (an int or a scalar int32 array). On
    the CPU (float32, kernels built, a Llama3RoPE over all D dims) the rotation kernel with the
    cos / sin tables of MLX's own angles and ops (`rope_tables`, or `tables` precomputed by the
    caller): bit-identical to mx.fast.rope, whose CPU form is a chain of ~15 operations (each a
    scheduler task in a one-token step)."""
    if kernel_rope_applies(rope_module, x):
        cos, sin = tables if tables is not None else rope_tables(rope_module, offset, x.shape[2])
        return cpu_kernels.kernels().rope(x, cos, sin)
    return rope_module(x, offset=offset)


def kernel_rope_applies(rope_module, x) -> bool:
    return cpu_kernels.applies_to(x) and rope_tables_apply(rope_module, x.shape[-1])


def rope_tables(rope_module, offset, length: int):
    """cos, sin (length, D / 2) of mx.fast.rope's angles on the CPU: (arange + offset) / freqs."""
    positions = mx.arange(length, dtype=mx.float32) + offset
    theta = positions[:, None] * (1.0 / rope_module._freqs)[None]
    return mx.cos(theta), mx.sin(theta)


def attend(q, k, v, scale: float, mask, cache) -> mx.array:
    """Attention of (B, H, L, D) queries over the cache's (B, H, S, D) keys and values -> (B, L, H*D).
    On the CPU (float32, kernels built) with no mask or the causal one: cpu_kernels' attention
    kernel (MLX's CPU SDPA is a chain of operations: 0.38 vs 0.21 ms per layer of a decode step,
    7.5 ms per layer of a 2 x 86-position prefill). Otherwise mlx-lm's scaled_dot_product_attention."""
    B, _, L, _ = q.shape
    if cpu_kernels.applies_to(q) and (mask is None or (isinstance(mask, str) and mask == "causal")):
        bias = causal_bias(L, k.shape[2]) if mask == "causal" and L > 1 else None
        return cpu_kernels.kernels().attention(q, k, v, scale, bias).reshape(B, L, -1)
    from mlx_lm.models.base import scaled_dot_product_attention

    out = scaled_dot_product_attention(q, k, v, cache=cache, scale=scale, mask=mask)
    # (B, H, 1, D) is already laid out as (B, 1, H*D): a reshape, not a transposing copy
    return out.reshape(B, L, -1) if L == 1 else out.transpose(0, 2, 1, 3).reshape(B, L, -1)


def causal_bias(L: int, S: int) -> mx.array:
    """(1, 1, L, S) additive mask of the last L of S positions: query t sees keys s <= S - L + t."""
    keep = mx.arange(S)[None] <= mx.arange(L)[:, None] + (S - L)
    return mx.where(keep, 0.0, -float("inf")).astype(mx.float32)[None, None]


class FusedMLP(nn.Module):
    """SwiGLU MLP with gate and up as one Linear (rows: gate, then up)."""

    def __init__(self, mlp):
        super().__init__()
        self.hidden = mlp.gate_proj.weight.shape[0]
        self.gate_up_proj = _concat_linears([mlp.gate_proj, mlp.up_proj])
        self.down_proj = mlp.down_proj

    def __call__(self, x):
        return self.down_proj(self.activation(self.gate_up_proj(x)))

    def activation(self, gate_up):
        """silu(gate) * up of the fused rows."""
        from mlx_lm.models.activations import swiglu

        if cpu_kernels.applies_to(gate_up):  # one pass over the fused rows (MLX reads the halves strided)
            return cpu_kernels.kernels().swiglu(gate_up)
        gate, up = mx.split(gate_up, [self.hidden], axis=-1)
        return swiglu(gate, up)


def _concat_linears(linears) -> nn.Linear:
    if any(not isinstance(l, nn.Linear) or "bias" in l for l in linears):
        raise TypeError("fuse_projections needs plain float Linear layers without bias (fuse before quantizing)")
    w = mx.concatenate([l.weight for l in linears], axis=0)
    fused = nn.Linear(w.shape[1], w.shape[0], bias=False)
    fused.weight = w
    return fused


def is_fused(tfmr) -> bool:
    return all(isinstance(l.self_attn, FusedAttention) and isinstance(l.mlp, FusedMLP) for l in tfmr.layers)


def fuse_projections(tfmr) -> None:
    """In place: every layer of mlx-lm's LlamaModel gets FusedAttention and FusedMLP, and its
    RMSNorms (and the final one) run as one CPU kernel where it applies (cpu_kernels.layers)."""
    for layer in tfmr.layers:
        if not isinstance(layer.self_attn, FusedAttention):
            layer.self_attn = FusedAttention(layer.self_attn)
        if not isinstance(layer.mlp, FusedMLP):
            layer.mlp = FusedMLP(layer.mlp)
        layer.input_layernorm = _kernel_norm(layer.input_layernorm)
        layer.post_attention_layernorm = _kernel_norm(layer.post_attention_layernorm)
    tfmr.norm = _kernel_norm(tfmr.norm)


def _kernel_norm(norm):
    from ...cpu_kernels.layers import RMSNorm

    return RMSNorm.like(norm) if type(norm) is nn.RMSNorm else norm


# ------------------------------------------------------------------ compiled decode steps


def _project(layer, x, offset, rope_tables=None):
    """input norm, then FusedAttention.project."""
    return layer.self_attn.project(layer.input_layernorm(x), offset, rope_tables)


def _finish(layer, x, attn_out):
    """o_proj + residual, post-attention norm, MLP + residual, for one-token steps."""
    h = x + layer.self_attn.o_proj(attn_out)
    return h + layer.mlp(layer.post_attention_layernorm(h))


def _link(layer, next_layer, x, attn_out, offset, rope_tables=None):
    x = _finish(layer, x, attn_out)
    return (x, *_project(next_layer, x, offset, rope_tables))


def _head(layer, norm, speech_head, x, attn_out):
    return speech_head(norm(_finish(layer, x, attn_out))[:, -1, :])


class CompiledStep:
    """speech_logits for one-token steps of the fused backbone, with the host's work cut down: per
    layer one compiled call (MLX replays the traced graph without running Python per operation),
    covering everything but the KV-cache update and the attention, whose length grows every step
    (they stay mlx-lm's). The weights are the trace's constants: build a new CompiledStep after
    changing them (fast_decode builds one per call)."""

    def __init__(self, t3):
        if not is_fused(t3.tfmr):
            raise TypeError("CompiledStep needs fused projections (T3.fuse_projections)")
        self.layers = layers = t3.tfmr.layers
        self.first = mx.compile(partial(_project, layers[0]))
        self.links = [mx.compile(partial(_link, a, b)) for a, b in zip(layers[:-1], layers[1:])]
        self.last = mx.compile(partial(_head, layers[-1], t3.tfmr.norm, t3.speech_head))

    def __call__(self, x: mx.array, cache: list) -> mx.array:
        if x.shape[1] != 1:
            raise ValueError(f"CompiledStep runs one-token steps, not {x.shape[1]} positions")
        offset = mx.array(cache[0].offset, dtype=mx.int32)
        rope0 = self.layers[0].self_attn.rope
        tables = rope_tables(rope0, offset, 1) if kernel_rope_applies(rope0, x) else None  # once for all layers
        q, k, v = self.first(x, offset, tables)
        for i, layer in enumerate(self.layers):
            k, v = cache[i].update_and_fetch(k, v)
            out = attend(q, k, v, layer.self_attn.scale, None, cache[i])
            if i + 1 < len(self.layers):
                x, q, k, v = self.links[i](x, out, offset, tables)
        return self.last(x, out)


class GraphStep:
    """speech_logits for one-token steps as ONE compiled call per step (the "graph" step kind, for
    MLX's GPU backends, whose one-token step is bound by host work per kernel and per Python call).
    The KV cache becomes two stacked buffers, keys and values (layers, B, heads, capacity, D), with
    the valid length as an array input, so that one trace serves every step. Each layer attends
    over the cache's first `offset` positions plus its new key / value (`attend_appended`) and
    writes them into a small (layers, B, 2, heads, D) buffer that the call returns; two slice
    updates (in place) then store it in the cache. It takes over mlx-lm's `cache` after the
    prefill (which it leaves as it was): build one per decode (fast_decode does). The weights are
    the trace's constants. (An earlier one-call step wrote the cache inside the trace at a dynamic
    offset, which cost more kernels than the Python it saved: 156 vs 214 tokens/s on the H200.)"""

    GROW = 1024  # capacity steps: a new capacity is a new trace (and kernel); most decodes fit one
    residual_addmm = True  # the residual adds inside the o / down products (_finish_addmm)
    cuda_kernel = True  # on CUDA, RoPE + attention + new-key write as one kernel (False: MLX ops, as on the CPU)
    gemv_kernel = True  # on CUDA, each product one custom kernel with its norm / SwiGLU / residual (`gemv`)

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
        self.step = mx.compile(self._step)

    def _step(self, x, keys, values, offset):
        L, B, H, capacity, D = keys.shape
        rope0 = self.layers[0].self_attn.rope
        in_kernel = self.cuda_kernel and cuda_attend_applies(rope0, x.dtype, D, capacity)
        tables = rope_tables(rope0, offset, 1) if in_kernel or kernel_rope_applies(rope0, x) else None
        step = attend_appended if in_kernel else attend_appended_unfused
        new_kv = mx.zeros((L, B, 2, H, D), x.dtype)
        if self.gemv_kernel and in_kernel and gemv_applies(x):
            return self._step_gemv(x, keys, values, offset, tables, new_kv)
        for layer, layer_id in zip(self.layers, self.layer_ids):
            attn = layer.self_attn
            qkv = attn.qkv_proj(layer.input_layernorm(x))
            out, new_kv = step(qkv, attn.rope, tables, keys, values, offset, layer_id, new_kv, attn.scale)
            x = (_finish_addmm if self.residual_addmm else _finish)(layer, x, out)
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
        capacity = -(-max(capacity, length + 1) // self.GROW) * self.GROW
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
        self.keys[:, :, :, o] = new_kv[:, :, 0]
        self.values[:, :, :, o] = new_kv[:, :, 1]
        self.offset += 1
        return logits


def _finish_addmm(layer, x, attn_out):
    """_finish with each residual add inside its matrix product (`mx.addmm`: one kernel instead of a
    product and an add on a GPU; the sum is rounded once instead of twice)."""
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
    this layer's key / value in. On MLX's CUDA backend one custom kernel (`_cuda_attend_appended`),
    RoPE included; otherwise `attend_appended_unfused`."""
    L, B, H, capacity, D = keys.shape
    if not cuda_attend_applies(rope_module, qkv.dtype, D, capacity):
        return attend_appended_unfused(qkv, rope_module, tables, keys, values, offset, layer_id, new_kv, scale)
    cos, sin = tables
    return _cuda_attend_appended(scale)(
        inputs=[qkv, cos, sin, keys, values, offset.reshape(1), layer_id, new_kv],
        template=[("C", capacity), ("D", D), ("H", H), ("NL", L)], grid=(B * H * 256, 1, 1),
        threadgroup=(256, 1, 1), output_shapes=[(B, 1, H * D), new_kv.shape], output_dtypes=[qkv.dtype] * 2)


def cuda_attend_applies(rope_module, dtype, head_dim: int, capacity: int) -> bool:
    return (mx.default_device() == mx.gpu and mx.cuda.is_available() and dtype == mx.float32
            and head_dim == 64 and capacity < _CUDA_MAX_POSITIONS and rope_tables_apply(rope_module, head_dim))


def rope_tables_apply(rope_module, head_dim: int) -> bool:
    """RoPE that `rope_tables` describes: mlx-lm's Llama3RoPE over all dims, rotate-half form."""
    return (getattr(rope_module, "_freqs", None) is not None and not rope_module.traditional
            and rope_module.dims == head_dim)


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


_CUDA_MAX_POSITIONS = 4096  # the kernel's scores live in shared memory (16 KB)


@lru_cache(maxsize=4)
def _cuda_attend_appended(scale: float):
    """One block of 256 threads per (batch, head): RoPE of its query and new key, scores of the
    cached positions (a warp per position, coalesced reads) and of the new key, the softmax (block
    reductions), p v with 4 groups of 64 threads over the positions; each block also copies its
    share of new_kv (every layer but this one, whose (b, h) key / value it writes itself)."""
    source = f"""
        const int bh = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
        const int b = bh / H, h = bh % H, B = gridDim.x / H;
        const int S = offset[0], li = layer_id[0], half = D / 2;
        const float* row = qkv + (size_t)b * 3 * H * D;
        const float* qp = row + (size_t)h * D;
        const float* kp = row + (size_t)(H + h) * D;
        const float* vn = row + (size_t)(2 * H + h) * D;
        const float* kc = keys + (((size_t)li * B + b) * H + h) * C * D;
        const float* vc = values + (((size_t)li * B + b) * H + h) * C * D;
        const size_t per_layer = (size_t)B * 2 * H * D, total = NL * per_layer;
        const size_t chunk = (total + gridDim.x - 1) / gridDim.x;
        for (size_t j = bh * chunk + tid; j < min(total, (bh + 1) * chunk); j += 256)
            if (j / per_layer != (size_t)li) new_kv_out[j] = new_kv[j];
        __shared__ float qs[D];
        __shared__ float kn[D];
        __shared__ float sc[{_CUDA_MAX_POSITIONS}];
        __shared__ float red[8];
        __shared__ float part[4][D];
        if (tid < D) {{  // RoPE, rotate-half: (x1, x2) -> (x1 cos - x2 sin, x1 sin + x2 cos)
            const int j = tid % half;
            const float c = cos_t[j], sn = sin_t[j];
            const float qr = tid < half ? qp[tid] * c - qp[tid + half] * sn : qp[tid - half] * sn + qp[tid] * c;
            const float kr = tid < half ? kp[tid] * c - kp[tid + half] * sn : kp[tid - half] * sn + kp[tid] * c;
            qs[tid] = qr * {scale!r}f;
            kn[tid] = kr;
            size_t at = (((size_t)li * B + b) * 2 * H + h) * D + tid;
            new_kv_out[at] = kr;
            new_kv_out[at + (size_t)H * D] = vn[tid];
        }}
        __syncthreads();
        for (int s = warp; s <= S; s += 8) {{
            const float* kr = s < S ? kc + (size_t)s * D : kn;
            float acc = 0.f;
            for (int d = lane; d < D; d += 32) acc += qs[d] * kr[d];
            for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffff, acc, o);
            if (lane == 0) sc[s] = acc;
        }}
        __syncthreads();
        float m = -INFINITY;
        for (int s = tid; s <= S; s += 256) m = fmaxf(m, sc[s]);
        for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
        if (lane == 0) red[warp] = m;
        __syncthreads();
        m = red[0];
        for (int w = 1; w < 8; ++w) m = fmaxf(m, red[w]);
        __syncthreads();
        float sum = 0.f;
        for (int s = tid; s <= S; s += 256) {{ float e = expf(sc[s] - m); sc[s] = e; sum += e; }}
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
        if (lane == 0) red[warp] = sum;
        __syncthreads();
        sum = 0.f;
        for (int w = 0; w < 8; ++w) sum += red[w];
        const int d = tid % D, g = tid / D;
        float acc = 0.f;
        for (int s = g; s <= S; s += 4) acc += sc[s] * (s < S ? vc[(size_t)s * D + d] : vn[d]);
        part[g][d] = acc;
        __syncthreads();
        if (tid < D) out[(size_t)bh * D + tid] = (part[0][tid] + part[1][tid] + part[2][tid] + part[3][tid]) / sum;
    """
    return mx.fast.cuda_kernel(name="t3_attend_appended",
                               input_names=["qkv", "cos_t", "sin_t", "keys", "values", "offset", "layer_id", "new_kv"],
                               output_names=["out", "new_kv_out"], source=source)


# ------------------------------------------------------------------ one-token products (CUDA)


def gemv_applies(x) -> bool:
    """T3's rows (B <= 2: the normalised rows live in 48 KB of shared memory, K up to 4096)."""
    return (mx.default_device() == mx.gpu and mx.cuda.is_available() and x.dtype == mx.float32
            and x.shape[0] <= 2)


def gemv(x, weight, *, norm=None, residual=None, swiglu: bool = False):
    """(B, 1, K) rows times weight (N, K)^T -> (B, 1, N), as one custom CUDA kernel (B <= 2,
    `gemv_applies`): the
    rows RMS-normalised first (`norm`: an nn.RMSNorm, mx.fast.rms_norm's formula), or, with
    `swiglu`, x = [gate, up] (B, 1, 2K) turned into silu(gate) * up first; `residual` (B, 1, N)
    added to the products. Each warp computes one output column for all rows, reading its weight
    row once (coalesced float4 loads): T3's one-token products are reads of the weights, and
    cuBLAS's kernels for two rows reach ~0.7 TB/s of the H200's 4.8."""
    B = x.shape[0]
    K = weight.shape[1]
    N = weight.shape[0]
    mode = "swiglu" if swiglu else "norm" if norm is not None else "plain"
    inputs = [x.reshape(B, -1), weight]
    if norm is not None:
        inputs.append(norm.weight)
    if residual is not None:
        inputs.append(residual.reshape(B, N))
    kernel = _cuda_gemv(mode, residual is not None, float(norm.eps) if norm is not None else 0.0)
    (y,) = kernel(inputs=inputs, template=[("K", K), ("N", N), ("NB", B)], grid=(-(-N // 8) * 256, 1, 1),
                  threadgroup=(256, 1, 1), output_shapes=[(B, N)], output_dtypes=[x.dtype])
    return y.reshape(B, 1, N)


@lru_cache(maxsize=16)
def _cuda_gemv(mode: str, residual: bool, eps: float):
    names = ["x", "w"] + (["g"] if mode == "norm" else []) + (["r"] if residual else [])
    if mode == "norm":  # every block normalises the rows itself (2 x 1024 floats: cheaper than a kernel)
        prologue = f"""
        __shared__ float red[NB][8];
        for (int b = 0; b < NB; ++b) {{
            float ss = 0.f;
            for (int k = tid; k < K; k += 256) {{ float v = x[(size_t)b * K + k]; ss += v * v; }}
            for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffff, ss, o);
            if (lane == 0) red[b][warp] = ss;
        }}
        __syncthreads();
        for (int b = 0; b < NB; ++b) {{
            float ss = 0.f;
            for (int w8 = 0; w8 < 8; ++w8) ss += red[b][w8];
            const float inv = rsqrtf(ss / K + {eps!r}f);
            for (int k = tid; k < K; k += 256) xs[b * K + k] = x[(size_t)b * K + k] * inv * g[k];
        }}"""
    elif mode == "swiglu":
        prologue = """
        for (int b = 0; b < NB; ++b)
            for (int k = tid; k < K; k += 256) {
                const float gt = x[(size_t)b * 2 * K + k], up = x[(size_t)b * 2 * K + K + k];
                xs[b * K + k] = gt / (1.f + expf(-gt)) * up;
            }"""
    else:
        prologue = """
        for (int b = 0; b < NB; ++b)
            for (int k = tid; k < K; k += 256) xs[b * K + k] = x[(size_t)b * K + k];"""
    add = " + r[(size_t)b * N + n]" if residual else ""
    source = f"""
        const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
        __shared__ float xs[NB * K];
        {prologue}
        __syncthreads();
        const int n = blockIdx.x * 8 + warp;
        if (n >= N) return;
        const float4* wr = reinterpret_cast<const float4*>(w + (size_t)n * K);
        float acc[NB];
        for (int b = 0; b < NB; ++b) acc[b] = 0.f;
        #pragma unroll 4
        for (int k4 = lane; k4 < K / 4; k4 += 32) {{
            const float4 wv = wr[k4];
            for (int b = 0; b < NB; ++b) {{
                const float* xb = xs + b * K + 4 * k4;
                acc[b] += wv.x * xb[0] + wv.y * xb[1] + wv.z * xb[2] + wv.w * xb[3];
            }}
        }}
        for (int b = 0; b < NB; ++b) {{
            float a = acc[b];
            for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffff, a, o);
            if (lane == 0) y[(size_t)b * N + n] = a{add};
        }}
    """
    return mx.fast.cuda_kernel(name=f"t3_gemv_{mode}{'_res' if residual else ''}", input_names=names,
                               output_names=["y"], source=source)


# ------------------------------------------------------------------ device-side sampling


@lru_cache(maxsize=16)  # one compiled function per setting: compiling costs ~1-2 s on the CPU
def make_sampler(*, cfg_weight: float, repetition_penalty: float, temperature: float, min_p: float,
                 top_p: float, greedy: bool = False) -> Callable:
    """Compiled (logits (2, V), seen (V,) bool, u scalar) -> (token (1,) int32, seen with the token
    added), in the original's order."""
    neg_inf = -float("inf")

    def sample(logits, seen, u):
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


class _Uniforms:
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


STEP_KINDS = ("auto", "plain", "layers", "graph")


def make_step(t3, capacity: int = 0):
    """The one-token step fast_decode runs, by `t3.compile_steps`: "plain" (mlx-lm's model call),
    "layers" (CompiledStep), "graph" (GraphStep; `capacity`: the positions the decode will reach,
    so that its cache buffers need no growing) or "auto" (the default: "graph" where its CUDA
    kernel runs, float32 on MLX's CUDA backend up to the kernel's positions: 295 vs 209 tokens/s
    on the H200; elsewhere "layers", bit-identical to the plain step on the CPU). "layers" and
    "graph" need fused projections (without them, "plain")."""
    kind = t3.compile_steps or "plain"
    if kind not in STEP_KINDS:
        raise ValueError(f"T3.compile_steps: {kind!r} is not one of {STEP_KINDS}")
    if kind == "auto":
        kind = "graph" if graph_kernel_applies(t3, capacity) else "layers"
    if kind == "plain" or not is_fused(t3.tfmr):
        return t3.speech_logits
    return GraphStep(t3, capacity) if kind == "graph" else CompiledStep(t3)


def graph_kernel_applies(t3, capacity: int = 0) -> bool:
    """GraphStep's attention would run as its CUDA kernel on this model (fused, float32, CUDA) for a
    decode reaching `capacity` positions (its buffers' capacity, rounded up to GraphStep.GROW)."""
    attn = t3.tfmr.layers[0].self_attn
    buffers = -(-max(capacity, 1) // GraphStep.GROW) * GraphStep.GROW
    return isinstance(attn, FusedAttention) and cuda_attend_applies(
        attn.rope, t3.speech_head.weight.dtype, t3.dim // attn.n_heads, buffers)


def supports(draw) -> bool:
    return draw is None or isinstance(draw, (ReplayDraw, MLXDraw, GreedyDraw))


def fast_decode(t3, embeds: mx.array, *, max_new_tokens: int, temperature: float, top_p: float, min_p: float,
                repetition_penalty: float, cfg_weight: float, draw=None,
                on_token: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """Speech tokens (1, n) decoded from the CFG pair's input embeddings (2, len, dim)."""
    draw = draw if draw is not None else MLXDraw()
    if not supports(draw):
        raise TypeError(f"fast_decode draws with ReplayDraw, MLXDraw or GreedyDraw, not {type(draw).__name__}")
    t3.check_decode_args(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, min_p=min_p,
                         repetition_penalty=repetition_penalty, cfg_weight=cfg_weight)
    sampler = make_sampler(cfg_weight=float(cfg_weight), repetition_penalty=float(repetition_penalty),
                           temperature=float(temperature), min_p=float(min_p), top_p=float(top_p),
                           greedy=isinstance(draw, GreedyDraw))
    uniform = _Uniforms(draw)
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
