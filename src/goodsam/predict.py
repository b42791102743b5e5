"""Predict label maps for images or folders: trainId PNGs, colour overlays and an HTML gallery.

Output folder layout::

    OUT/labels/<stem>.png     uint8 trainIds (0..18), the input's size
    OUT/overlays/<stem>.png   Cityscapes colours over the image, legend of the classes present
    OUT/thumbs/<stem>.jpg     overlay thumbnails for the gallery
    OUT/index.html            the gallery
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from goodsam.classes import CITYSCAPES_CLASSES
from goodsam.errors import BatchError, ConfigError, GoodSAMError, ImageError
from goodsam.imageio import list_images, load_rgb, save_png, target_size
from goodsam.inference import (
    ProgressCallback,
    SegmentationModel,
    check_input_size,
    default_scale,
    predict_labels,
)
from goodsam.visualize import GalleryItem, overlay, present_classes, save_thumbnail, write_gallery


@dataclass(frozen=True)
class Prediction:
    """Where one image's outputs went."""

    source: Path
    labels: Path
    overlay: Path | None
    classes: tuple[str, ...]


def collect_inputs(inputs: list[str | Path]) -> list[Path]:
    """Images and folders (their images, not recursive) -> image paths; unique output names checked."""
    if not inputs:
        raise ConfigError("no input images or folders given")
    paths: list[Path] = []
    for item in inputs:
        paths.extend(list_images(item))
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen and seen[path.stem] != path:
            raise ImageError(f"{seen[path.stem]} and {path} would both be written as '{path.stem}'; "
                             "predict them into separate --out folders")
        seen[path.stem] = path
    return list(dict.fromkeys(paths))


def _inference_size(model: SegmentationModel, image: np.ndarray,
                    size: tuple[int | None, int | None]) -> tuple[int, int] | None:
    """The (h, w) to run at: the user's --height/--width (one of them keeps the aspect ratio), else
    the fixed height an ONNX model was exported for, else None (native size)."""
    height, width = size
    if height is None and width is None:
        height = getattr(model, "fixed_height", None)
        if height is None:
            return None
    return target_size(*image.shape[:2], height, width)


def predict_images(model: SegmentationModel, inputs: list[str | Path], out_dir: str | Path, *,
                   window: int | None = None, stride: int | None = None, wrap: bool = False,
                   height: int | None = None, width: int | None = None, scale: float | str | None = None,
                   overlays: bool = True,
                   gallery: bool = True, alpha: float = 0.5, title: str = "goodsam predictions",
                   progress: ProgressCallback | None = None, strict: bool = False) -> list[Prediction]:
    """Segment every input image; outputs at the input's own resolution (see the module docstring).

    ``scale``: the model's input scale (:func:`goodsam.inference.predict_logits`; None: the one the model
    records, :func:`goodsam.inference.default_scale`). An image that cannot
    be read or is too small is skipped and every other one done; the skipped ones are then raised
    together as :class:`BatchError` (``result``: the predictions made); ``strict`` raises the first."""
    paths = collect_inputs(inputs)
    scale = default_scale(model, scale)
    out = Path(out_dir)
    results: list[Prediction] = []
    items: list[GalleryItem] = []
    failures: list[tuple[Path, str]] = []
    for index, path in enumerate(paths):
        try:
            result, item = _predict_one(model, path, out, window=window, stride=stride, wrap=wrap,
                                        size=(height, width), scale=scale, overlays=overlays or gallery,
                                        gallery=gallery, alpha=alpha)
        except GoodSAMError as exc:
            if strict:
                raise
            failures.append((path, str(exc)))
        else:
            results.append(result)
            if item is not None:
                items.append(item)
        if progress is not None:
            progress(index + 1, len(paths), path.name)
    if gallery and items:
        mode = f"sliding window {window}/{stride or window // 2}" if window else "whole image"
        mode += f", input scale {scale}" if scale != 1.0 else ""
        write_gallery(items, out, title, f"model {getattr(model, 'name', '?')}, {mode}, {len(items)} images")
    if failures:
        raise BatchError("images", len(paths), failures, results)
    return results


def _predict_one(model: SegmentationModel, path: Path, out: Path, *, window: int | None, stride: int | None,
                 wrap: bool, size: tuple[int | None, int | None], scale: float | str, overlays: bool,
                 gallery: bool, alpha: float) -> tuple[Prediction, GalleryItem | None]:
    """Segment one image and write its outputs."""
    image = load_rgb(path)
    check_input_size(model, path, image)
    labels = predict_labels(model, image, window, stride, wrap, size=_inference_size(model, image, size),
                            output_size=image.shape[:2], scale=scale)
    label_path = save_png(out / "labels" / f"{path.stem}.png", labels)
    names = tuple(CITYSCAPES_CLASSES[c] for c in present_classes(labels))
    overlay_path, item = None, None
    if overlays:
        picture = overlay(image, labels, alpha)
        overlay_path = save_png(out / "overlays" / f"{path.stem}.png", picture)
        if gallery:
            thumb = save_thumbnail(picture, out / "thumbs" / f"{path.stem}.jpg")
            item = GalleryItem(path.stem, thumb.relative_to(out).as_posix(),
                               overlay_path.relative_to(out).as_posix(),
                               label_path.relative_to(out).as_posix(), str(path), names, image.shape[:2])
    return Prediction(path, label_path, overlay_path, names), item
