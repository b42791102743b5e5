#!/usr/bin/env bash
# Main job on the embedded default: nano GoodSAM on the real panoramas (CPU), then overlays.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/goodsam demo "$@"
