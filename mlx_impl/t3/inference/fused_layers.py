"""T3's backbone layers with fused projections, for fast decoding (MLX only; the original has no
counterpart).

`fuse_projections(tfmr)` concatenates q/k/v and gate/up weights so that each layer runs two matrix
products fewer (same dot products; the kernels may block them differently). RoPE and the attention
run the backend's single-pass kernels on the CPU (float32, kernels built) and MLX's ops elsewhere.
"""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.activations import swiglu
from mlx_lm.models.base import scaled_dot_product_attention

from ...backend import native
from ...backend.layers import RMSNorm


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
        if native.applies_to(gate_up):  # one pass over the fused rows (MLX reads the halves strided)
            return native.kernels().swiglu(gate_up)
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
    RMSNorms (and the final one) run as one CPU kernel where it applies (backend.layers). Layer by
    layer, evaluated: fused lazily as a whole, both copies of every layer were held at once."""
    for layer in tfmr.layers:
        if not isinstance(layer.self_attn, FusedAttention):
            layer.self_attn = FusedAttention(layer.self_attn)
        if not isinstance(layer.mlp, FusedMLP):
            layer.mlp = FusedMLP(layer.mlp)
        layer.input_layernorm = _kernel_norm(layer.input_layernorm)
        layer.post_attention_layernorm = _kernel_norm(layer.post_attention_layernorm)
        mx.eval(layer.parameters())  # this layer's separate weights freed before the next is copied
    tfmr.norm = _kernel_norm(tfmr.norm)


def _kernel_norm(norm):
    return RMSNorm.like(norm) if type(norm) is nn.RMSNorm else norm


# ------------------------------------------------------------------ RoPE and attention


def rope(rope_module, x: mx.array, offset, tables=None) -> mx.array:
    """mlx-lm's RoPE of x (B, H, L, D) from position `offset` (an int or a scalar int32 array). On
    the CPU (float32, kernels built, a Llama3RoPE over all D dims) the rotation kernel with the
    cos / sin tables of MLX's own angles and ops (`rope_tables`, or `tables` precomputed by the
    caller): bit-identical to mx.fast.rope, whose CPU form is a chain of ~15 operations (each a
    scheduler task in a one-token step)."""
    if kernel_rope_applies(rope_module, x):
        cos, sin = tables if tables is not None else rope_tables(rope_module, offset, x.shape[2])
        return native.kernels().rope(x, cos, sin)
    return rope_module(x, offset=offset)


def kernel_rope_applies(rope_module, x) -> bool:
    return native.applies_to(x) and rope_tables_apply(rope_module, x.shape[-1])


def rope_tables_apply(rope_module, head_dim: int) -> bool:
    """RoPE that `rope_tables` describes: mlx-lm's Llama3RoPE over all dims, rotate-half form."""
    return (getattr(rope_module, "_freqs", None) is not None and not rope_module.traditional
            and rope_module.dims == head_dim)


def rope_tables(rope_module, offset, length: int):
    """cos, sin (length, D / 2) of mx.fast.rope's angles on the CPU: (arange + offset) / freqs."""
    positions = mx.arange(length, dtype=mx.float32) + offset
    theta = positions[:, None] * (1.0 / rope_module._freqs)[None]
    return mx.cos(theta), mx.sin(theta)


def attend(q, k, v, scale: float, mask, cache) -> mx.array:
    """Attention of (B, H, L, D) queries over the cache's (B, H, S, D) keys and values -> (B, L, H*D).
    On the CPU (float32, kernels built) with no mask or the causal one: the backend's attention
    kernel (MLX's CPU SDPA is a chain of operations: 0.38 vs 0.21 ms per layer of a decode step,
    7.5 ms per layer of a 2 x 86-position prefill). Otherwise mlx-lm's scaled_dot_product_attention."""
    B, _, L, _ = q.shape
    if native.applies_to(q) and (mask is None or (isinstance(mask, str) and mask == "causal")):
        bias = causal_bias(L, k.shape[2]) if mask == "causal" and L > 1 else None
        return native.kernels().attention(q, k, v, scale, bias).reshape(B, L, -1)
    out = scaled_dot_product_attention(q, k, v, cache=cache, scale=scale, mask=mask)
    # (B, H, 1, D) is already laid out as (B, 1, H*D): a reshape, not a transposing copy
    return out.reshape(B, L, -1) if L == 1 else out.transpose(0, 2, 1, 3).reshape(B, L, -1)


def causal_bias(L: int, S: int) -> mx.array:
    """(1, 1, L, S) additive mask of the last L of S positions: query t sees keys s <= S - L + t."""
    keep = mx.arange(S)[None] <= mx.arange(L)[:, None] + (S - L)
    return mx.where(keep, 0.0, -float("inf")).astype(mx.float32)[None, None]
