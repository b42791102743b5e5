"""Confusion matrix and IoU metrics, accumulated with ``bincount`` (torchvision-references style).

Rows are ground-truth classes, columns predicted classes. Pixels whose ground truth is outside
``0..num_classes-1`` (e.g. 255 = ignore) are skipped. A prediction outside the class set (a class the
class map cannot express, e.g. "train" in DensePASS-13) still counts against its ground-truth class: it
lands in an extra "unmapped" column, so it is a false negative for that class and a false positive for
none.

A class without ground-truth pixels is *absent*: its IoU is ``nan`` (reported as null / "—", not 0) and
it is left out of the mean. This is the usual "mIoU over classes present" (the figure the original
ESPNetv2 code reports): a class that is only predicted, never labelled, is listed in
``Scores.predicted_only``; its false positives still lower the IoU of the labelled classes they cover.
``Scores.miou_union`` is the stricter mean over every class in the labels *or* the predictions
(predicted-only classes count as 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Scores:
    """Metrics read off a confusion matrix (fractions in 0..1, ``nan`` = class absent from the labels)."""

    iou: np.ndarray
    accuracy: np.ndarray
    miou: float
    mean_accuracy: float
    pixel_accuracy: float
    present: np.ndarray
    predicted_only: np.ndarray
    miou_union: float

    @property
    def num_present(self) -> int:
        return int(self.present.sum())


class ConfusionMatrix:
    """Accumulates a ``num_classes x num_classes`` confusion matrix over batches of label maps."""

    def __init__(self, num_classes: int):
        if num_classes < 1:
            raise ValueError("num_classes must be positive")
        self.num_classes = num_classes
        self.counts = torch.zeros((num_classes, num_classes + 1), dtype=torch.int64)

    def update(self, target: torch.Tensor | np.ndarray, prediction: torch.Tensor | np.ndarray) -> None:
        """Add pixels: ``target`` and ``prediction`` are integer maps of the same shape."""
        target = torch.as_tensor(np.asarray(target) if isinstance(target, np.ndarray) else target)
        prediction = torch.as_tensor(
            np.asarray(prediction) if isinstance(prediction, np.ndarray) else prediction)
        if target.shape != prediction.shape:
            raise ValueError(f"target {tuple(target.shape)} and prediction {tuple(prediction.shape)} differ")
        n = self.num_classes
        target = target.reshape(-1).to(torch.int64).cpu()
        prediction = prediction.reshape(-1).to(torch.int64).cpu()
        keep = (target >= 0) & (target < n)
        target, prediction = target[keep], prediction[keep]
        outside = (prediction < 0) | (prediction >= n)
        prediction = torch.where(outside, torch.full_like(prediction, n), prediction)
        flat = target * (n + 1) + prediction
        self.counts += torch.bincount(flat, minlength=n * (n + 1)).reshape(n, n + 1)

    def reset(self) -> None:
        self.counts.zero_()

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another matrix's counts (e.g. from another worker)."""
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge confusion matrices of different sizes")
        self.counts += other.counts

    def reduce_from_all_processes(self) -> None:
        """Sum the counts over a ``torch.distributed`` process group (no-op when not distributed)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        backend = torch.distributed.get_backend()
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu"
        counts = self.counts.to(device)
        torch.distributed.all_reduce(counts)
        self.counts = counts.cpu()

    @property
    def matrix(self) -> np.ndarray:
        """The square ``(num_classes, num_classes)`` matrix (rows: ground truth, columns: prediction)."""
        return self.counts[:, : self.num_classes].numpy().copy()

    @property
    def unmapped(self) -> np.ndarray:
        """Per ground-truth class, pixels predicted as a class outside the class set."""
        return self.counts[:, self.num_classes].numpy().copy()

    def compute(self) -> Scores:
        """IoU, per-class accuracy, mIoU over the classes present in the labels, pixel accuracy."""
        counts = self.counts.to(torch.float64)
        tp = counts.diagonal()
        gt = counts.sum(1)
        predicted = counts[:, : self.num_classes].sum(0)
        union = gt + predicted - tp
        present = gt > 0
        nan = torch.full_like(tp, float("nan"))
        iou = torch.where(present, tp / union.clamp(min=1), nan)
        accuracy = torch.where(present, tp / gt.clamp(min=1), nan)
        union_iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
        total = float(gt.sum())
        return Scores(
            iou=iou.numpy(),
            accuracy=accuracy.numpy(),
            miou=_nanmean(iou.numpy()),
            mean_accuracy=_nanmean(accuracy.numpy()),
            pixel_accuracy=float(tp.sum()) / total if total > 0 else float("nan"),
            present=present.numpy(),
            predicted_only=((~present) & (predicted > 0)).numpy(),
            miou_union=_nanmean(union_iou.numpy()),
        )

    def __str__(self) -> str:
        scores = self.compute()
        per_class = ", ".join("—" if np.isnan(v) else f"{100 * v:.1f}" for v in scores.iou)
        return (f"mIoU {100 * scores.miou:.1f} (over {scores.num_present} classes), pixel acc "
                f"{100 * scores.pixel_accuracy:.1f}, IoU [{per_class}]")


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")
