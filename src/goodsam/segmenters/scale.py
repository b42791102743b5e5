"""The TA's input scale: each window is resized by ``s`` before the segmenter, its logits resized back.

A segmenter trained on pinhole frames has learnt objects at the pixel density of its training images;
an ERP panorama shows the same scene at far fewer pixels per degree. A Cityscapes frame at 1024 px
width has a focal length of 1131 px, i.e. 1131·π/180 = 19.7 px per degree at its centre; a 2048-px
wide panorama has 2048 / 360 = 5.7 px per degree, so its objects are 3.5x smaller than the TA is used
to. ``scale = "auto"`` undoes that ratio: ``s = training density / panorama density``.

This module is the one home of the rule: the trainer (targets of eq. 1, 2, 3, 4, 6), ``goodsam eval``,
``goodsam predict`` and the benchmarks all call :func:`forward_at_scale` / :func:`resolve_scale`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from goodsam.errors import ConfigError

# Focal lengths of Cityscapes (fx at 2048 px width) -> pixels per degree at the image centre.
_CITYSCAPES_FX_2048 = 2262.52


def _density(width_px: int) -> float:
    """Pixels per degree at the centre of a Cityscapes frame resized to ``width_px`` columns."""
    return _CITYSCAPES_FX_2048 * width_px / 2048 * math.pi / 180.0


# The pixel density (px/degree) each zoo architecture's pretrained Cityscapes weights were trained at:
# ESPNetv2 (EdgeNets) at 1024x512, SegFormer (nvidia/segformer-*-finetuned-cityscapes-1024-1024) on
# 1024x1024 crops of the full 2048x1024 frames.
TRAINING_PIXELS_PER_DEGREE: dict[str, float] = {
    **{f"espnetv2-s{s}": _density(1024) for s in ("0.5", "1.0", "1.5", "2.0")},
    **{f"segformer-b{i}": _density(2048) for i in range(6)},
}


def panorama_pixels_per_degree(width: int) -> float:
    """An ERP image's horizontal density: ``width`` columns cover 360 degrees."""
    return width / 360.0


def auto_scale(architecture: str, panorama_width: int) -> float:
    """``s`` that brings a ``panorama_width``-column ERP image to ``architecture``'s training density."""
    key = architecture.lower()
    if key not in TRAINING_PIXELS_PER_DEGREE:
        raise ConfigError(f"scale 'auto' needs the training pixel density of '{architecture}', which the zoo "
                          f"does not know ({', '.join(sorted(TRAINING_PIXELS_PER_DEGREE))}); give a number")
    return TRAINING_PIXELS_PER_DEGREE[key] / panorama_pixels_per_degree(panorama_width)


def parse_scale(value: float | int | str) -> float | str:
    """A scale setting: a positive number or ``"auto"`` (a clear :class:`ConfigError` otherwise)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"scale must be a positive number or 'auto', got '{value}'") from None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"scale must be a positive number or 'auto', got {value!r}")
    return float(value)


def resolve_scale(value: float | int | str, architecture: str | None, panorama_width: int) -> float:
    """The numeric scale of a setting (``auto`` via :func:`auto_scale`)."""
    parsed = parse_scale(value)
    if parsed == "auto":
        if architecture is None:
            raise ConfigError("scale 'auto' needs the model's architecture name; give a number")
        return auto_scale(architecture, panorama_width)
    return float(parsed)


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The input size ``(round(h·s), round(w·s))`` (at least 1 pixel) the segmenter sees."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def forward_at_scale(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """``forward`` on ``(N, 3, H, W)`` images resized by ``scale``; logits come back at ``H x W``.

    ``forward`` maps 0..255 RGB images (resized ones are float) to ``(N, C, h, w)``
    logits. Bilinear both ways (antialiased when shrinking); ``scale == 1`` calls ``forward`` on the
    images unchanged, so results are bit-identical to an unscaled run.
    """
    if scale == 1.0:
        return forward(images)
    height, width = images.shape[-2:]
    size = scaled_size(height, width, scale)
    resized = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False,
                            antialias=scale < 1.0)
    logits = forward(resized)
    return F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False,
                         antialias=scale > 1.0)
