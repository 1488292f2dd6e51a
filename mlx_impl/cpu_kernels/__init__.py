"""Moved to `mlx_impl.backend` (native.py, layers.py, lanes.py); these names stay here for the
code that still imports them (mlx_impl/t3/inference/fast_decode.py, mlx_impl/s3tokenizer/model.py
and their tests) until it moves too."""
import sys

from ..backend import layers
from ..backend.lanes import one_blas_thread
from ..backend.native import (applies_to, available, kernels, library_path, wide_blas, wide_blas_loaded,
                              why_unavailable)

sys.modules[__name__ + ".layers"] = layers  # `from mlx_impl.cpu_kernels.layers import RMSNorm`
