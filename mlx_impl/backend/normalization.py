"""Inference BatchNorm (+ ReLU) on the CPU in one pass.

CAMPPlus (the x-vector) runs ~60 BatchNorm layers, most followed by a ReLU; MLX's `nn.BatchNorm`
+ `nn.relu` is five passes over the activations on one thread. Where the kernels apply, the same
operations in the same order run as one vectorised pass (kernels/normalization.cpp): the same bits
(unit test). Elsewhere (GPU, training mode, no running statistics) it is the module itself.

Models use `BatchNorm` (an nn.BatchNorm whose call takes the one-pass form) so that each BatchNorm
stays a module call of its own: `parity.bisect` compares module calls with the original's.
`batch_norm(bn, x, relu=True)` fuses the ReLU too, for callers outside such a comparison."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .native import applies_to, kernels


class BatchNorm(nn.BatchNorm):
    """nn.BatchNorm, its inference form in one pass where the kernels apply (`batch_norm`)."""

    def __call__(self, x: mx.array) -> mx.array:
        return batch_norm(self, x)


def batch_norm(bn: nn.BatchNorm, x: mx.array, relu: bool = False) -> mx.array:
    """bn(x), then nn.relu if `relu`: channels on the last axis."""
    if bn.training or "running_mean" not in bn or not applies_to(x):
        y = nn.BatchNorm.__call__(bn, x)
        return nn.relu(y) if relu else y
    inv = mx.rsqrt(bn.running_var + bn.eps)
    affine = "weight" in bn
    return kernels().batch_norm(x, bn.running_mean, inv, bn.weight if affine else None,
                                bn.bias if affine else None, relu)
