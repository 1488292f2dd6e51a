"""Diffusers-style transformer block (chatterbox/models/s3gen/matcha/transformer.py with
diffusers 0.29 `Attention` / `AttnProcessor2_0` and `GELU`). Self-attention + GELU feed-forward
with layer norms, the only configuration S3Gen uses."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ... import backend
from ...backend import LayerNorm, Linear


class Attention(nn.Module):
    """diffusers `Attention` for self-attention: to_q/to_k/to_v (bias=`bias`), to_out (with bias).
    Original `to_out.0` is `to_out`."""

    def __init__(self, query_dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0,
                 bias: bool = False, out_bias: bool = True, cross_attention_dim=None, upcast_attention=False):
        super().__init__()
        if cross_attention_dim is not None:
            raise NotImplementedError("cross attention")
        inner_dim = dim_head * heads
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.to_q = Linear(query_dim, inner_dim, bias=bias)
        self.to_k = Linear(query_dim, inner_dim, bias=bias)
        self.to_v = Linear(query_dim, inner_dim, bias=bias)
        self.to_out = Linear(inner_dim, query_dim, bias=out_bias)

    def __call__(self, hidden_states: mx.array, attention_mask: mx.array = None) -> mx.array:
        """hidden_states (B, T, C); attention_mask: additive bias broadcastable to (B, heads, T, T)
        (the original repeats a (B, 1, T) bias over heads), or None for none."""
        b, t, _ = hidden_states.shape

        def heads(x):
            return x.reshape(b, t, self.heads, -1).transpose(0, 2, 1, 3)

        q = heads(self.to_q(hidden_states))
        k = heads(self.to_k(hidden_states))
        v = heads(self.to_v(hidden_states))
        bias = None
        if attention_mask is not None:
            bias = attention_mask if attention_mask.ndim == 4 else attention_mask[:, None]
        o = backend.attention(q, k, v, self.scale, bias)  # (B, T, heads, dim_head)
        return self.to_out(o.reshape(b, t, -1))


class GELU(nn.Module):
    """Linear `proj` then GELU (exact erf form, or tanh approximation)."""

    def __init__(self, dim_in: int, dim_out: int, approximate: str = "none", bias: bool = True):
        super().__init__()
        self.proj = Linear(dim_in, dim_out, bias=bias)
        self.approximate = approximate

    def __call__(self, x: mx.array) -> mx.array:
        x = self.proj(x)
        return nn.gelu_approx(x) if self.approximate == "tanh" else backend.gelu(x)


class FeedForward(nn.Module):
    """Original `net.0` (activation with its projection) / `net.2` (output Linear) are `act` / `proj_out`."""

    def __init__(self, dim: int, dim_out: int = None, mult: int = 4, dropout: float = 0.0,
                 activation_fn: str = "geglu", final_dropout: bool = False):
        super().__init__()
        inner_dim = int(dim * mult)
        dim_out = dim_out if dim_out is not None else dim
        if activation_fn == "gelu":
            self.act = GELU(dim, inner_dim)
        elif activation_fn == "gelu-approximate":
            self.act = GELU(dim, inner_dim, approximate="tanh")
        else:
            raise NotImplementedError(f"FeedForward activation '{activation_fn}'")
        self.proj_out = Linear(inner_dim, dim_out)

    def __call__(self, hidden_states: mx.array) -> mx.array:
        return self.proj_out(self.act(hidden_states))


class BasicTransformerBlock(nn.Module):
    """norm1 -> self-attention -> residual; norm3 -> feed-forward -> residual."""

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int, dropout=0.0,
                 cross_attention_dim=None, activation_fn: str = "geglu", num_embeds_ada_norm=None,
                 attention_bias: bool = False, only_cross_attention: bool = False,
                 double_self_attention: bool = False, upcast_attention: bool = False,
                 norm_elementwise_affine: bool = True, norm_type: str = "layer_norm", final_dropout: bool = False):
        super().__init__()
        if (cross_attention_dim is not None or only_cross_attention or double_self_attention
                or num_embeds_ada_norm is not None or norm_type != "layer_norm"):
            raise NotImplementedError("BasicTransformerBlock: only self-attention with layer norms")
        self.norm1 = LayerNorm(dim, eps=1e-5, affine=norm_elementwise_affine)
        self.attn1 = Attention(dim, heads=num_attention_heads, dim_head=attention_head_dim,
                               dropout=dropout, bias=attention_bias)
        self.norm3 = LayerNorm(dim, eps=1e-5, affine=norm_elementwise_affine)
        self.ff = FeedForward(dim, dropout=dropout, activation_fn=activation_fn, final_dropout=final_dropout)

    def __call__(self, hidden_states: mx.array, attention_mask: mx.array = None, timestep=None) -> mx.array:
        hidden_states = self.attn1(self.norm1(hidden_states), attention_mask) + hidden_states
        return self.ff(self.norm3(hidden_states)) + hidden_states
