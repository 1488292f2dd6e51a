"""Installed into the virtual environment by scripts/setup.sh (Linux only).

OpenBLAS picks its kernels from the CPU model; on virtual CPUs that report an unknown model it
falls back to its oldest (SSE3 "Prescott") kernels, 4-5x slower here than the AVX-512 ones the CPU
has. Before any BLAS is loaded, name the core type from the CPU's own feature flags (never a type
the CPU cannot run), unless the user set OPENBLAS_CORETYPE already.

MKL runs on GNU OpenMP, whose threads by default spin ~300,000 times after each parallel region
before they sleep. In MLX's process a third thread (Python's, building the next graph; MLX's stream
runs the work) then shares a core with a spinning one: on 2 cores the conditioning took 0.46 s
instead of 0.37 s, and T3 / S3Gen ~1-2% longer. GOMP_SPINCOUNT=1000 (unless the user set it or
OMP_WAIT_POLICY) keeps the short waits between back-to-back products (OMP_WAIT_POLICY=passive, no
spin at all, made whole runs slower). docs/MLX_CPU.md has the measurements."""
import os

SPIN_COUNT = "1000"


def _core_type():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= set(flags):
        return "SkylakeX"
    if {"avx2", "fma"} <= set(flags):
        return "Haswell"
    return None


if "OPENBLAS_CORETYPE" not in os.environ:
    _t = _core_type()
    if _t:
        os.environ["OPENBLAS_CORETYPE"] = _t

os.environ.setdefault("MKL_THREADING_LAYER", "GNU")
SET_SPIN_COUNT = "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ
if SET_SPIN_COUNT:
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
