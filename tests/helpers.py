"""Small deterministic stand-ins shared by tests."""

from __future__ import annotations

import torch

from goodsam.segmenters.base import Segmenter, SegmenterOutput


class CodedSegmenter(Segmenter):
    """Deterministic toy model: predicts trainId round(R / 10) at every pixel (R = red value)."""

    name = "coded"

    def __init__(self) -> None:
        super().__init__(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))  # identity preprocessing

    def forward(self, pixel_values: torch.Tensor) -> SegmenterOutput:
        ids = torch.arange(19, dtype=pixel_values.dtype, device=pixel_values.device).view(1, 19, 1, 1)
        return SegmenterOutput(-(pixel_values[:, :1] / 10 - ids).abs())
