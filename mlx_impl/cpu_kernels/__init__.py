"""float32 CPU kernels for MLX's Linux CPU backend (kernels.cpp): exp, sigmoid, SiLU, Mish, exact
GELU, softmax and LayerNorm over the last axis, each a single vectorised pass.

Built by `scripts/build_cpu_kernels.sh` (the set-up runs it). They compute the same math as the
arithmetic forms of `mlx_impl/s3gen/transformer/activation.py`; callers use them when
`available()` and fall back to those forms otherwise. CHATTERBOX_CPU_KERNELS=0 turns them off
(to measure or to bisect). GPU backends never use them: MLX's native ops are fast there.
"""
from __future__ import annotations

import os

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


def kernels():
    """The compiled module (exp, sigmoid, silu, mish, gelu, softmax, layer_norm); raises when absent."""
    if not available():
        raise RuntimeError(f"mlx_impl.cpu_kernels: {_error}")
    return _module
