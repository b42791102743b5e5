"""One GoodSAM training step split by stage (issue 14, "speed where users wait").

A :class:`goodsam.train.trainer.Trainer` trains on a few bundled panoramas (fitted to the config's ERP
band as ``goodsam demo`` does) with cached MobileSAM masks (made on first use through the library's masks
stage with the nano config's SAM settings, kept in ``work`` so reruns start at once). The paper configs
(``goodsam-m``/``-t``/``-s``) get a random-init SegFormer TA (``ta.weights=null``: nothing is downloaded).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from goodsam.assets import find_asset
from goodsam.profiling import StepTiming, time_train_steps
from goodsam.train.config import load_config
from goodsam.train.data import fit_erp_folder
from goodsam.train.pipeline import ensure_masks
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
    fit_erp_folder(find_asset("panoramas"), data, height, width, limit=count)
    points = config.sam.settings["points_per_side"]
    masks = work / f"masks_{height}x{width}_{config.windows.width}_{config.windows.stride}_p{points}"
    start = time.perf_counter()
    done = ensure_masks(config, data, masks, device=device, progress=False)
    if done:
        print(f"  cached SAM masks of {done} panorama(s) in {time.perf_counter() - start:.0f} s -> {masks}")
    return data, masks


def time_config(name: str, overrides: list[str], work: Path, panoramas: int, steps: int, device: str,
                on_step: Callable[[int, StepTiming], None] | None = None) -> dict:
    """Time ``steps`` training steps of config ``name``: ``{name, device, config, steps, losses}``, each
    step's stages with ``other`` (time outside every stage) and ``total``."""
    config = load_config(name, overrides)
    data, masks = prepare_data(work, config, panoramas, device)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, data, masks, run_dir, device=device, progress=False, tensorboard=False)
        try:
            timings = time_train_steps(trainer, steps, on_step)
        finally:
            trainer.close()
    rows = [{**t.stages, "other": max(0.0, t.seconds - sum(t.stages.values())), "total": t.seconds}
            for t in timings]
    return {"name": name, "device": device, "config": config, "steps": rows,
            "losses": [t.scalars for t in timings]}


def stage_names(steps: list[dict[str, float]], last: tuple[str, ...] = ("other", "total")) -> list[str]:
    """Every stage name in the order first seen, the ``last`` ones (when present or not) at the end."""
    names: list[str] = []
    for stages in steps:
        names.extend(k for k in stages if k not in names)
    return [n for n in names if n not in last] + list(last)


def stage_table(results: list[dict]) -> str:
    """Markdown: per stage, the first step and the median of the later steps of every config."""
    names = stage_names([stages for result in results for stages in result["steps"]])
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
