#!/usr/bin/env bash
# Set up .venv and run the offline demo on the bundled corpus (a few minutes on a laptop CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hellolondon demo "$@"
