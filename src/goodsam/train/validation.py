"""Validation during training: student and TA scored on a labelled set every K steps (``goodsam eval``'s
code), logged to ``metrics.jsonl`` / TensorBoard and plotted next to the loss curve.

The student is scored on whole panoramas (how it is used), the TA with the run's sliding windows at
its input scale (how it makes the targets). Under DDP each rank scores its share of the images and
the confusion matrices are summed, so every rank takes part and the scores equal a one-process run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from goodsam.errors import ConfigError
from goodsam.evaluation import ClassMap, LabelledSet, evaluate, get_class_map, open_labelled_set
from goodsam.evaluation.evaluate import check_labels
from goodsam.train.monitor import save_line_chart


@dataclass
class Validation:
    """A labelled set, its class map and how often (``every`` steps; also before the first step)."""

    dataset: LabelledSet
    class_map: ClassMap
    every: int = 50

    @classmethod
    def from_folders(cls, images: str | Path, labels: str | Path, label_pattern: str = "{stem}.png",
                     class_map: str = "cityscapes19", every: int = 50) -> Validation:
        """Open ``images``/``labels`` (the ``goodsam eval --images/--labels`` layout) and check the labels."""
        dataset = open_labelled_set(images=images, labels=labels, label_pattern=label_pattern)
        mapping = get_class_map(class_map)
        check_labels(dataset, mapping)
        if every < 1:
            raise ConfigError(f"--val-every must be at least 1, got {every}")
        return cls(dataset, mapping, every)

    def due(self, step: int, last: bool) -> bool:
        return step == 0 or step % self.every == 0 or last

    def score(self, student: nn.Module, ta: nn.Module | None, *, window: int, stride: int, wrap: bool,
              ta_scale: float, student_scale: float = 1.0, rank: int = 0, world_size: int = 1
              ) -> dict[str, dict]:
        """``{"student": EvalResult.to_json(), "ta": …}`` on this rank's share (summed over ranks);
        ``ta=None`` scores the student only (a TA that is not trained need not be scored again)."""
        share = dataclasses.replace(self.dataset, samples=self.dataset.samples[rank::world_size])
        out = {}
        jobs = [("student", student, {"scale": student_scale})]
        if ta is not None:
            jobs.append(("ta", ta, {"window": window, "stride": stride, "wrap": wrap, "scale": ta_scale}))
        for name, model, kwargs in jobs:
            was_training = model.training
            model.eval()
            try:
                result = evaluate(model, share, self.class_map, check=False, **kwargs)
            finally:
                model.train(was_training)
            out[name] = result.to_json()
        return out


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line and fsync it (a kill never leaves a half-written earlier line)."""
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def plot_validation_curve(records: list[dict], path: Path) -> Path:
    """Student and TA validation mIoU against the step (PNG; see ``monitor.save_line_chart``)."""
    curves = (("val/student_miou", "student (whole panorama)"), ("val/ta_miou", "TA (windows)"))
    series = {label: [(r["step"], r[key]) for r in records if key in r] for key, label in curves}
    return save_line_chart(series, path, ylabel="validation mIoU (%)", size=(7, 3.6), dpi=110, marker="o")
