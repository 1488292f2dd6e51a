"""float32 CPU kernels for MLX's Linux CPU backend (kernels.cpp): exp, sigmoid, SiLU, Mish, exact
GELU, Snake, SwiGLU, softmax and LayerNorm over the last axis, each a single vectorised pass; Linear
and attention around the BLAS MLX is linked with; `stream_blas_threads()`, a probe of the BLAS
threads a stream's next product would use.

Built by `scripts/build_cpu_kernels.sh` (the set-up runs it). They compute the same math as the
MLX-ops forms they replace (`mlx_impl/s3gen/transformer/activation.py`, `ops.sin_squared`,
`layers.py`); callers use them where `applies_to(x)` and fall back to those forms otherwise. CHATTERBOX_CPU_KERNELS=0 turns them off
(to measure or to bisect). GPU backends never use them: MLX's native ops are fast there.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import mlx.core as mx

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
        from . import _kernels
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
    """The BLAS of S3Gen's large products (kernels.cpp, "wide BLAS"): library and core, or why
    MLX's own BLAS is used for them."""
    return _module.wide_blas() if available() else f"MLX's BLAS (kernels {_error})"


def wide_blas_loaded() -> bool:
    """Whether S3Gen's large products run through the wide BLAS (else through MLX's)."""
    return available() and _module.wide_blas_loaded()


def applies_to(x) -> bool:
    """Whether the kernels replace MLX's ops for x: float32 on the CPU, with the kernels built."""
    return x.dtype == mx.float32 and mx.default_device() != mx.gpu and available()


def kernels():
    """The compiled module (see kernels.cpp's NB_MODULE for the functions); raises when absent."""
    if not available():
        raise RuntimeError(f"mlx_impl.cpu_kernels: {_error}")
    return _module


@contextmanager
def one_blas_thread(streams):
    """BLAS products and kernels queued on each of `streams` (CPU streams that will run at the same
    time) while inside use one thread each (the BLAS setting is Intel MKL's: other BLAS libraries
    keep theirs; a no-op without the kernels). The settings take effect in each stream's queue
    order, and MLX queues work when it is evaluated: arrays built inside must be evaluated
    (`mx.eval` / `mx.async_eval`) inside too;
    a lazy graph evaluated after the block runs with the default threads (`stream_blas_threads()`
    reads the setting in queue order)."""
    if not available():
        yield
        return

    def set_all(n):
        for s in streams:
            with mx.stream(s):
                _module.set_stream_blas_threads(n)

    set_all(1)
    try:
        yield
    finally:
        set_all(0)
