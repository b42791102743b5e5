"""Benchmark: one GoodSAM training step split by stage (issue 14, "speed where users wait").

For each ``--config`` a Trainer trains on a few bundled panoramas with cached MobileSAM masks
(:mod:`goodsam.experiments.train_step`); :class:`goodsam.profiling.StageTimer` reports where each step's
time goes: data loading and mask decoding, TA forward, fusion (eq. 3), boundary refinement (B_ref), eq. 4
tiling, student forward, losses, student and TA backward, optimiser. The first step also loads every
panorama and decodes its masks, so it is reported on its own; the table shows the median of the others.

* ``nano-s0.5`` / ``nano-s1.0``: the real ESPNetv2 weights, on CPU by default.
* ``goodsam-m`` / ``-t`` / ``-s``: random-init SegFormer TA and student at 400x2048, on ``--device``.

    OMP_NUM_THREADS=1 python benchmarks/train_step.py [--config nano-s0.5] [--steps 3] [--out t.md]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from goodsam.devices import auto_device
from goodsam.experiments.train_step import config_overrides, stage_table, time_config


def print_step(step: int, timing) -> None:
    peak = f", peak {timing.peak_gib:.1f} GiB" if timing.peak_gib is not None else ""
    print(f"  step {step}: {timing.seconds:.2f} s, loss {timing.scalars['total']:.4f}{peak}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", default=None,
                        help="training config (repeatable; default nano-s0.5)")
    parser.add_argument("--device", default=None, help="default: cpu for nano configs, auto for the others")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per config (the first is cold)")
    parser.add_argument("--batch", type=int, default=2, help="panoramas per step (data.batch_size)")
    parser.add_argument("--panoramas", type=int, default=2, help="panoramas in the training folder")
    parser.add_argument("--points", type=int, default=10, help="SAM points per side for the mask cache")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--work", type=Path, default=Path("outputs/benchmarks/train_step"),
                        help="folder for the fitted panoramas and the mask cache (reused)")
    parser.add_argument("--set", action="append", default=[], help="extra config override (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for name in args.config or ["nano-s0.5"]:
        device = auto_device(args.device or ("cpu" if name.startswith("nano") else "auto"))
        print(f"{name}: {args.steps} step(s), batch {args.batch}, {torch.get_num_threads()} thread(s), "
              f"device {device}", flush=True)
        overrides = config_overrides(name, args.points, args.batch, args.set)
        results.append(time_config(name, overrides, args.work, max(args.batch, args.panoramas), args.steps,
                                   str(device), print_step))
    table = stage_table(results)
    print("\nseconds per training step by stage (first: loads and decodes the masks; median: later steps)")
    print(table)
    rerun = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# Training step by stage\n\n{table}\n\n`{rerun}`\n")
        print(f"table written to {args.out}")
    print("\nrerun: " + rerun)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
