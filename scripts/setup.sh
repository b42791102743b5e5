#!/usr/bin/env bash
# Create .venv (if missing) and install goodsam with its dependencies; idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=".venv/.goodsam-installed"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing goodsam and its dependencies into .venv (torch, transformers, SAM code, ...)"
  .venv/bin/python -m pip install --quiet --progress-bar off -e ".[dev]"
  echo "$want" > "$stamp"
fi
