"""Which one-token step fast_decode runs: `T3.compile_steps`."""
from __future__ import annotations

from .cuda_kernels import cuda_attend_applies
from .fused_layers import FusedAttention, is_fused
from .graph_step import GraphStep, capacity_for
from .layer_step import CompiledStep

STEP_KINDS = ("auto", "plain", "layers", "graph")


def make_step(t3, capacity: int = 0):
    """The one-token step fast_decode runs, by `t3.compile_steps`: "plain" (mlx-lm's model call),
    "layers" (CompiledStep), "graph" (GraphStep; `capacity`: the positions the decode will reach,
    so that its cache buffers need no growing) or "auto" (the default: "graph" where its CUDA
    kernels run, on MLX's CUDA backend in float32, bfloat16 or float16 up to the kernel's
    positions: 295 vs 209 tokens/s on the H200 in float32; elsewhere "layers", bit-identical to
    the plain step on the CPU). "layers" and
    "graph" need fused projections (without them, "plain"). A callable `(t3, capacity) -> step`
    in place of a kind's name builds the step itself (the benchmarks' variants)."""
    kind = t3.compile_steps or "plain"
    if callable(kind):
        return kind(t3, capacity)
    if kind not in STEP_KINDS:
        raise ValueError(f"T3.compile_steps: {kind!r} is not one of {STEP_KINDS}")
    if kind == "auto":
        kind = "graph" if graph_kernel_applies(t3, capacity) else "layers"
    if kind == "plain" or not is_fused(t3.tfmr):
        return t3.speech_logits
    return GraphStep(t3, capacity) if kind == "graph" else CompiledStep(t3)


def graph_kernel_applies(t3, capacity: int = 0) -> bool:
    """GraphStep's attention would run as its CUDA kernel on this model (fused, in one of
    KERNEL_DTYPES, CUDA) for a decode reaching `capacity` positions (its buffers' capacity, rounded
    up to GraphStep.GROW)."""
    attn = t3.tfmr.layers[0].self_attn
    return isinstance(attn, FusedAttention) and cuda_attend_applies(
        attn.rope, t3.speech_head.weight.dtype, t3.dim // attn.n_heads, capacity_for(capacity))
