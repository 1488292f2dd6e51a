#!/usr/bin/env bash
# One device call after `run.sh prepare` (carry .mlxb): install MLX; the T3 step variants on this
# tree's kernels, then on benchmarks/gpu/old_cuda_kernels.py's when that file exists (a before/after
# pair on one machine); batched T3 at 8 and 32 texts; the whole pipeline. Outputs under $OUT.
set -uo pipefail
export PYTHONPATH=/tmp/gpu_pkgs/site:$PWD:$PWD/benchmarks/gpu/stubs
bash benchmarks/gpu/run.sh install > "$OUT/install.log" 2>&1 || tail -20 "$OUT/install.log"
export VARIANTS="graph-gemv bf16-graph"
bash benchmarks/gpu/run.sh t3 --tokens 300 --rounds 2 > "$OUT/t3_new.log" 2>&1; grep '"variant"' "$OUT/t3_new.log" | cut -c1-300
if [ -f benchmarks/gpu/old_cuda_kernels.py ]; then
  rm -rf /tmp/v1 && mkdir /tmp/v1 && cp -r benchmarks mlx_impl parity reference fixtures /tmp/v1/
  cp benchmarks/gpu/old_cuda_kernels.py /tmp/v1/mlx_impl/t3/inference/cuda_kernels.py
  mkdir -p "$OUT/old" && (cd /tmp/v1 && OUT="$OUT/old" bash benchmarks/gpu/run.sh t3 --tokens 300 --rounds 2 > "$OUT/t3_old.log" 2>&1)
  grep '"variant"' "$OUT/t3_old.log" | cut -c1-300
fi
for b in 8 32; do
  timeout 150 python3 benchmarks/bench_batched.py --checkpoint /tmp/ckpt --batch $b --tokens 100 --rounds 2 --part t3 \
    --out "$OUT/bench_batched_gpu_b$b.json" > "$OUT/batched_b$b.log" 2>&1; tail -3 "$OUT/batched_b$b.log" | cut -c1-600
done
timeout 240 bash benchmarks/gpu/run.sh pipeline --tokens 300 --rounds ${ROUNDS:-1} --expert --mlx-dtype float32 bfloat16 \
  --expert-dtype float32 bfloat16 > "$OUT/pipeline.log" 2>&1; tail -12 "$OUT/pipeline.log"
