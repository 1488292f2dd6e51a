"""Drop-in `nn.Linear` / `nn.LayerNorm` that run one kernel of `mlx_impl.cpu_kernels` on the CPU
(float32, kernels built) and MLX's own layer otherwise (GPU, other dtypes, kernels absent). Same
parameters and names as MLX's layers, so weights load unchanged."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from . import applies_to, kernels


class Linear(nn.Linear):
    """x @ W^T + b. MLX's CPU addmm first broadcasts the bias into the output with a strided copy
    (0.5 ms of a 1.5 ms (350, 256) x (256, 1024) product here); the kernel adds it after the product
    (same values up to one rounding of the bias add)."""

    def __call__(self, x: mx.array) -> mx.array:
        if not applies_to(x) or self.weight.dtype != mx.float32:
            return super().__call__(x)
        return kernels().linear(x, self.weight, self["bias"] if "bias" in self else None)


class LayerNorm(nn.LayerNorm):
    """LayerNorm over the last axis: one vectorised pass (MLX's CPU layer norm is a chain of
    reductions and elementwise kernels: 0.65 vs 0.23 ms for (2, 350, 256))."""

    def __call__(self, x: mx.array) -> mx.array:
        if (not applies_to(x) or "weight" not in self or "bias" not in self
                or self.weight.dtype != mx.float32):
            return super().__call__(x)
        return kernels().layer_norm(x, self.weight, self.bias, self.eps)
