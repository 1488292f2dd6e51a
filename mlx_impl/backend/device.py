"""Where MLX runs: the one place that decides between the GPU forms and the CPU forms, and MLX's
runtime settings for the GPU."""
from __future__ import annotations

import os
from typing import Optional

import mlx.core as mx

# MLX's CUDA backend reads these at its first evaluation (the CPU and Metal backends ignore them).
# Measured on an H100 (benchmarks/bench_t3_steps.py): T3 decoding is bound by host-side kernel
# launches, and 100 kernels per CUDA graph instead of the default 20 took it from 80 to 150 tokens/s
# (50: 122, 250: 103). TF32 off keeps float32 matrix products float32, as PyTorch's default does.
MLX_DEFAULTS = {"MLX_MAX_OPS_PER_BUFFER": "100", "MLX_ENABLE_TF32": "0"}


def apply_mlx_defaults() -> None:
    """Sets MLX_DEFAULTS in the environment where the user set no value. Entry points that run the
    model call it before anything is evaluated: MLX reads them once, at the first evaluation."""
    for name, value in MLX_DEFAULTS.items():
        os.environ.setdefault(name, value)


def on_gpu() -> bool:
    """Whether new operations run on a GPU (MLX's native ops there) rather than on the CPU (where
    this package's faster CPU forms and kernels replace some of them)."""
    return mx.default_device().type == mx.DeviceType.gpu


def on_cuda() -> bool:
    """Whether new operations run on MLX's CUDA backend (T3's graph step has CUDA kernels)."""
    return on_gpu() and mx.cuda.is_available()


NATIVE = "native"  # MLX's own op (the GPU form)
FAST = "fast"  # this package's CPU form


def resolve_form(form: Optional[str]) -> str:
    """NATIVE on a GPU, FAST on the CPU, unless a form is asked for (tests compare the two)."""
    if form is None:
        return NATIVE if on_gpu() else FAST
    if form not in (NATIVE, FAST):
        raise ValueError(f"impl must be '{NATIVE}' or '{FAST}', got {form!r}")
    return form
