"""Diagnosis of the CVRG line of issue 12: how a model's best input scale depends on how sharp a panorama
is, and on which rows are scored. Chooses nothing.

The pinhole-to-ERP proxy pastes Cityscapes frames, downscaled about four times, into a 400x2048 band: its
pixels are sharper than those of a panorama captured at that size, and only the rows of the frames' own
vertical field of view carry content. :func:`resample` gives a panorama the detail of one stored smaller
and upscaled (the CVRG band is its 1664-px panorama upscaled to 2048, x1.23); :func:`score_whole` scores a
model on the whole panorama, on all rows and inside / outside a band of rows; :func:`mask_purity` is a
label-free score of a prediction against SAM's regions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from goodsam.evaluation.class_maps import ClassMap
from goodsam.evaluation.metrics import ConfusionMatrix
from goodsam.imageio import resample
from goodsam.inference import predict_labels
from goodsam.sam.cache import PanoramaMasks

PARTS = ("all", "inside", "outside")


def content_rows(labels: Sequence[np.ndarray], ignore: int = 255) -> tuple[int, int]:
    """(first, last + 1): the rows in which any of the label maps has a labelled pixel (for the proxy:
    the vertical field of view of the pinhole frames it was made from)."""
    labelled = np.zeros(labels[0].shape[0], dtype=bool)
    for label in labels:
        labelled |= (label != ignore).any(1)
    rows = np.flatnonzero(labelled)
    if rows.size == 0:
        raise ValueError("no labelled pixel in any label map")
    return int(rows[0]), int(rows[-1]) + 1


def score_whole(model, samples: Sequence[tuple[np.ndarray, np.ndarray]], class_map: ClassMap,
                scale: float | str, *, factor: float = 1.0, rows: tuple[int, int] | None = None
                ) -> dict[str, float]:
    """mIoU (%) of ``model`` on whole panoramas ``samples`` ((RGB image, class-map target) pairs, the
    targets already mapped with ``class_map``) at input ``scale``, each image first :func:`resample`-d by
    ``factor``: ``all`` rows, and with ``rows`` (first, last + 1) also ``inside`` and ``outside`` them."""
    parts = PARTS if rows is not None else PARTS[:1]
    matrices = {part: ConfusionMatrix(class_map.num_classes) for part in parts}
    for image, target in samples:
        prediction = class_map.map_prediction(predict_labels(model, resample(image, factor), scale=scale))
        matrices["all"].update(target, prediction)
        if rows is not None:
            inside = np.zeros(target.shape[0], dtype=bool)
            inside[rows[0]:rows[1]] = True
            target = np.asarray(target, dtype=np.int64)
            matrices["inside"].update(np.where(inside[:, None], target, -1), prediction)  # -1: not scored
            matrices["outside"].update(np.where(inside[:, None], -1, target), prediction)
    return {part: 100 * matrix.compute().miou for part, matrix in matrices.items()}


def mask_purity(prediction: np.ndarray, masks: PanoramaMasks) -> float:
    """Share (%) of the pixels of the SAM masks of every window of ``masks`` that carry their mask's most
    frequent label in ``prediction`` (trainIds over the whole panorama): how well a prediction agrees
    with SAM's regions, with no label read."""
    agree = total = 0
    for k, window in enumerate(masks.windows):
        crop = prediction[:, masks.layout.window_columns(k)]
        for mask in window.masks:
            labels = crop[mask]
            if labels.size:
                agree += int(np.bincount(labels).max())
                total += labels.size
    return 100.0 * agree / max(total, 1)

