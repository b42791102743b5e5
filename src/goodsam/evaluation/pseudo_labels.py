"""Scores of pseudo-labels against ground truth, for label sources that may abstain (e.g. CTCF's
unlabelled pixels, eq. 3, or SEPL's rejected masks): how good they are where they speak, and overall
with the TA filling in where they do not."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from goodsam.dar.fusion import IGNORE_INDEX, fuse
from goodsam.dar.safeguards import apply_safeguards
from goodsam.evaluation.datasets import LabelledSet
from goodsam.evaluation.metrics import ConfusionMatrix
from goodsam.inference import SegmentationModel, predict_window_logits
from goodsam.panorama.windows import WindowLayout, assemble_tiles
from goodsam.sam.cache import cache_path, load_panorama_masks


class PseudoLabelScorer:
    """Per method, over any number of images:

    * ``miou`` / ``pixel_accuracy``: abstained pixels (``IGNORE_INDEX``) take the TA's label, so every
      method labels every pixel and methods compare directly;
    * ``labelled``: the share of the ground-truth-labelled pixels that the method labels itself;
    * ``miou_own``: mIoU on the method's own pixels only, and ``ta_miou_own`` the TA's on the same pixels.

    The first of ``methods`` is the one whose calls count the ground-truth-labelled pixels (add it once
    per image).
    """

    def __init__(self, methods: tuple[str, ...], num_classes: int = 19) -> None:
        self.methods = methods
        self.full = {m: ConfusionMatrix(num_classes) for m in methods}
        self.own = {m: ConfusionMatrix(num_classes) for m in methods}
        self.ta_own = {m: ConfusionMatrix(num_classes) for m in methods}
        self.own_pixels = dict.fromkeys(methods, 0)
        self.scored_pixels = 0

    def add(self, method: str, gt: torch.Tensor, ta: torch.Tensor, labels: torch.Tensor) -> None:
        """One image: ground truth ``gt``, the TA's labels ``ta`` and the method's ``labels``."""
        scored = gt != IGNORE_INDEX
        own = labels != IGNORE_INDEX
        self.full[method].update(gt, torch.where(own, labels, ta))
        self.own[method].update(gt[own], labels[own])
        self.ta_own[method].update(gt[own], ta[own])
        self.own_pixels[method] += int((own & scored).sum())
        if method == self.methods[0]:
            self.scored_pixels += int(scored.sum())

    def rows(self) -> dict[str, dict]:
        """Per method: ``miou``, ``pixel_accuracy``, ``labelled``, ``miou_own``, ``ta_miou_own`` (%), and
        ``per_class_own`` / ``ta_per_class_own``: the IoU of each class on the method's own pixels (%,
        None where the class is absent there)."""
        out = {}
        for method in self.methods:
            full, own, ta = (m[method].compute() for m in (self.full, self.own, self.ta_own))
            out[method] = {"miou": 100 * full.miou, "pixel_accuracy": 100 * full.pixel_accuracy,
                           "labelled": 100 * self.own_pixels[method] / max(self.scored_pixels, 1),
                           "miou_own": 100 * own.miou, "ta_miou_own": 100 * ta.miou,
                           "per_class_own": _percent(own.iou), "ta_per_class_own": _percent(ta.iou)}
        return out


def _percent(iou) -> list[float | None]:
    return [None if math.isnan(v) else 100 * float(v) for v in iou]


@dataclass(frozen=True)
class FusionVariant:
    """One way to make pseudo-labels: a fusion (eq. 3) and its safeguards (:mod:`goodsam.dar.safeguards`).

    ``confident_only``: keep only the weight-1 pixels (``E_H``). ``method="ta"``: the TA's own labels.
    """

    name: str
    method: str = "ctcf"
    ta_confidence: float | None = None
    uncertain: str = "paper"
    confident_only: bool = False
    ta_classes: tuple[int, ...] | None = None


def fused_panorama_labels(window_logits: torch.Tensor, window_masks: list, layout: WindowLayout,
                          variant: FusionVariant) -> torch.Tensor:
    """``(H, W)`` pseudo-labels of one panorama: per window as in training, tiled as eq. 4's target."""
    if variant.method == "ta":
        return assemble_tiles(window_logits.argmax(1), layout)
    labels = []
    for logits, masks in zip(window_logits, window_masks, strict=True):
        fused = fuse(variant.method, masks, logits)
        window, weights = apply_safeguards(fused.labels, fused.weights, logits,
                                           ta_confidence=variant.ta_confidence, uncertain=variant.uncertain,
                                           ta_classes=variant.ta_classes)
        if variant.confident_only:
            window = torch.where(weights >= 1.0, window, torch.full_like(window, IGNORE_INDEX))
        labels.append(window)
    return assemble_tiles(torch.stack(labels), layout)


def score_variants(scorers: Sequence[PseudoLabelScorer], gt: torch.Tensor, window_logits: torch.Tensor,
                   window_masks: list, layout: WindowLayout, variants: tuple[FusionVariant, ...]) -> None:
    """Add one panorama's pseudo-labels of every variant (fused once) to each of ``scorers`` (their
    methods = the variant names)."""
    ta = assemble_tiles(window_logits.argmax(1), layout)
    for variant in variants:
        labels = fused_panorama_labels(window_logits, window_masks, layout, variant)
        for scorer in scorers:
            scorer.add(variant.name, gt, ta, labels)


def score_labelled_set(ta: SegmentationModel, dataset: LabelledSet, masks_dir: str | Path,
                       variants: tuple[FusionVariant, ...], layout: WindowLayout | None = None,
                       scale: float | str = 1.0) -> dict[str, dict]:
    """:meth:`PseudoLabelScorer.rows` of every variant over ``dataset``: the TA's logits of each window
    (input ``scale``) fused with the image's cached SAM masks in ``masks_dir``; ``layout`` defaults to
    the cache's window layout."""
    return score_labelled_images(ta, dataset, masks_dir, variants, layout, scale)["all"]


def score_labelled_images(ta: SegmentationModel, dataset: LabelledSet, masks_dir: str | Path,
                          variants: tuple[FusionVariant, ...], layout: WindowLayout | None = None,
                          scale: float | str = 1.0) -> dict[str, dict[str, dict]]:
    """As :func:`score_labelled_set`, also per image: ``{"all": rows, <sample name>: rows, ...}``."""
    names = tuple(v.name for v in variants)
    scores = {"all": PseudoLabelScorer(names)}
    for sample in dataset.samples:
        if sample.name in scores:
            raise ValueError(f"two samples named {sample.name!r}: per-image scores need distinct names")
        image, label = dataset.load(sample)
        masks = load_panorama_masks(cache_path(masks_dir, sample.image))
        grid = layout or masks.layout
        logits = predict_window_logits(ta, image, grid, scale=scale)
        scores[sample.name] = PseudoLabelScorer(names)
        score_variants((scores["all"], scores[sample.name]), torch.from_numpy(label.astype("int64")), logits,
                       masks.windows, grid, variants)
    return {key: scorer.rows() for key, scorer in scores.items()}
