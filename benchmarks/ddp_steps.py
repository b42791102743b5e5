"""Benchmark: the nano training step in the form ``goodsam demo`` runs it, two processes, for source trees.

``torchrun --nproc_per_node=2`` with one thread per process (each process one panorama of the batch of 2)
trains ``--short`` and then ``--long`` steps from scratch for every tree (``PYTHONPATH=<tree>/src``),
interleaved (all short runs, then all long runs, trees in turn, so both see the same machine load).
Per step = (wall of the long run - wall of the short one) / (long - short): process start, model and
data loading cancel out. Then, per logged loss term, the largest difference between each tree and the
first over the steps both logged (``metrics.jsonl``). The panoramas and masks are those of
``benchmarks/train_step.py`` (:mod:`goodsam.experiments.train_step`).

    git archive 305c88a src | tar -x -C /tmp/before
    python benchmarks/ddp_steps.py before=/tmp/before after=. \
        --config src/goodsam/train/configs/nano-s0.5-paper.yaml  # the nano config of trees before session 13
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from goodsam.experiments.train_step import config_overrides, prepare_data
from goodsam.train.config import load_config

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def train_once(tree: Path, out: Path, steps: int, data: Path, masks: Path, config: str,
               overrides: list[str]) -> float:
    """Wall seconds of one ``goodsam train`` of ``steps`` steps from scratch with ``tree``'s code."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(tree.resolve() / "src"), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    args = [*TORCHRUN, "-m", "goodsam.cli", "train", "--config", config, "--data", str(data),
            "--masks", str(masks), "--out", str(out), "--steps", str(steps), "--no-progress"]
    for item in overrides:
        args += ["--set", item]
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"training with {tree} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return wall


def losses(out: Path) -> dict[int, dict[str, float]]:
    """``{step: {term: value}}`` of the logged losses and gradient norms (not the learning rates)."""
    table = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        terms = {key: value for key, value in record.items()
                 if key != "step" and not key.startswith(("val/", "lr_")) and isinstance(value, int | float)}
        if terms:
            table[record["step"]] = terms
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", metavar="NAME=TREE", help="source trees holding src/goodsam")
    parser.add_argument("--config", default="nano-s0.5",
                        help="bundled name or YAML path; against a tree from before session 13 give the path "
                             "of configs/nano-s0.5-paper.yaml (that tree's nano-s0.5)")
    parser.add_argument("--short", type=int, default=2)
    parser.add_argument("--long", type=int, default=8)
    parser.add_argument("--points", type=int, default=10, help="SAM points per side of the mask cache")
    parser.add_argument("--work", type=Path, default=Path("outputs/benchmarks/train_step"))
    parser.add_argument("--set", action="append", default=[], help="extra config override (repeatable)")
    args = parser.parse_args(argv)
    trees = dict(item.split("=", 1) for item in args.trees)
    if args.long <= args.short:
        parser.error("--long must be larger than --short")
    overrides = [item for item in config_overrides(args.config, args.points, 2, args.set)
                 if not item.startswith("train.progress")]
    config = load_config(args.config, overrides)
    data, masks = prepare_data(args.work, config, 2, "cpu")
    walls: dict[str, dict[int, float]] = {name: {} for name in trees}
    for steps in (args.short, args.long):
        for name, tree in trees.items():
            out = args.work / "ddp_runs" / f"{name}_{steps}"
            walls[name][steps] = train_once(Path(tree), out, steps, data, masks, args.config, overrides)
            print(f"  {name}: {steps} steps in {walls[name][steps]:.2f} s", flush=True)
    first = next(iter(trees))
    reference = losses(args.work / "ddp_runs" / f"{first}_{args.long}")
    per_step = {name: (w[args.long] - w[args.short]) / (args.long - args.short) for name, w in walls.items()}
    print(f"\nseconds per step, two processes x one thread ({args.config}, batch 2):")
    for name in trees:
        line = f"  {name}: {per_step[name]:.2f} s  (x{per_step[first] / per_step[name]:.2f} against {first})"
        if name != first:
            other = losses(args.work / "ddp_runs" / f"{name}_{args.long}")
            diffs = [(abs(other[s][k] - reference[s][k]), k, reference[s][k])
                     for s in reference.keys() & other.keys() for k in reference[s].keys() & other[s].keys()]
            if diffs:
                diff, key, value = max(diffs)
                line += f"; largest difference over the logged steps: {key} {diff:.2e} (of {value:.4g})"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
