"""Benchmark: the same training steps on two source trees (before/after a change), interleaved.

One worker process per tree (``PYTHONPATH=<tree>/src``) builds the same :class:`Trainer` (config, seed,
panoramas, cached masks of :mod:`goodsam.experiments.train_step`); the driver then asks them for step 0, 1, …
in turn (A B A B …, so both see the same machine load), and prints, per logged loss term, the largest
absolute difference over the steps, and the median step time of each tree (per stage where the tree
has :class:`goodsam.profiling.StageTimer`; the first step, which loads the data, is left out).

    git archive 305c88a src | tar -x -C /tmp/before
    OMP_NUM_THREADS=1 python benchmarks/compare_steps.py --before /tmp/before --after . --steps 5 \
        --config src/goodsam/train/configs/nano-s0.5-paper.yaml  # the nano config of trees before session 13
    # more trees, each compared with --before:  --also hook=/tmp/hook

A worker whose tree does not keep freed memory for reuse (``goodsam.devices.keep_freed_memory``, which
the Trainer turns on for CPU training) hands it back to the OS after every step (``malloc_trim``), so
the idle tree does not hold a step's activations while the other runs; a tree that keeps it is measured
as it runs (trimming would undo what it keeps). ``--no-trim``: no tree is trimmed, each runs as it
would alone (when the trees fit in memory together).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(args: argparse.Namespace) -> int:
    """Serve ``step k`` requests on stdin with one JSON line each on stdout."""
    import torch

    import goodsam
    from goodsam.train.config import load_config
    from goodsam.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    config = load_config(args.config, json.loads(args.overrides))
    run_dir = tempfile.mkdtemp(prefix="compare_steps_")
    trainer = Trainer(config, args.data, args.masks, run_dir, device="cpu", progress=False, tensorboard=False)
    timer = None
    try:
        from goodsam.profiling import StageTimer

        timer = trainer.timer = StageTimer()
    except ImportError:  # a tree from before the profiling hook: total times only
        pass
    kept = _keeps_freed_memory()
    print(json.dumps({"ready": f"{Path(goodsam.__file__).parent} (freed memory kept: {kept})"}), flush=True)
    for line in sys.stdin:
        step = int(line)
        if timer is not None:
            timer.reset()
        start = time.perf_counter()
        scalars = trainer.train_step(step)
        total = time.perf_counter() - start
        stages = timer.snapshot() if timer is not None else {}
        stages["total"] = total
        print(json.dumps({"scalars": scalars, "stages": stages}), flush=True)
        gc.collect()
        if not kept and not args.no_trim:
            _trim_heap()  # hand freed activations back to the OS while the other tree runs
    trainer.close()
    return 0


def _keeps_freed_memory() -> bool:
    """Whether this worker's tree keeps freed memory for reuse (trees before it: no)."""
    try:
        from goodsam.devices import keep_freed_memory
    except ImportError:
        return False
    return keep_freed_memory()


def _trim_heap() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def start_worker(tree: Path, args: argparse.Namespace, data: Path, masks: Path,
                 overrides: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve() / "src"), "OMP_NUM_THREADS": str(args.threads)}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--config", args.config,
               "--data", str(data), "--masks", str(masks), "--overrides", json.dumps(overrides),
               "--threads", str(args.threads), *(["--no-trim"] if args.no_trim else [])]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    return process


def ask(process: subprocess.Popen, request: str | None = None) -> dict:
    if request is not None:
        process.stdin.write(request + "\n")
        process.stdin.flush()
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"worker exited with {process.wait()}")
    return json.loads(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="source tree (holding src/goodsam) of the old code")
    parser.add_argument("--after", type=Path, default=HERE.parent, help="source tree of the new code")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=TREE",
                        help="a further source tree to run (and compare with --before), repeatable")
    parser.add_argument("--config", default="nano-s0.5",
                        help="bundled name or YAML path; against a tree from before session 13 give the path "
                             "of configs/nano-s0.5-paper.yaml (that tree's nano-s0.5)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("outputs/benchmarks/train_step"))
    parser.add_argument("--set", action="append", default=[], help="extra config override (repeatable)")
    parser.add_argument("--no-trim", action="store_true",
                        help="never hand a tree's freed memory back between its steps")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--masks", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.before is None:
        parser.error("--before is required")
    from goodsam.experiments.train_step import config_overrides, prepare_data
    from goodsam.train.config import load_config

    overrides = config_overrides(args.config, args.points, args.batch, args.set)
    config = load_config(args.config, overrides)
    data, masks = prepare_data(args.work, config, args.batch, "cpu")
    trees = {"before": args.before}
    for item in args.also:
        name, _, tree = item.partition("=")
        trees[name] = Path(tree)
    trees["after"] = args.after
    workers = {name: start_worker(tree, args, data, masks, overrides) for name, tree in trees.items()}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    try:
        for name, process in workers.items():
            print(f"{name}: goodsam from {ask(process)['ready']}", flush=True)
        for step in range(args.steps):
            for name, process in workers.items():
                results[name].append(ask(process, str(step)))
            line = ", ".join(f"{n} {r[-1]['stages']['total']:.2f} s" for n, r in results.items())
            print(f"  step {step}: {line}", flush=True)
    finally:
        for process in workers.values():
            process.stdin.close()
            process.wait()
    keys = sorted(results["before"][0]["scalars"])
    others = [name for name in trees if name != "before"]
    print(f"\nlargest |before - X| over {args.steps} steps of {args.config} (seed {config.train.seed}, "
          f"batch {args.batch}), X = {', '.join(others)}:")
    for key in keys:
        cells = []
        for other in others:
            diffs = [abs(a["scalars"][key] - b["scalars"].get(key, float("nan")))
                     for a, b in zip(results["before"], results[other], strict=True)]
            cells.append(f"{other} {max(diffs):.3e}")
        print(f"  {key:<24} {'  '.join(cells)}   (step 0: {results['before'][0]['scalars'][key]:.6f})")
    later = {name: r[1:] or r for name, r in results.items()}
    stages: list[str] = []
    for runs in later.values():
        for run in runs:
            stages.extend(s for s in run["stages"] if s not in stages)
    stages = [s for s in stages if s != "total"] + ["total"]
    print(f"\nmedian seconds over steps 1..{args.steps - 1} ({args.threads} thread(s), interleaved)")
    print("| stage | " + " | ".join(trees) + " |\n|---|" + "---|" * len(trees))
    for stage in stages:
        cells = []
        for name in trees:
            values = [run["stages"][stage] for run in later[name] if stage in run["stages"]]
            cells.append(f"{statistics.median(values):.3f}" if values else "-")
        print(f"| {stage} | {' | '.join(cells)} |")
    medians = {n: statistics.median(r["stages"]["total"] for r in later[n]) for n in trees}
    print("\nstep time (median): " + ", ".join(f"{n} {t:.2f} s" for n, t in medians.items())
          + f"; before/after x{medians['before'] / medians['after']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
