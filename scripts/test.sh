#!/usr/bin/env bash
# The test suite: lint, then pytest on the real assets in ../shared/assets (or $GOODSAM_ASSETS).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The gallery test renders HTML in headless Chromium (Debian package); install it when we can.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "[test] chromium could not be installed; the gallery screenshot test will be skipped"
fi
.venv/bin/ruff check src tests benchmarks
OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" exec .venv/bin/pytest -q "$@"
