"""GPU checks in one run (driven by ``scripts/gpu_check.sh``): what needs a CUDA machine to be seen working.

sam (fast vs reference mask generator), train (a goodsam-m step, bf16), fusion (CTCF per window), eval /
predict (the CLI on the device), inference (PyTorch vs ONNX Runtime): :mod:`goodsam.experiments.gpu_check`.
``--cpu-smoke`` runs the same code paths on the CPU at toy sizes so that a test keeps this script working
without a GPU. A summary table is printed; the exit code is 1 if any check failed (or no CUDA device is
there without ``--cpu-smoke``).

    python benchmarks/gpu_check.py [--cpu-smoke] [--work outputs/gpu_check] [--only sam,train]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from goodsam.experiments.gpu_check import CHECKS, run_check, setup_for, summary_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="the same code paths at toy sizes on CPU")
    parser.add_argument("--work", type=Path, default=Path("outputs/gpu_check"),
                        help="folder for panoramas, cached masks and eval/predict outputs")
    parser.add_argument("--only", default=",".join(CHECKS), help="comma-separated subset of the checks")
    parser.add_argument("--timeout", type=int, default=300, help="seconds for each command-line check")
    args = parser.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --cpu-smoke for the CPU smoke run)", file=sys.stderr)
        return 1
    setup = setup_for(args.cpu_smoke, args.work, args.timeout)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = torch.cuda.get_device_name() if setup.device == "cuda" else "CPU"
    print(f"gpu_check on {device} ({'cpu smoke, toy sizes' if args.cpu_smoke else 'full sizes'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)", flush=True)
    rows = []
    total = time.perf_counter()
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in CHECKS:
            parser.error(f"unknown check '{name}'; choose from {', '.join(CHECKS)}")
        status, seconds, detail = run_check(name, setup)
        rows.append((name, status, seconds, detail))
        print(f"[{status}] {name} ({seconds:.1f} s): {detail}", flush=True)
    print(f"\n{summary_table(rows)}\n\ntotal {time.perf_counter() - total:.1f} s")
    failed = [row[0] for row in rows if row[1] != "ok"]
    if failed:
        print(f"gpu_check: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
