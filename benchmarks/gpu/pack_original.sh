#!/usr/bin/env bash
# Copies the original Chatterbox's model code and the pure-Python packages it imports from the
# local venv into .gpu_pkgs/ (git-ignored), for the `device` tool's `carry`. The GPU machine has
# torch, transformers, onnx, einops, safetensors and numpy already; librosa/soxr/perth/pyloudnorm
# are replaced by benchmarks/gpu/stubs. Also copies the checkpoint's small files (conds.pt,
# tokenizer.json) that the GPU machine cannot build without librosa.
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
sp=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ckpt=${1:-checkpoints/synthetic-s0}
grep -qx "/.gpu_pkgs/" .git/info/exclude 2>/dev/null || echo "/.gpu_pkgs/" >> .git/info/exclude
rm -rf .gpu_pkgs; mkdir -p .gpu_pkgs/site .gpu_pkgs/ckpt
for p in chatterbox chatterbox_tts-0.1.7.dist-info conformer s3tokenizer diffusers omegaconf; do
  cp -r "$sp/$p" .gpu_pkgs/site/
done
find .gpu_pkgs -name __pycache__ -prune -exec rm -rf {} +
cp "$ckpt/conds.pt" "$ckpt/tokenizer.json" .gpu_pkgs/ckpt/
du -sh .gpu_pkgs
