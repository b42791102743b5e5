"""The SAM mask-generator interface: "segment everything" on one image -> a compact set of masks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from goodsam.errors import ConfigError, ImageError


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

    def validate(self) -> AMGSettings:
        """Raise :class:`ConfigError` for values segment-anything would reject or misuse."""
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise ConfigError("points_per_side and points_per_batch must be >= 1")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.crop_n_layers < 0 or self.min_mask_region_area < 0:
            raise ConfigError("crop_n_layers and min_mask_region_area must be >= 0")
        return self


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


def check_image(image: np.ndarray) -> np.ndarray:
    """The image as a contiguous ``(H, W, 3)`` uint8 array; :class:`ImageError` otherwise."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ImageError(f"SAM needs an (H, W, 3) uint8 RGB image, got shape {shape} dtype {dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"SAM got an empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


class MaskGenerator(ABC):
    """Segment-everything on one image. The mask cache records the four identity attributes."""

    model_name: str
    weights_sha256: str | None
    settings: AMGSettings
    impl: str

    @abstractmethod
    def generate(self, image: np.ndarray) -> MaskSet:
        """Masks of one ``(H, W, 3)`` uint8 RGB image."""

    def generate_batch(self, images: Sequence[np.ndarray]) -> list[MaskSet]:
        """Masks of several images (each independent of the others)."""
        return [self.generate(image) for image in images]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={self.model_name!r}, impl={self.impl!r}, "
                f"points_per_side={self.settings.points_per_side})")
