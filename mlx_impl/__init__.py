"""MLX implementation of Chatterbox TTS, mirroring the original `chatterbox` package file for file."""
import os

# MLX's CUDA backend (read at the first evaluation; ignored by the CPU and Metal backends; a value
# the user set wins). Measured on an H100 (benchmarks/bench_t3_steps.py, reports/out): T3 decoding
# is bound by host-side kernel launches, and batching 100 kernels per CUDA graph instead of the
# default 20 took it from 80 to 150 tokens/s (50: 122, 250: 103). TF32 off keeps float32 matrix
# products float32, as PyTorch's default does.
os.environ.setdefault("MLX_MAX_OPS_PER_BUFFER", "100")
os.environ.setdefault("MLX_ENABLE_TF32", "0")
