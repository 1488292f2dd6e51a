"""The backend layer: everything in mlx_impl that depends on where MLX runs.

The model files mirror the original's and call these plain functions where the CPU needs another
form than MLX's native op; on a GPU each of them is MLX's native op, as written in the original.

  device.py       the one place that decides the device (`on_gpu`), MLX's GPU settings
                  (`apply_mlx_defaults`, for entry points)
  native.py       the compiled CPU kernels (kernels/*.cpp) and the wide BLAS they load
  elementwise.py  exp, sigmoid / SiLU, Mish, GELU, softmax, Snake on the CPU (the exp polynomial)
  sdpa.py         scaled dot-product attention; Whisper's (each of q, k scaled) and its rotary form
  convolution.py  conv1d, conv_transpose1d, depthwise and im2col forms
  layers.py       Linear, LayerNorm, RMSNorm drop-ins (kernels on the CPU), `use_wide_blas`
  recurrent.py    LSTM drop-in (its recurrence one kernel, else one compiled graph a step, on the CPU)
  normalization.py  inference BatchNorm (+ ReLU) in one pass on the CPU
  mlx_ops.py      mx.sigmoid with its own bits, vectorised on the CPU
  lanes.py        independent work on both CPU cores: `parallel_lanes`, `parallel_batch`
docs/MLX_CPU.md has the measurements behind each of them.
"""
from . import native
from .sdpa import attention, attention_split_scale, rotate_half_rope
from .convolution import (conv1d, conv1d_addmm, conv1d_im2col, conv2d_im2col, conv_transpose1d,
                          depthwise_conv1d)
from .device import FAST, NATIVE, apply_mlx_defaults, on_cuda, on_gpu
from .elementwise import exp, gelu, mish, sigmoid, silu, sin_squared, snake, softmax, softmax_matmul
from .layers import LayerNorm, Linear, RMSNorm, use_wide_blas
from .recurrent import LSTM
from .normalization import BatchNorm, batch_norm
from .mlx_ops import mlx_sigmoid
from .lanes import interleave_point, multiply_count, one_blas_thread, parallel_batch, parallel_lanes
from .native import wide_blas
