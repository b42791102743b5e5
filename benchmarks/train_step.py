"""Benchmark: one GoodSAM training step split by stage (issue 14, "speed where users wait").

For each ``--config`` a :class:`goodsam.train.trainer.Trainer` trains on a few real panoramas (the
bundled ones, fitted to the config's ERP band as ``goodsam demo`` does) with cached MobileSAM masks
(made here on first use through the library's masks stage with the nano config's SAM settings and
``--points`` points per side, kept in ``--work`` so reruns start at once). The Trainer's optional
:class:`goodsam.profiling.StageTimer` reports where each step's time goes: data loading and mask
decoding, TA forward, fusion (eq. 3), boundary refinement (B_ref), eq. 4 tiling, student forward,
loss computation, student backward, TA backward, optimiser.

The first step also loads every panorama and decodes its masks (the dataset keeps them in memory),
so it is reported on its own; the table shows the median over the later steps.

* ``nano-s0.5`` / ``nano-s1.0``: the real ESPNetv2 weights, on CPU by default.
* ``goodsam-m`` / ``-t`` / ``-s``: random-init SegFormer TA and student (``ta.weights=null``: nothing is
  downloaded) at 400x2048, on ``--device`` (CUDA when there is one).

    OMP_NUM_THREADS=1 python benchmarks/train_step.py [--config nano-s0.5] [--steps 3] [--out t.md]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from goodsam.assets import find_asset
from goodsam.devices import auto_device
from goodsam.imageio import list_images, load_rgb, save_png
from goodsam.profiling import StageTimer
from goodsam.train.config import load_config
from goodsam.train.data import ensure_masks, fit_erp_band
from goodsam.train.trainer import Trainer

PAPER_CONFIGS = ("goodsam-m", "goodsam-t", "goodsam-s")


def sam_overrides(points: int) -> list[str]:
    """The same SAM settings for every config (the nano ones, ``points`` per side): one mask cache."""
    nano = load_config("nano-s0.5").sam
    keys = [f"sam.settings.{k}={v}" for k, v in nano.settings.items() if k != "points_per_side"]
    return [f"sam.model={nano.model}", f"sam.impl={nano.impl}", f"sam.settings.points_per_side={points}",
            *keys]


def config_overrides(name: str, points: int, batch: int, extra: list[str]) -> list[str]:
    """Overrides of one benchmarked config: shared SAM settings, batch size, random-init paper TA."""
    base = [*sam_overrides(points), f"data.batch_size={batch}", "train.progress=false"]
    if name in PAPER_CONFIGS:
        base.append("ta.weights=null")  # random-init SegFormer-B5: nothing to download
    return [*base, *extra]


def prepare_data(work: Path, config, count: int, device: str) -> tuple[Path, Path]:
    """``count`` bundled panoramas fitted to the config's band, and their cached SAM masks."""
    height, width = config.data.height, config.data.width
    data = work / f"panoramas_{height}x{width}_{count}"
    if len(list(data.glob("*.png"))) < count:
        data.mkdir(parents=True, exist_ok=True)
        for path in list_images(find_asset("panoramas"))[:count]:
            save_png(data / f"{path.stem}.png", fit_erp_band(load_rgb(path), height, width))
    points = config.sam.settings["points_per_side"]
    masks = work / f"masks_{height}x{width}_{config.windows.width}_{config.windows.stride}_p{points}"
    start = time.perf_counter()
    done = ensure_masks(config, data, masks, device=device, progress=False)
    if done:
        print(f"  cached SAM masks of {done} panorama(s) in {time.perf_counter() - start:.0f} s -> {masks}")
    return data, masks


def run_config(name: str, args: argparse.Namespace) -> dict:
    """Time ``args.steps`` training steps of config ``name``; per-stage seconds of every step."""
    config = load_config(name, config_overrides(name, args.points, args.batch, args.set))
    device = str(auto_device(args.device))
    data, masks = prepare_data(args.work, config, max(args.batch, args.panoramas), device)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, data, masks, run_dir, device=device, progress=False, tensorboard=False)
        trainer.timer = timer = StageTimer(trainer.device)
        steps, losses = [], []
        try:
            for step in range(args.steps):
                timer.reset()
                if trainer.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(trainer.device)
                start = time.perf_counter()
                scalars = trainer.train_step(step)
                if trainer.device.type == "cuda":
                    torch.cuda.synchronize(trainer.device)
                total = time.perf_counter() - start
                stages = timer.snapshot()
                stages["other"] = max(0.0, total - sum(stages.values()))
                stages["total"] = total
                steps.append(stages)
                losses.append(scalars)
                peak = (torch.cuda.max_memory_allocated(trainer.device) / 2**30
                        if trainer.device.type == "cuda" else None)
                print(f"  step {step}: {total:.2f} s, loss {scalars['total']:.4f}"
                      + (f", peak {peak:.1f} GiB" if peak is not None else ""), flush=True)
        finally:
            trainer.close()
    return {"name": name, "device": device, "config": config, "steps": steps, "losses": losses}


def stage_table(results: list[dict]) -> str:
    """Markdown: per stage, the first step and the median of the later steps of every config."""
    names: list[str] = []
    for result in results:
        for stages in result["steps"]:
            names.extend(k for k in stages if k not in names)
    names = [n for n in names if n not in ("other", "total")] + ["other", "total"]
    header = ["stage"]
    for result in results:
        header += [f"{result['name']} ({result['device']}) first s", f"{result['name']} median s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for stage in names:
        row = [stage]
        for result in results:
            first, later = result["steps"][0], result["steps"][1:] or result["steps"]
            row.append(f"{first.get(stage, 0.0):.3f}")
            row.append(f"{statistics.median(s.get(stage, 0.0) for s in later):.3f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


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
    configs = args.config or ["nano-s0.5"]
    requested_device = args.device
    results = []
    for name in configs:
        args.device = requested_device or ("cpu" if name.startswith("nano") else "auto")
        print(f"{name}: {args.steps} step(s), batch {args.batch}, {torch.get_num_threads()} thread(s), "
              f"device {auto_device(args.device)}", flush=True)
        results.append(run_config(name, args))
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
