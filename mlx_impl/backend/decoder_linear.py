"""Linear for a decoder's layers, which multiply many rows once (the prompt's prefill) and one row
at every step after it (the KV-cached one-token steps)."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .layers import Linear

# Below this many rows MLX's addmm runs the product. Measured on Chatterbox Turbo's GPT-2 medium
# (Intel Xeon, 2 cores, float32): its one-token step took 51 ms with MLX's addmm in every Linear and
# 147 ms with the backend's kernel (whose one-row products, between the step's other kernels, read
# the weights far slower), while its 199-row prefill took 0.60 s with the kernel and 0.81 s with
# MLX's addmm (which first copies the broadcast bias into the output).
FEW_ROWS = 8


class DecoderLinear(Linear):
    """x @ W^T + b: the backend's Linear kernel for products of FEW_ROWS rows or more, MLX's own
    nn.Linear for fewer. Same parameters as nn.Linear."""

    def __call__(self, x: mx.array) -> mx.array:
        if x.size < FEW_ROWS * x.shape[-1]:
            return nn.Linear.__call__(self, x)
        return super().__call__(x)
