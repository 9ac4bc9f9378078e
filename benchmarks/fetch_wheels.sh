#!/usr/bin/env bash
# Download, on a machine with a package registry, the wheels that benchmarks/gpu_suite.sh
# installs on a GPU machine without one, into .whl/ at the repository root (keep that folder out
# of git): W&B (the offline check) and pytest (the CUDA tests), each with its dependencies, and
# torchao (train.fp8) alone; numpy, tokenizers, safetensors and tqdm come with transformers, and
# matplotlib only draws the fp8 curves (a CSV without it). For x86-64 Linux and CPython
# WHEEL_PYTHON (default 3.12: the GPU machine's Python, not this one's). The suite installs only
# the wheels whose package is not already there.
#   bash benchmarks/fetch_wheels.sh [WANDB_VERSION] [TORCHAO_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
WANDB="${1:-0.31.0}" TORCHAO="${2:-0.18.0}" PYVER="${WHEEL_PYTHON:-3.12}"
PLATFORMS=()
for p in manylinux_2_39_x86_64 manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 \
  manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
  manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
mkdir -p .whl
python3 -m pip download --only-binary=:all: --python-version "$PYVER" --implementation cp \
  "${PLATFORMS[@]}" -d .whl "wandb==$WANDB" "pytest>=8"
python3 -m pip download --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  "${PLATFORMS[@]}" -d .whl "torchao==$TORCHAO"
du -sh .whl
