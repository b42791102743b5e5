"""Label sets: the 19 Cityscapes trainIds, their palette, and mappings to coarser label sets."""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255
NUM_CLASSES = 19

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

CITYSCAPES_PALETTE: np.ndarray = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)

# Cityscapes labelId (0..33) -> trainId (0..18, 255 ignore): the official mapping.
_LABELID_TO_TRAINID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
LABELID_TO_TRAINID_LUT: np.ndarray = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _label_id, _train_id in _LABELID_TO_TRAINID.items():
    LABELID_TO_TRAINID_LUT[_label_id] = _train_id

# Cityscapes categories (categoryId): 0 void, 1 flat, 2 construction, 3 object, 4 nature, 5 sky,
# 6 human, 7 vehicle. Mapped from trainIds.
CATEGORY_NAMES: tuple[str, ...] = (
    "flat", "construction", "object", "nature", "sky", "human", "vehicle",
)
TRAINID_TO_CATEGORY: tuple[int, ...] = (1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 5, 6, 6, 7, 7, 7, 7, 7, 7)

# DensePASS 13-class variant: rider->person, truck/bus/motorcycle/bicycle->car, train ignored.
DENSEPASS13_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "car",
)
TRAINID_TO_DENSEPASS13: tuple[int, ...] = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 11, 12, 12, 12, IGNORE_INDEX, 12, 12,
)


def colorize(labels: np.ndarray, palette: np.ndarray = CITYSCAPES_PALETTE) -> np.ndarray:
    """Map an HxW trainId image to HxWx3 colours; ignore (and out-of-range) pixels become black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = palette
    return lut[labels.astype(np.uint8)]
