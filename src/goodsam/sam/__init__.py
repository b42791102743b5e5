"""SAM "segment everything": mask sets, generators (fast and reference) and the mask cache."""

from goodsam.sam.base import AMGSettings, MaskGenerator, MaskSet
from goodsam.sam.models import MODELS
from goodsam.sam.registry import IMPLS, build_mask_generator

__all__ = ["IMPLS", "MODELS", "AMGSettings", "MaskGenerator", "MaskSet", "build_mask_generator"]
