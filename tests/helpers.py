"""Small deterministic stand-ins shared by tests."""

from __future__ import annotations

import numpy as np
import torch

from goodsam.sam.base import MaskGenerator, MaskSet
from goodsam.segmenters.base import Segmenter, SegmenterOutput


class CodedSegmenter(Segmenter):
    """Deterministic toy model: predicts trainId round(R / 10) at every pixel (R = red value)."""

    name = "coded"

    def __init__(self) -> None:
        super().__init__(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))  # identity preprocessing

    def forward(self, pixel_values: torch.Tensor) -> SegmenterOutput:
        ids = torch.arange(19, dtype=pixel_values.dtype, device=pixel_values.device).view(1, 19, 1, 1)
        return SegmenterOutput(-(pixel_values[:, :1] / 10 - ids).abs())


class StandInSAM(MaskGenerator):
    """Deterministic stand-in for SAM: grey-level terciles, split into left and right halves (6 masks)."""

    model_name = "mobile_sam"
    impl = "fast"

    def generate(self, image: np.ndarray) -> MaskSet:
        grey = image.mean(axis=2)
        bins = np.digitize(grey, np.quantile(grey, [1 / 3, 2 / 3]))
        half = np.arange(image.shape[1])[None, :] < image.shape[1] // 2
        masks = np.stack([(bins == k) & (half == side) for k in range(3) for side in (True, False)])
        masks = masks[masks.reshape(len(masks), -1).any(1)]
        n = len(masks)
        return MaskSet(masks, masks.reshape(n, -1).sum(1), np.full(n, 0.9, np.float32),
                       np.full(n, 0.95, np.float32), np.zeros((n, 4), np.int64))
