"""What a run reports: ``metrics.jsonl`` (one line per logged step), TensorBoard scalars, ``loss_curve.png``.

On resume, lines and TensorBoard events of steps after the checkpoint are dropped (they are recomputed
identically), so the files describe one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from goodsam.fileio import atomic_write, atomic_write_text

CURVE_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
                 (140, 86, 75), (227, 119, 194), (23, 190, 207))


class RunMonitor:
    """Writes metrics of the main process; ``start_step``: the step a resumed run continues from."""

    def __init__(self, run_dir: Path, start_step: int = 0, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.records = [r for r in read_metrics(self.path) if r.get("step", 0) <= start_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=start_step + 1)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Record the scalars of step ``step`` (1-based: the number of optimiser steps done)."""
        record = {"step": step, **{k: float(v) for k, v in scalars.items()}}
        self.records.append(record)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(_tag(key), value, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()
        if self.records:
            plot_loss_curve(self.records, self.run_dir / "loss_curve.png")

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


def _tag(key: str) -> str:
    if key.startswith("val/"):
        return key
    if key.startswith("lr_"):
        return f"lr/{key[3:]}"
    if key.startswith("grad_norm_"):
        return f"grad_norm/{key[10:]}"
    if key in ("student", "ta", "total"):
        return f"loss/{key}"
    return f"loss_terms/{key}"


def read_metrics(path: Path) -> list[dict]:
    """Records of a ``metrics.jsonl`` (a torn last line from a kill is skipped)."""
    if not Path(path).is_file():
        return []
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def plot_loss_curve(records: list[dict], path: Path, keys: tuple[str, ...] = ("total", "student", "ta"),
                    size: tuple[int, int] = (800, 420)) -> Path:
    """A small line chart (PIL, no plotting library) of the chosen losses against the step."""
    width, height = size
    margin_l, margin_r, margin_t, margin_b = 60, 20, 30, 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    series = {k: [(r["step"], r[k]) for r in records if k in r and math.isfinite(r[k])] for k in keys}
    series = {k: v for k, v in series.items() if v}
    points = [p for values in series.values() for p in values]
    if not points:
        image.save(path)
        return path
    steps = np.array([p[0] for p in points], dtype=float)
    values = np.array([p[1] for p in points], dtype=float)
    x_lo, x_hi = steps.min(), max(steps.max(), steps.min() + 1)
    y_lo, y_hi = min(0.0, values.min()), values.max() * 1.05 + 1e-9
    plot_w, plot_h = width - margin_l - margin_r, height - margin_t - margin_b

    def to_px(step: float, value: float) -> tuple[float, float]:
        return (margin_l + (step - x_lo) / (x_hi - x_lo) * plot_w,
                margin_t + (1 - (value - y_lo) / (y_hi - y_lo)) * plot_h)

    draw.rectangle([margin_l, margin_t, margin_l + plot_w, margin_t + plot_h], outline=(0, 0, 0))
    for frac in np.linspace(0, 1, 5):
        value = y_lo + frac * (y_hi - y_lo)
        _, y = to_px(x_lo, value)
        draw.line([margin_l - 4, y, margin_l, y], fill=(0, 0, 0))
        draw.text((4, y - 6), f"{value:.3g}", fill=(0, 0, 0))
    for frac in np.linspace(0, 1, 5):
        step = x_lo + frac * (x_hi - x_lo)
        x, _ = to_px(step, y_lo)
        draw.line([x, margin_t + plot_h, x, margin_t + plot_h + 4], fill=(0, 0, 0))
        draw.text((x - 10, margin_t + plot_h + 8), f"{step:.0f}", fill=(0, 0, 0))
    draw.text((margin_l + plot_w // 2 - 15, height - 16), "step", fill=(0, 0, 0))
    for i, (key, values) in enumerate(series.items()):
        colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]
        pixels = [to_px(s, v) for s, v in values]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        else:
            x, y = pixels[0]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        x0 = margin_l + 10 + 110 * i
        draw.line([x0, 14, x0 + 18, 14], fill=colour, width=3)
        draw.text((x0 + 24, 8), key, fill=colour)
    with atomic_write(path) as handle:
        image.save(handle, format="PNG")
    return Path(path)
