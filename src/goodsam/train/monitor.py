"""What a run reports: ``metrics.jsonl`` (one line per logged step), TensorBoard scalars, ``loss_curve.png``.

On resume, lines and TensorBoard events of steps after the checkpoint are dropped (they are recomputed
identically), so the files describe one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from goodsam.fileio import atomic_write, atomic_write_text


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
    """The chosen losses against the step (``size`` in pixels; non-finite values are left out)."""
    series = {key: [(r["step"], r[key]) for r in records if key in r and math.isfinite(r[key])]
              for key in keys}
    return save_line_chart(series, path, ylabel="loss", size=(size[0] / 100, size[1] / 100), dpi=100,
                           from_zero=True)


def save_line_chart(series: dict[str, list[tuple[float, float]]], path: Path, *, ylabel: str,
                    size: tuple[float, float], dpi: int, marker: str | None = None,
                    from_zero: bool = False) -> Path:
    """A PNG of ``series`` (label -> ``(step, value)`` points) against the step, drawn by matplotlib's Agg
    canvas (no display, no global backend switch) and written atomically. Series without points are
    left out; a single point is drawn as a dot. ``from_zero``: the value axis includes 0."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for label, points in series.items():
        if points:
            ax.plot(*zip(*points, strict=True), marker=marker or ("o" if len(points) == 1 else None),
                    label=label)
    if any(series.values()):
        ax.legend()
        if from_zero:
            ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png")
    return Path(path)
