#!/usr/bin/env bash
# Every GPU check and benchmark in one go, for a machine with one CUDA GPU:
# the CUDA tests, then `bench` for the SLM and Regular presets at nanoGPT's reference settings.
#   bash benchmarks/gpu_suite.sh            # prints JSON lines; paste the numbers in docs/benchmarks.md
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
HL="${HL:-python -m hellolondon}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
python -m pytest -q tests/test_gpu.py tests/test_model.py
$HL bench --preset slm --batch-size 32 --steps 50 --warmup 10 --json
$HL bench --preset regular --batch-size 16 --steps 30 --warmup 10 --json
$HL bench --preset slm --batch-size 32 --steps 30 --warmup 10 --compile false --json
