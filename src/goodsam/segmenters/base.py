"""The segmenter interface shared by teacher assistants (TA) and students.

A segmenter owns its preprocessing: it takes uint8 RGB images and returns per-class logits at the
input resolution for the 19 Cityscapes trainIds, plus multi-level features for MKA.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from goodsam.errors import AssetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SegmenterOutput:
    """Typed output of every segmenter.

    logits: (B, num_classes, H, W) class scores at the input resolution (19 Cityscapes trainIds).
    features: multi-level feature maps, finest first, each (B, C_l, H_l, W_l).
    raw_logits: the network's full output when it has more channels than ``logits`` (e.g. ESPNetv2's
    20 = 19 trainIds + void), else None.
    """

    logits: torch.Tensor
    features: tuple[torch.Tensor, ...] = ()
    raw_logits: torch.Tensor | None = None


class Segmenter(nn.Module):
    """Base class: subclasses implement :meth:`forward` on normalised pixel values."""

    name: str = "segmenter"
    num_classes: int = 19
    # The smallest image side the network segments meaningfully (real architectures: their output
    # stride, :data:`goodsam.imageio.MIN_IMAGE_SIDE`); 1 for hand-made stand-ins.
    min_input_side: int = 1

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in 0..255 (uint8 or float) -> normalised float pixel values."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) RGB images, got {tuple(images.shape)}")
        return (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std

    def forward(self, pixel_values: torch.Tensor) -> SegmenterOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def segment(self, images: torch.Tensor) -> SegmenterOutput:
        """Preprocess 0..255 RGB images and run the network."""
        return self(self.preprocess(images.to(self.pixel_mean.device)))


def to_image_tensor(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """HxWx3 uint8 array(s) -> (B, 3, H, W) uint8 tensor."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    stacked = np.stack(list(images))
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: object, target: str) -> None:
    """Load ``state`` into ``model`` (``strict=True``) after checking tensor names and shapes, so a wrong
    file fails with one line: :class:`AssetError` ``<source> does not match <target>: …``."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    if missing or unexpected or reshaped:
        raise AssetError(f"{source} does not match {target}: {len(missing)} missing, {len(unexpected)} "
                         f"unexpected and {len(reshaped)} mis-shaped tensors (e.g. "
                         f"{(missing or unexpected or reshaped)[0]})")
    model.load_state_dict(state, strict=True)
