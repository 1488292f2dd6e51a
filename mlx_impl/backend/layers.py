"""Drop-in `nn.Linear` / `nn.LayerNorm` / `nn.RMSNorm` that run one kernel (native.py) on the CPU
(float32, kernels built) and MLX's own layer otherwise (GPU, other dtypes, kernels absent). Same
parameters and names as MLX's layers, so weights load unchanged."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .native import applies_to, kernels


class Linear(nn.Linear):
    """x @ W^T + b. MLX's CPU addmm first broadcasts the bias into the output with a strided copy
    (0.5 ms of a 1.5 ms (350, 256) x (256, 1024) product here); the kernel adds it after the product
    (same values up to one rounding of the bias add). The product runs through MLX's BLAS, or
    through the wide BLAS once `use_wide_blas` has set `wide_blas`."""

    wide_blas = False

    def __call__(self, x: mx.array) -> mx.array:
        if not applies_to(x) or self.weight.dtype != mx.float32:
            return super().__call__(x)
        return kernels().linear(x, self.weight, self["bias"] if "bias" in self else None, self.wide_blas)


def use_wide_blas(model: nn.Module) -> nn.Module:
    """Sends the products of every `Linear` in `model` through the wide BLAS (`native.wide_blas()`:
    OpenBLAS with the CPU's AVX-512 kernels, 2.1x MKL's speed on AMD for S3Gen's (905, 256) x
    (256, 1024)): for S3Gen's many-row products. T3 and the S3 tokenizer keep MLX's BLAS: their
    outputs are compared token for token, and a BLAS's rounding is part of those numbers."""
    for _, module in model.named_modules():
        if isinstance(module, Linear):
            module.wide_blas = True
    return model


class LayerNorm(nn.LayerNorm):
    """LayerNorm over the last axis: one vectorised pass (MLX's CPU layer norm is a chain of
    reductions and elementwise kernels: 0.65 vs 0.23 ms for (2, 350, 256))."""

    def __call__(self, x: mx.array) -> mx.array:
        if (not applies_to(x) or "weight" not in self or "bias" not in self
                or self.weight.dtype != mx.float32):
            return super().__call__(x)
        return kernels().layer_norm(x, self.weight, self.bias, self.eps)


class RMSNorm(nn.RMSNorm):
    """RMSNorm over the last axis in one pass, bit-identical to mx.fast.rms_norm at T3's width
    (1024; tested): on the CPU mx.fast.rms_norm is a chain of operations, and in a one-token step
    each operation costs a task of MLX's scheduler (with RoPE's chain ~0.5 ms of a 2.5 ms layer,
    most of it not its arithmetic)."""

    @classmethod
    def like(cls, norm: nn.RMSNorm) -> "RMSNorm":
        out = cls(norm.weight.shape[0], norm.eps)
        out.weight = norm.weight
        return out

    def __call__(self, x: mx.array) -> mx.array:
        if not applies_to(x) or self.weight.dtype != mx.float32:
            return super().__call__(x)
        return kernels().rms_norm(x, self.weight, self.eps)
