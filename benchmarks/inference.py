"""Benchmark: student sizes at 400x2048 — params, FLOPs, images/s in PyTorch eager vs ONNX Runtime.

Random weights, batch 1, the median of ``--repeats`` runs after ``--warmup``
(:mod:`goodsam.experiments.speed`); CUDA columns appear when a GPU is present (ONNX Runtime on CUDA
only with onnxruntime-gpu).

    python benchmarks/inference.py                       # all students at 400x2048
    python benchmarks/inference.py --quick               # espnetv2-s0.5 and segformer-b0, 200x1024, 2 runs
    python benchmarks/inference.py --models espnetv2-s2.0 --repeats 10 --threads 4
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from goodsam.experiments.speed import STUDENTS, bench_model, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(STUDENTS), help="comma-separated zoo names")
    parser.add_argument("--height", type=int, default=400)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads for both")
    parser.add_argument("--no-cuda", dest="cuda", action="store_false", help="skip the CUDA columns")
    parser.add_argument("--quick", action="store_true",
                        help="espnetv2-s0.5 and segformer-b0 at 200x1024, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.height, args.width, args.repeats = "espnetv2-s0.5,segformer-b0", 200, 1024, 2
    args.cuda = args.cuda and torch.cuda.is_available()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    print(f"# inference at {args.height}x{args.width}, batch 1, median of {args.repeats} "
          f"(warmup {args.warmup}); torch {torch.__version__}, onnxruntime {ort.__version__}, "
          f"{args.threads} CPU threads on {platform.processor() or platform.machine()}"
          + (f", GPU {torch.cuda.get_device_name()}" if args.cuda else ""), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            started = time.perf_counter()
            rows.append(bench_model(name.strip(), args.height, args.width, args.warmup, args.repeats,
                                    args.threads, args.cuda, Path(tmp)))
            print(f"  {name}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print(table(rows, args.cuda))
    return 0


if __name__ == "__main__":
    sys.exit(main())
