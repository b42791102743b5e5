"""SegFormer (Xie et al., NeurIPS 2021) B0..B5 via Hugging Face ``transformers``.

Random initialisation builds the architecture from :data:`VARIANTS` and never touches the network;
pretrained models come from a hub id (``nvidia/segformer-b5-finetuned-cityscapes-1024-1024``) or a local
directory saved with ``save_pretrained``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from goodsam.errors import AssetError, ConfigError
from goodsam.imageio import MIN_IMAGE_SIDE
from goodsam.segmenters.base import Segmenter, SegmenterOutput

NUM_CLASSES = 19
MIN_SIZE = 32  # the first stage's 8x spatial-reduction conv needs a 1/4-resolution map of at least 8x8


@dataclass(frozen=True)
class SegformerVariant:
    """The MiT encoder depths and widths and the all-MLP decoder width of one SegFormer size."""

    depths: tuple[int, int, int, int]
    hidden_sizes: tuple[int, int, int, int]
    decoder_hidden_size: int


_WIDE = (64, 128, 320, 512)
VARIANTS: dict[str, SegformerVariant] = {
    "segformer-b0": SegformerVariant((2, 2, 2, 2), (32, 64, 160, 256), 256),
    "segformer-b1": SegformerVariant((2, 2, 2, 2), _WIDE, 256),
    "segformer-b2": SegformerVariant((3, 4, 6, 3), _WIDE, 768),
    "segformer-b3": SegformerVariant((3, 4, 18, 3), _WIDE, 768),
    "segformer-b4": SegformerVariant((3, 8, 27, 3), _WIDE, 768),
    "segformer-b5": SegformerVariant((3, 6, 40, 3), _WIDE, 768),
}


def segformer_config(variant: str, num_labels: int = NUM_CLASSES):
    """A ``SegformerConfig`` for ``segformer-b0`` .. ``segformer-b5`` (heads, ratios as in the paper)."""
    from transformers import SegformerConfig

    if variant not in VARIANTS:
        raise ConfigError(f"unknown SegFormer variant '{variant}'; known: {', '.join(VARIANTS)}")
    spec = VARIANTS[variant]
    return SegformerConfig(depths=list(spec.depths), hidden_sizes=list(spec.hidden_sizes),
                           decoder_hidden_size=spec.decoder_hidden_size, num_attention_heads=[1, 2, 5, 8],
                           sr_ratios=[8, 4, 2, 1], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
                           mlp_ratios=[4, 4, 4, 4], num_labels=num_labels)


def variant_of(config) -> str | None:
    """Which of B0..B5 a ``SegformerConfig`` describes, or None."""
    shape = (tuple(config.depths), tuple(config.hidden_sizes), config.decoder_hidden_size)
    for name, spec in VARIANTS.items():
        if shape == (spec.depths, spec.hidden_sizes, spec.decoder_hidden_size):
            return name
    return None


def _load_pretrained(source: str | os.PathLike):
    """``SegformerForSemanticSegmentation.from_pretrained`` with one-line errors."""
    import transformers
    from transformers import SegformerForSemanticSegmentation

    text = str(source)
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        return SegformerForSemanticSegmentation.from_pretrained(text, dtype=torch.float32)
    except Exception as exc:  # hub / IO / config errors come in many types; report one line
        where = "directory" if Path(text).expanduser().is_dir() else "hub id"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AssetError(
            f"cannot load SegFormer from {where} '{text}' ({reason}); pass a directory saved with "
            "save_pretrained, or a hub id with network access (or in the Hugging Face cache)") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()


class SegFormer(Segmenter):
    """A SegFormer with the :class:`Segmenter` interface.

    ``logits``: bilinear upsampling (align_corners=False) of the 1/4-resolution decoder output to the
    input size; ``features``: the four encoder stages (1/4 .. 1/32), finest first.
    """

    num_classes = NUM_CLASSES
    min_input_side = MIN_IMAGE_SIDE

    def __init__(self, variant: str | None = "segformer-b0", weights: str | os.PathLike | None = None):
        """Random ``variant`` if ``weights`` is None; else load ``weights`` (then ``variant`` may be None,
        and must match the loaded model if given)."""
        super().__init__()
        from transformers import SegformerForSemanticSegmentation

        if weights is None:
            if variant is None:
                raise ConfigError("a randomly initialised SegFormer needs a variant (segformer-b0 .. b5)")
            self.model = SegformerForSemanticSegmentation(segformer_config(variant))
            self.name = variant
            return
        self.model = _load_pretrained(weights)
        labels = self.model.config.num_labels
        if labels != NUM_CLASSES:
            raise ConfigError(f"SegFormer '{weights}' predicts {labels} classes, not the 19 Cityscapes "
                              "trainIds; use a Cityscapes fine-tuned model")
        found = variant_of(self.model.config)
        if variant is not None and found is not None and found != variant:
            raise ConfigError(f"'{weights}' holds a {found}, not a {variant}; build {found} instead or "
                              "pass other weights")
        self.name = found or variant or "segformer"

    def forward(self, pixel_values: torch.Tensor) -> SegmenterOutput:
        if not torch.jit.is_tracing() and min(pixel_values.shape[-2:]) < MIN_SIZE:
            raise ConfigError(f"SegFormer needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels, got "
                              f"{pixel_values.shape[-2]}x{pixel_values.shape[-1]}")
        out = self.model(pixel_values=pixel_values, output_hidden_states=True)
        logits = F.interpolate(out.logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
        return SegmenterOutput(logits, tuple(out.hidden_states))
