#!/usr/bin/env bash
# Creates .venv with the pinned stack: torch/torchaudio 2.9.1, chatterbox-tts 0.1.7 (without its
# pins), MLX + mlx-lm, test tools; on Linux links MLX's bundled reference BLAS to MKL (x86-64) or OpenBLAS.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [--mlx-only]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
MLX_ONLY=0; [ "${1:-}" = "--mlx-only" ] && MLX_ONLY=1
say() { printf '[setup] %s\n' "$*"; }

# --- system packages (Debian): espeak-ng/sox make test clips, OpenBLAS speeds up MLX on the CPU
if [ "$(uname -s)" = Linux ] && command -v apt-get >/dev/null; then
  need=()
  for pkg in libopenblas0-pthread espeak-ng sox; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      say "apt-get install ${need[*]}"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null \
        || say "WARNING: apt-get install ${need[*]} failed"
    else
      say "WARNING: not root, cannot install ${need[*]} (sudo apt-get install ${need[*]})"
    fi
  fi
fi

[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip >/dev/null 2>&1 || true

if [ "$(uname -s)" = Darwin ]; then MLX_PKG="mlx==0.32.4"; else MLX_PKG="mlx[cpu]==0.32.4"; fi
if [ $MLX_ONLY = 0 ]; then
  if ! $VENV/bin/python -c "import torch, torchaudio; assert torch.__version__.startswith('2.9.1') and torchaudio.__version__.startswith('2.9.1')" 2>/dev/null; then
    say "installing torch 2.9.1 + torchaudio 2.9.1 (about 7 GB)"
    $PIP install -q "torch==2.9.1" "torchaudio==2.9.1"
  fi
  # keep torch where it is whatever the other packages ask for
  cons=$(mktemp); trap 'rm -f "$cons"' EXIT
  printf 'torch==2.9.1\ntorchaudio==2.9.1\n' > "$cons"
  $PIP install -q -c "$cons" -r requirements/reference.txt -r requirements/mlx.txt -r requirements/languages.txt -r requirements/dev.txt "$MLX_PKG"
  $PIP install -q --no-deps "chatterbox-tts==0.1.7" "s3tokenizer==0.3.0"
else
  $PIP install -q -r requirements/mlx.txt -r requirements/languages.txt -r requirements/dev.txt "$MLX_PKG"
fi
$PIP install -q --no-deps -e . >/dev/null

# --- MLX on Linux: replace the bundled reference BLAS (docs/MLX_CPU.md). x86-64: Intel oneMKL from
# the package index (small-M products, i.e. T3's decode steps, run 2.2x faster than on OpenBLAS:
# 87 vs 197 ms for one step's matrix products); elsewhere, or if MKL cannot be installed, OpenBLAS.
if [ "$(uname -s)" = Linux ]; then
  libdir=$($VENV/bin/python -c "import importlib.util, pathlib; s=importlib.util.find_spec('mlx'); p=pathlib.Path(s.submodule_search_locations[0]).parent/'mlx_cpu.libs'; print(p if p.is_dir() else '')")
  openblas=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3
  [ "$(uname -m)" = aarch64 ] && openblas=/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3
  blas=""
  if [ "$(uname -m)" = x86_64 ] && [ "${MLX_BLAS:-mkl}" = mkl ] && $PIP install -q --no-deps "mkl==2026.2.0"; then
    blas=$(cd "$VENV/lib" && pwd)/libmkl_rt.so.3
  elif [ -e "$openblas" ]; then
    blas=$openblas
  fi
  if [ -z "$libdir" ]; then
    say "WARNING: mlx_cpu.libs not found: MLX keeps its own BLAS"
  elif [ -z "$blas" ] || [ ! -e "$blas" ]; then
    say "WARNING: neither MKL nor OpenBLAS ($openblas): MLX matmuls stay on the reference BLAS, ~30x slower"
  else
    for f in "$libdir"/libblas-*.so.3.10.0; do
      [ -e "$f" ] || continue
      [ -L "$f" ] || mv "$f" "$f.reference"
      ln -sf "$blas" "$f"
    done
    # MKL's dispatcher loads its other libraries from the folder it was loaded from
    case $blas in *mkl*) for m in "$(dirname "$blas")"/libmkl_*.so.*; do ln -sf "$m" "$libdir/"; done ;; esac
    say "MLX BLAS -> $blas"
  fi
fi

# --- BLAS settings before any BLAS loads: OpenBLAS kernels from the CPU's flags, MKL's threading (scripts/site/sitecustomize.py)
if [ "$(uname -s)" = Linux ]; then
  sp=$($VENV/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  cp scripts/site/sitecustomize.py "$sp/sitecustomize.py"
  say "OpenBLAS core type: $($VENV/bin/python -c 'import os; print(os.environ.get("OPENBLAS_CORETYPE", "auto"))')"
fi

# --- float32 CPU kernels for MLX's CPU backend (mlx_impl/backend/kernels; Linux): without them the
# flow runs its softmax/GELU/LayerNorm as chains of MLX's scalar kernels, ~2.3x slower
kernels_stale() {  # not built, or a source newer than the build
  local so; so=$(ls mlx_impl/backend/kernels/_kernels*.so 2>/dev/null | head -1)
  [ -z "$so" ] || [ -n "$(find mlx_impl/backend/kernels \( -name '*.cpp' -o -name '*.h' -o -name CMakeLists.txt \) -newer "$so" | head -1)" ]
}
if [ "$(uname -s)" = Linux ]; then
  if [ -d mlx_impl/backend/kernels ] && { [ "${FORCE_CPU_KERNELS:-0}" = 1 ] || kernels_stale \
       || ! $VENV/bin/python -c "from mlx_impl.backend import native as k; assert k.available()" 2>/dev/null; }; then
    say "building the CPU kernels (scripts/build_cpu_kernels.sh)"
    VENV_PY=$VENV/bin/python bash scripts/build_cpu_kernels.sh || say "WARNING: CPU kernels not built: MLX falls back to its own (slower) ops"
  fi
fi

$VENV/bin/python - <<'PY'
import mlx.core as mx, mlx_lm  # noqa
assert float((mx.ones((64, 64)) @ mx.ones((64, 64)))[0, 0]) == 64.0, "MLX matmul through the linked BLAS is wrong"
print(f"[setup] mlx {mx.__version__} on {mx.default_device()}; a matrix product through the linked BLAS: ok")
try:
    import torch, torchaudio, chatterbox.tts  # noqa
    print(f"[setup] torch {torch.__version__}, torchaudio {torchaudio.__version__}, chatterbox-tts 0.1.7: ok")
except ImportError as e:
    print(f"[setup] reference stack not installed ({e}): MLX-only environment")
PY
