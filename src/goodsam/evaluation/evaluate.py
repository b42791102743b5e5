"""Evaluate a model on a labelled set: whole-image or sliding-window inference, one confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from goodsam.classes import LABELID_TO_TRAINID_LUT
from goodsam.errors import BatchError, GoodSAMError
from goodsam.evaluation.class_maps import ClassMap, LabelError
from goodsam.evaluation.datasets import LabelledSample, LabelledSet
from goodsam.evaluation.metrics import ConfusionMatrix, Scores
from goodsam.imageio import image_size, load_label, resize_label, save_png
from goodsam.inference import (
    ProgressCallback,
    SegmentationModel,
    check_input_size,
    default_scale,
    predict_labels,
)


@dataclass
class EvalResult:
    """Scores, the confusion matrix behind them and what was evaluated."""

    scores: Scores
    confusion: ConfusionMatrix
    class_map: ClassMap
    n_images: int
    config: dict = field(default_factory=dict)

    def per_class(self) -> dict[str, float | None]:
        """Class name -> IoU in percent, ``None`` for classes absent from the labels."""
        return {name: None if np.isnan(v) else 100.0 * float(v)
                for name, v in zip(self.class_map.names, self.scores.iou, strict=True)}

    def to_json(self) -> dict:
        """``{"miou", "per_class", "n_images", "config", …}``; scores in percent.

        ``miou``: over the classes present in the labels; ``predicted_only``: classes predicted but never
        labelled (left out of ``miou``); ``miou_union``: over classes in the labels or the predictions.
        """
        scores = self.scores
        return {
            "miou": _percent(scores.miou),
            "per_class": self.per_class(),
            "n_images": self.n_images,
            "pixel_accuracy": _percent(scores.pixel_accuracy),
            "mean_accuracy": _percent(scores.mean_accuracy),
            "classes_present": scores.num_present,
            "predicted_only": [name for name, only in zip(self.class_map.names, scores.predicted_only,
                                                          strict=True) if only],
            "miou_union": _percent(scores.miou_union),
            "class_map": self.class_map.as_dict(),
            "config": self.config,
        }


def _percent(value: float) -> float | None:
    return None if np.isnan(value) else 100.0 * float(value)


def check_labels(dataset: LabelledSet, class_map: ClassMap, strict: bool = True) -> list[tuple[Path, str]]:
    """Fail fast, before any inference: every label fits its image's size and the class map.

    ``strict=False``: return ``(image, reason)`` of the samples that do not, instead of raising."""
    failures = []
    for sample in dataset.samples:
        try:
            _check_label(sample, class_map)
        except GoodSAMError as exc:
            if strict:
                raise
            failures.append((sample.image, str(exc)))
    return failures


def _check_label(sample: LabelledSample, class_map: ClassMap) -> None:
    height, width = image_size(sample.image)
    label = load_label(sample.label)
    if label.shape != (height, width):
        raise LabelError(f"label {sample.label} is {label.shape[1]}x{label.shape[0]} but image "
                         f"{sample.image} is {width}x{height} (width x height)")
    if sample.label_ids:
        label = LABELID_TO_TRAINID_LUT[label]
    class_map.map_label(label, sample.label)


def evaluate(model: SegmentationModel, dataset: LabelledSet, class_map: ClassMap, *,
             window: int | None = None, stride: int | None = None, wrap: bool = False,
             size: tuple[int, int] | None = None, scale: float | str | None = None,
             config: dict | None = None, progress: ProgressCallback | None = None,
             save_predictions: Path | None = None, check: bool = True, strict: bool = False,
             label_failures: list[tuple[Path, str]] | None = None) -> EvalResult:
    """Run ``model`` over ``dataset`` and score it with ``class_map``.

    ``size`` (height, width) resizes every image (bilinear) and label (nearest) before inference and
    scoring; ``scale`` is the model's input scale (:func:`goodsam.inference.predict_logits`; None: the one
    the model records, :func:`goodsam.inference.default_scale`).
    ``save_predictions`` writes each predicted trainId map as a PNG into that folder. Labels are
    checked first (``check``) so that a bad label fails before any inference; ``label_failures``: the
    result of a :func:`check_labels` (``strict=False``) already run, used instead of checking again. A
    sample that cannot be used is left out and every other one scored; the left-out ones are then
    raised together as :class:`BatchError` whose ``result`` is the :class:`EvalResult` of the others
    (its config lists them under ``failed``); ``strict`` raises the first.
    """
    scale = default_scale(model, scale)
    if label_failures is not None:
        failures = list(label_failures)
    else:
        failures = check_labels(dataset, class_map, strict=strict) if check else []
    skip = {path for path, _ in failures}
    confusion = ConfusionMatrix(class_map.num_classes)
    done = 0
    for index, sample in enumerate(dataset.samples):
        if sample.image not in skip:
            try:
                prediction, label = _predict_sample(model, dataset, sample, window, stride, wrap, size, scale)
            except GoodSAMError as exc:
                if strict:
                    raise
                failures.append((sample.image, str(exc)))
            else:
                if save_predictions is not None:
                    stem = Path(sample.name).with_suffix("").as_posix().replace("/", "_")
                    save_png(save_predictions / f"{stem}.png", prediction)
                confusion.update(class_map.map_label(label, sample.label),
                                 class_map.map_prediction(prediction))
                done += 1
        if progress is not None:
            progress(index + 1, len(dataset), sample.name)
    confusion.reduce_from_all_processes()
    config = dict(config or {})
    if failures:
        config["failed"] = [{"image": str(path), "reason": reason} for path, reason in failures]
    result = EvalResult(confusion.compute(), confusion, class_map, done, config)
    if failures:
        raise BatchError("images", len(dataset), failures, result)
    return result


def _predict_sample(model: SegmentationModel, dataset: LabelledSet, sample: LabelledSample,
                    window: int | None, stride: int | None, wrap: bool, size: tuple[int, int] | None,
                    scale: float | str) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, label) of one sample, both at ``size`` when given."""
    image, label = dataset.load(sample)
    check_input_size(model, sample.image, image)
    if size is not None:
        label = resize_label(label, *size)
    return predict_labels(model, image, window, stride, wrap, size=size, scale=scale), label
