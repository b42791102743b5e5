#!/usr/bin/env bash
# GPU checks in one command (issue 14): fast vs reference SAM on CUDA, a goodsam-m training step (bf16),
# fusion per window, goodsam eval/predict on CUDA and the inference benchmark (ORT CUDA when installed);
# prints a summary table, exits non-zero on any failure. Under 8 minutes on one GPU.
#   bash scripts/gpu_check.sh              # on a CUDA machine
#   bash scripts/gpu_check.sh --cpu-smoke  # the same code paths at toy sizes on the CPU (tests run this)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python benchmarks/gpu_check.py "$@"
