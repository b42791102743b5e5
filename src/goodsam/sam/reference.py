"""The reference generator: the SAM package's own ``SamAutomaticMaskGenerator``, output as a MaskSet."""

from __future__ import annotations

import numpy as np
import torch

from goodsam.sam.base import AMGSettings, MaskGenerator, MaskSet, check_image
from goodsam.sam.models import LoadedSam


def records_to_maskset(records: list[dict], height: int, width: int) -> MaskSet:
    """Convert ``SamAutomaticMaskGenerator.generate`` records (binary_mask mode) to a MaskSet."""
    if not records:
        return MaskSet.empty(height, width)
    masks = np.stack([np.asarray(r["segmentation"], dtype=bool) for r in records])
    return MaskSet(
        masks=masks,
        area=masks.reshape(len(records), -1).sum(1).astype(np.int64),
        predicted_iou=np.array([r["predicted_iou"] for r in records], dtype=np.float32),
        stability_score=np.array([r["stability_score"] for r in records], dtype=np.float32),
        boxes=np.rint(np.array([r["bbox"] for r in records], dtype=np.float64)).astype(np.int64),
    )


class ReferenceMaskGenerator(MaskGenerator):
    """Runs the installed package's automatic mask generator unchanged (slow; the ground truth)."""

    impl = "reference"

    def __init__(self, sam: LoadedSam, settings: AMGSettings) -> None:
        self.sam = sam
        self.model_name = sam.name
        self.weights_sha256 = sam.weights_sha256
        self.settings = settings.validate()
        self.amg = sam.package.SamAutomaticMaskGenerator(
            sam.model,
            points_per_side=settings.points_per_side,
            points_per_batch=settings.points_per_batch,
            pred_iou_thresh=settings.pred_iou_thresh,
            stability_score_thresh=settings.stability_score_thresh,
            stability_score_offset=settings.stability_score_offset,
            box_nms_thresh=settings.box_nms_thresh,
            crop_n_layers=settings.crop_n_layers,
            min_mask_region_area=settings.min_mask_region_area,
            output_mode="binary_mask",
        )

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> MaskSet:
        image = check_image(image)
        return records_to_maskset(self.amg.generate(image), image.shape[0], image.shape[1])
