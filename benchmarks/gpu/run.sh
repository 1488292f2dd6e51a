#!/usr/bin/env bash
# The GPU benchmark, step by step, on the `device` tool's machine (from the repo root there).
# Prepared here by ../shared/tools/mlx-cuda-bundle (.mlxa/.mlxb) and benchmarks/gpu/pack_original.sh
# (.gpu_pkgs: the original's code, small checkpoint files). Steps, each one `run` call:
#   prepare   (carry .mlxa .gpu_pkgs): stage MLX's first part; copy the packages; build the synthetic
#             checkpoint in /tmp/ckpt with the original's modules (seeded, as reference/synth_checkpoint)
#   install   (carry .mlxb, right after prepare): install MLX + mlx-lm into the machine's python3
#   t3        MLX T3 variants + step profile -> $OUT
#   t3-sweep  the same for MLX_MAX_OPS_PER_BUFFER = 20 50 100 250 (kernels per CUDA graph)
#   pipeline  original vs MLX vs PyTorch expert, whole pipeline -> $OUT  (extra args: bench_pipeline's)
#   pipeline-best  the same, with the MLX dtype and T3 step of the fastest variant in $OUT/bench_t3_steps_gpu.json
set -euo pipefail
export PYTHONPATH=/tmp/gpu_pkgs/site:$PWD:$PWD/benchmarks/gpu/stubs PYTHONUNBUFFERED=1 TQDM_DISABLE=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
step=$1; shift
case $step in
  prepare)
    mkdir -p /tmp/stage && cp .mlxa/part_* /tmp/stage/
    rm -rf /tmp/gpu_pkgs && cp -r .gpu_pkgs /tmp/gpu_pkgs
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    # init="default" on purpose: the records' T3 decodes a fixed token count, and the "exercised"
    # recipe's T3 draws its stop token by itself after ~50-110 tokens (that recipe also needs
    # librosa, which this machine lacks)
    [ -f /tmp/ckpt/t3_cfg.safetensors ] || python3 -c "
from reference.synth_checkpoint import make_synthetic_checkpoint
make_synthetic_checkpoint('/tmp/ckpt', seed=0, conds_from='/tmp/gpu_pkgs/ckpt/conds.pt', init='default')"
    ls -la /tmp/ckpt ;;
  install)
    bash .mlxb/install ;;
  t3)
    python3 benchmarks/bench_t3_steps.py --checkpoint /tmp/ckpt --device gpu --tokens 200 --rounds 3 \
      --variants ${VARIANTS:-graph-gemv bf16-layers bf16-graph} --out "$OUT/bench_t3_steps_gpu.json" "$@" ;;
  t3-sweep)
    for n in 20 50 100 250; do
      MLX_MAX_OPS_PER_BUFFER=$n python3 benchmarks/bench_t3_steps.py --checkpoint /tmp/ckpt --device gpu \
        --tokens 200 --rounds 3 --variants fused bf16 --out "$OUT/bench_t3_steps_gpu_ops$n.json"
    done ;;
  pipeline)
    python3 benchmarks/bench_pipeline.py --checkpoint /tmp/ckpt --device gpu --builtin-voice --out "$OUT" "$@" ;;
  pipeline-best)
    best=$(python3 benchmarks/bench_t3_steps.py --best "$OUT/bench_t3_steps_gpu.json")
    echo "fastest T3 variant: $best"
    python3 benchmarks/bench_pipeline.py --checkpoint /tmp/ckpt --device gpu --builtin-voice --out "$OUT" $best "$@" ;;
  *) echo "unknown step $step"; exit 2 ;;
esac
