"""Installed into the virtual environment by scripts/setup.sh (Linux only).

OpenBLAS picks its kernels from the CPU model; on virtual CPUs that report an unknown model it
falls back to its oldest (SSE3 "Prescott") kernels, 4-5x slower here than the AVX-512 ones the CPU
has. Before any BLAS is loaded, name the core type from the CPU's own feature flags (never a type
the CPU cannot run), unless the user set OPENBLAS_CORETYPE already."""
import os


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
