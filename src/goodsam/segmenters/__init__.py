"""Segmenters behind one interface: the pinhole teacher assistant (TA) and the panoramic student.

``build_segmenter("espnetv2-s2.0")`` gives ESPNetv2 with its Cityscapes weights;
``build_segmenter("segformer-b0")`` a randomly initialised SegFormer-B0; hub ids / directories load
pretrained SegFormers.
"""

from goodsam.segmenters.base import Segmenter, SegmenterOutput, to_image_tensor
from goodsam.segmenters.espnetv2 import ESPNetv2
from goodsam.segmenters.registry import (
    ESPNET_NAMES,
    SEGFORMER_NAMES,
    SEGMENTER_NAMES,
    available_segmenters,
    build_segmenter,
    load_state_dict_file,
)
from goodsam.segmenters.segformer import SegFormer

__all__ = [
    "ESPNET_NAMES",
    "SEGFORMER_NAMES",
    "SEGMENTER_NAMES",
    "ESPNetv2",
    "SegFormer",
    "Segmenter",
    "SegmenterOutput",
    "available_segmenters",
    "build_segmenter",
    "load_state_dict_file",
    "to_image_tensor",
]
