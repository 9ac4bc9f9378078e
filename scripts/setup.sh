#!/usr/bin/env bash
# Create .venv and install helloLondon into it (idempotent).
#   bash scripts/setup.sh          # the package
#   bash scripts/setup.sh --dev    # the package plus test and lint tools
# HELLOLONDON_TORCH picks the PyTorch to install when none is there yet (default torch==2.13.0;
# for a particular CUDA build use e.g. "torch --index-url https://download.pytorch.org/whl/cu126").
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: helloLondon needs Python 3.11 or newer; $PY is $("$PY" --version 2>/dev/null || echo "not found"). Set PYTHON=python3.11 (or newer) and run again." >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    echo "installing PyTorch (${HELLOLONDON_TORCH:-torch==2.13.0})"
    # shellcheck disable=SC2086
    "$VPY" -m pip install -q ${HELLOLONDON_TORCH:-torch==2.13.0}
fi
extra=""
if [ "${1:-}" = "--dev" ]; then
    extra="[dev]"
fi
echo "installing helloLondon${extra}"
"$VPY" -m pip install -q -e ".${extra}"
