#!/usr/bin/env bash
# Create .venv and install helloLondon into it (idempotent).
#   bash scripts/setup.sh          # the package
#   bash scripts/setup.sh --dev    # the package plus test and lint tools (the sweep engine, and
#                                  # torchao apart in .venv/fp8 for the fp8 test)
#   bash scripts/setup.sh --sweep  # the package plus W&B's sweep engine for `hellolondon sweep`
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
sweep=0
case "${1:-}" in
    --dev) extra="[dev]"; sweep=1 ;;
    --sweep) extra="[sweep]"; sweep=1 ;;
esac
echo "installing helloLondon${extra}"
"$VPY" -m pip install -q -e ".${extra}"
if [ "$sweep" = 1 ]; then
    # W&B's sweep engine declares numpy<2 but runs on numpy 2: install it without its pins
    # (the [sweep] extra above brought what it really needs), so numpy is left as it is.
    echo "installing W&B's sweep engine (sweeps 0.3.0)"
    "$VPY" -m pip install -q --no-deps "sweeps==0.3.0"
fi
if [ "$extra" = "[dev]" ] && [ ! -d .venv/fp8/torchao ]; then
    # torchao for the fp8 test, kept out of the environment: transformers imports it on every
    # model load once it is installed (10 s on a 2-core CPU), so only that test adds this folder
    echo "installing torchao into .venv/fp8 (the fp8 test only)"
    "$VPY" -m pip install -q --no-deps --target .venv/fp8 "torchao>=0.13"
fi
