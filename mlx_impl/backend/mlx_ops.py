"""MLX ops with MLX's own bits, in one vectorised pass on the CPU.

MLX 0.32's CPU sigmoid is a scalar loop (~5 ns an element on the Intel Xeon here); CAMPPlus takes
one of every CAM layer's (T, 128) context mask. `mlx_sigmoid` computes the same float32 operations
(kernels/mlx_bits.h) as vectorised code: bit-identical to mx.sigmoid (unit test), where
`backend.sigmoid` is faster still but rounds differently. Elsewhere it is mx.sigmoid."""
from __future__ import annotations

import mlx.core as mx

from .native import applies_to, kernels


def mlx_sigmoid(x: mx.array) -> mx.array:
    """mx.sigmoid(x), bit for bit."""
    return kernels().mlx_sigmoid(x) if applies_to(x) else mx.sigmoid(x)
