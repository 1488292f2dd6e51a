#!/usr/bin/env bash
# Builds the float32 CPU kernels (mlx_impl/backend/kernels/*.cpp, docs/MLX_CPU.md) into
# mlx_impl/backend/kernels/_kernels*.so for the MLX of .venv. Without them MLX runs the same math as
# chains of its own (slower) operations. Usage: scripts/build_cpu_kernels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${VENV_PY:-.venv/bin/python}
SRC=mlx_impl/backend/kernels
BUILD=build/cpu_kernels
for tool in cmake c++; do
  command -v $tool >/dev/null || { echo "[cpu_kernels] $tool not found: not built" >&2; exit 1; }
done
"$PY" -c "import nanobind" 2>/dev/null || "$PY" -m pip install -q "nanobind==3.1.0" >/dev/null
rm -rf "$BUILD"; mkdir -p "$BUILD"
cmake -S "$SRC" -B "$BUILD" -DPython_EXECUTABLE="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" -DCMAKE_BUILD_TYPE=Release >"$BUILD.log" 2>&1 \
  && cmake --build "$BUILD" -j 2 >>"$BUILD.log" 2>&1 \
  || { tail -30 "$BUILD.log" >&2; echo "[cpu_kernels] build failed (log: $BUILD.log)" >&2; exit 1; }
so=$(ls "$BUILD"/_kernels*.so)
tmp="$SRC/.$(basename "$so").tmp"
cp "$so" "$tmp" && mv -f "$tmp" "$SRC/$(basename "$so")"
"$PY" -c "from mlx_impl.backend import native as k; assert k.available(), k.why_unavailable(); print('[cpu_kernels] built:', k.library_path())"
