"""The SAM mask-generator interface: "segment everything" on one image -> a compact set of masks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class AMGSettings:
    """Knobs of automatic mask generation (names and defaults as in segment-anything)."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    min_mask_region_area: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class MaskSet:
    """Masks of one image, sorted by nothing in particular.

    masks: (N, H, W) bool; area: (N,) int64 pixel counts; predicted_iou, stability_score: (N,) float32;
    boxes: (N, 4) int64 in XYWH.
    """

    masks: np.ndarray
    area: np.ndarray
    predicted_iou: np.ndarray
    stability_score: np.ndarray
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.int64))

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    @classmethod
    def empty(cls, height: int, width: int) -> MaskSet:
        return cls(
            masks=np.zeros((0, height, width), dtype=bool),
            area=np.zeros(0, dtype=np.int64),
            predicted_iou=np.zeros(0, dtype=np.float32),
            stability_score=np.zeros(0, dtype=np.float32),
            boxes=np.zeros((0, 4), dtype=np.int64),
        )
