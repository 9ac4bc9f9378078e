#!/usr/bin/env bash
# Set up .venv with the test tools, then lint, check the formatting and run the whole test
# suite (slow tests included).
# Locally, skip the slow end-to-end tests with:  bash scripts/test.sh -m "not slow"
# The tests run on two processes (most of them use one core); `-n 0` runs them in this one,
# `-n 4` on four.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
.venv/bin/ruff check src tests scripts benchmarks
.venv/bin/ruff format --check src tests scripts benchmarks
# one test at a time to whichever process is free, the slow ones first (tests/conftest.py): by
# default xdist hands out blocks of consecutive tests, which put every slow test in one process
exec .venv/bin/python -m pytest -q -n 2 --maxschedchunk 1 "$@"
