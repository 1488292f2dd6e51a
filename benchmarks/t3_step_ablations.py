"""bench_t3_steps.py's ablations of the "graph" step (mlx_impl/t3/inference/graph_step.py): GraphStep
with parts of its CUDA path turned off, set as `T3.compile_steps` (a step factory)."""
from __future__ import annotations

from mlx_impl.t3.inference.graph_step import GraphStep


class GraphStepCublas(GraphStep):
    """The graph step as it was before the gemv kernels: the attention kernel, each matrix product
    MLX's own (cuBLAS on CUDA)."""

    def products_in_kernels(self, x) -> bool:
        return False


class GraphStepOps(GraphStep):
    """The graph step with its attention in MLX ops, as on the CPU (no CUDA kernel at all)."""

    def attention_in_kernel(self, x, head_dim: int, capacity: int) -> bool:
        return False
