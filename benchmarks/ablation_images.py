"""Prediction overlays of the ablations: small stacked PNGs (input, then one row per model) for the docs.

Every row is the 400x2048 prediction blended over the panorama, titled in its top-left corner; one
legend of the classes shown closes the picture. Files are kept under ``max_bytes`` by shrinking the
width and the palette (PNG with an adaptive palette) until they fit.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from goodsam.classes import CATEGORY_NAMES, CITYSCAPES_CLASSES, IGNORE_INDEX, TRAINID_TO_CATEGORY
from goodsam.inference import predict_labels
from goodsam.visualize import legend, overlay, present_classes

MAX_BYTES = 150_000
WIDTHS = (1024, 896, 768, 640, 512, 400)
COLOURS = (256, 128, 64, 32)
# A category is drawn in the colour of one of its trainIds: road, building, pole, vegetation, sky,
# person, car (category ids 1..7; 0 = void stays uncoloured).
CATEGORY_DISPLAY = (IGNORE_INDEX, 0, 2, 5, 8, 10, 11, 13)
CATEGORY_LEGEND = tuple(
    CATEGORY_NAMES[CATEGORY_DISPLAY.index(i) - 1] if i in CATEGORY_DISPLAY[1:] else name
    for i, name in enumerate(CITYSCAPES_CLASSES))


def categories_as_train_ids(category_ids: np.ndarray) -> np.ndarray:
    """Category ids (0 void, 1..7) -> display trainIds (255 for void and anything else)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[: len(CATEGORY_DISPLAY)] = CATEGORY_DISPLAY
    return lut[category_ids.astype(np.uint8)]


def train_ids_as_categories(train_ids: np.ndarray) -> np.ndarray:
    """Predicted trainIds -> display trainIds of their categories."""
    lut = np.full(256, 0, dtype=np.uint8)
    lut[: len(TRAINID_TO_CATEGORY)] = TRAINID_TO_CATEGORY
    return categories_as_train_ids(lut[train_ids.astype(np.uint8)])


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # old Pillow or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def titled(image: np.ndarray, title: str) -> np.ndarray:
    """``image`` with ``title`` in a white box at its top-left corner."""
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    font = _font(max(14, image.shape[1] // 60))
    box = draw.textbbox((8, 6), title, font=font)
    draw.rectangle((box[0] - 5, box[1] - 4, box[2] + 5, box[3] + 4), fill="white")
    draw.text((8, 6), title, fill="black", font=font)
    return np.asarray(picture)


def panel(image: np.ndarray, rows: list[tuple[str, np.ndarray]], names: tuple[str, ...] = CITYSCAPES_CLASSES
          ) -> np.ndarray:
    """The input, then every ``(title, display trainIds)`` row blended over it, then one legend."""
    parts = [titled(image, "input")]
    shown: set[int] = set()
    for title, labels in rows:
        parts.append(titled(overlay(image, labels, alpha=0.6, with_legend=False), title))
        shown.update(present_classes(labels))
    ordered = [c for c in range(len(CITYSCAPES_CLASSES)) if c in shown]
    parts.append(legend(ordered, image.shape[1], names))
    return np.concatenate(parts)


def encode_png(image: np.ndarray, width: int, colours: int) -> bytes:
    """PNG bytes of ``image`` resized to ``width`` (aspect kept) with an adaptive palette."""
    picture = Image.fromarray(image)
    if picture.width > width:
        height = max(1, round(picture.height * width / picture.width))
        picture = picture.resize((width, height), Image.LANCZOS)
    picture = picture.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def save_small_png(image: np.ndarray, path: Path, max_bytes: int = MAX_BYTES) -> dict:
    """Write the widest / most colourful PNG of ``image`` under ``max_bytes``; returns its size."""
    data, width, colours = b"", 0, 0
    for width in WIDTHS:
        for colours in COLOURS:
            data = encode_png(image, width, colours)
            if len(data) <= max_bytes:
                break
        if len(data) <= max_bytes:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return {"path": str(path), "bytes": len(data), "width": width, "colours": colours}


def predict(model, image: np.ndarray, window: int | None, stride: int | None) -> np.ndarray:
    """HxW trainIds of one panorama, whole (``window=None``) or by sliding windows."""
    return predict_labels(model, image, window, stride)
