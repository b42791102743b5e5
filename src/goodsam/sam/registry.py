"""``build_mask_generator``: a SAM model by name + an implementation (fast by default, or reference)."""

from __future__ import annotations

import os

import torch

from goodsam.errors import ConfigError
from goodsam.sam.base import AMGSettings, MaskGenerator
from goodsam.sam.models import MODELS, check_model_name, load_sam

IMPLS = ("fast", "reference")


def build_mask_generator(model: str = "mobile_sam", weights: str | os.PathLike | None = None,
                         settings: AMGSettings | None = None, impl: str = "fast",
                         device: str | torch.device = "cpu", **options) -> MaskGenerator:
    """A segment-everything generator for SAM ``model`` (one of :data:`MODELS`).

    ``weights``: explicit checkpoint path (else resolved and verified via ``goodsam.assets``);
    ``impl``: ``"fast"`` (:class:`FastMaskGenerator`) or ``"reference"`` (the package's own
    ``SamAutomaticMaskGenerator``); ``options`` go to the fast generator (e.g. ``prompts_per_call``).
    Raises ConfigError for an unknown model/impl/device, AssetError for missing or corrupt weights.
    """
    check_model_name(model)
    if impl not in IMPLS:
        raise ConfigError(f"unknown mask generator impl '{impl}'; choose one of {', '.join(IMPLS)}")
    settings = (settings or AMGSettings()).validate()
    if settings.min_mask_region_area > 0:
        try:
            import cv2  # noqa: F401 - segment-anything's small-region removal uses OpenCV
        except ImportError:
            raise ConfigError("min_mask_region_area > 0 needs OpenCV: pip install opencv-python-headless"
                              ) from None
    if options and impl != "fast":
        raise ConfigError(f"options {sorted(options)} only apply to impl='fast'")
    sam = load_sam(model, weights, device)
    if impl == "reference":
        from goodsam.sam.reference import ReferenceMaskGenerator

        return ReferenceMaskGenerator(sam, settings)
    from goodsam.sam.fast_amg import FastMaskGenerator

    return FastMaskGenerator(sam, settings, **options)


__all__ = ["IMPLS", "MODELS", "build_mask_generator"]
