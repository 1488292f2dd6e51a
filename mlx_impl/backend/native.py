"""The compiled float32 CPU kernels (`kernels/*.cpp`, built into `kernels/_kernels*.so` by
scripts/build_cpu_kernels.sh; the set-up runs it): exp, sigmoid, SiLU, Mish, exact GELU, Snake,
SwiGLU, softmax, LayerNorm, RMSNorm, RoPE's rotation, the depthwise FSMN convolution, each one
vectorised pass; Linear, attention and conv1d around MLX's BLAS or the "wide BLAS" (`wide_blas()`);
an LSTM layer's recurrence, CAMPPlus's 2-D convolutions (blocked im2col), inference BatchNorm (+ ReLU),
sigmoid and the S3 tokenizer's attention (Whisper's, q and k each scaled) with MLX's own bits.
Large elementwise / row inputs are split over the stream's threads (rows independent: same bits).

They compute the same math as the MLX-ops forms they replace (elementwise.py, convolution.py,
layers.py); callers use them where `applies_to(x)` and fall back to those forms otherwise.
CHATTERBOX_CPU_KERNELS=0 turns them off (to measure or to bisect). GPU backends never use them.
"""
from __future__ import annotations

import os

import mlx.core as mx

from .device import on_gpu

_module = None
_error = None


def _load():
    global _module, _error
    if _module is not None or _error is not None:
        return
    if os.environ.get("CHATTERBOX_CPU_KERNELS", "1") == "0":
        _error = "turned off by CHATTERBOX_CPU_KERNELS=0"
        return
    try:
        from .kernels import _kernels
    except ImportError as e:
        _error = f"not built ({e}); run scripts/build_cpu_kernels.sh"
        return
    _module = _kernels


def available() -> bool:
    _load()
    return _module is not None


def why_unavailable() -> str:
    _load()
    return _error or ""


def library_path() -> str:
    _load()
    return getattr(_module, "__file__", "")


def wide_blas() -> str:
    """The BLAS of S3Gen's large products ("wide BLAS", kernels/wide_blas.cpp): library and core, or
    why MLX's own BLAS is used for them."""
    return _module.wide_blas() if available() else f"MLX's BLAS (kernels {_error})"


def wide_blas_loaded() -> bool:
    """Whether S3Gen's large products run through the wide BLAS (else through MLX's)."""
    return available() and _module.wide_blas_loaded()


def applies_to(x) -> bool:
    """Whether the kernels replace MLX's ops for x: float32 on the CPU, with the kernels built."""
    return x.dtype == mx.float32 and not on_gpu() and available()


def kernels():
    """The compiled module (kernels/bindings.cpp lists its functions); raises when absent."""
    if not available():
        raise RuntimeError(f"mlx_impl.backend kernels: {_error}")
    return _module
