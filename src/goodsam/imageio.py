"""Reading, writing and resizing images, with checks that turn bad files into one-line errors.

The resize rules live here once, so that everything that must line up (the SAM mask cache and the
training images, predictions and labels) resizes the same way: :func:`target_size` picks the size,
:func:`resize_rgb` (bilinear) and :func:`resize_label` (nearest neighbour) apply it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from goodsam.errors import ConfigError, ImageError
from goodsam.fileio import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# The smallest image side accepted for segmentation: the models' output stride (32), below which their
# deepest feature map has no pixel, and SAM's masks are no longer meaningful.
MIN_IMAGE_SIDE = 32

_CHANNELS_BY_MODE = {"L": 1, "1": 1, "LA": 2, "RGBA": 4, "CMYK": 4, "RGBa": 4, "La": 2}


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read image {path}: corrupt or not an image ({exc})") from None
    return image


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Load an 8-bit, 3-channel image as an HxWx3 uint8 RGB array.

    Grey (1 channel), RGBA/CMYK (4 channels) and 16/32-bit images are refused rather than
    silently converted, since a silent conversion changes what the models see.
    """
    path = Path(path)
    image = _open(path)
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        raise ImageError(f"{path}: {mode} is a 16/32-bit image; convert it to 8-bit RGB first")
    if mode in _CHANNELS_BY_MODE:
        channels = _CHANNELS_BY_MODE[mode]
        raise ImageError(f"{path}: image has {channels} channel(s) ({mode}); an 8-bit RGB image is needed")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        if image.mode == "RGBA":
            raise ImageError(f"{path}: palette image with transparency (4 channels); RGB is needed")
    elif mode != "RGB":
        raise ImageError(f"{path}: unsupported image mode {mode}; an 8-bit RGB image is needed")
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageError(f"{path}: expected an HxWx3 image, got shape {array.shape}")
    return np.ascontiguousarray(array)


def load_label(path: str | os.PathLike) -> np.ndarray:
    """Load a single-channel 8-bit label image (class ids) as an HxW uint8 array."""
    path = Path(path)
    image = _open(path)
    if image.mode not in ("L", "P"):
        raise ImageError(f"{path}: label image must be single-channel 8-bit (got mode {image.mode})")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def save_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 HxW or HxWx3 array as PNG atomically (write to a temp file, then rename)."""
    path = Path(path)
    with atomic_write(path) as handle:
        Image.fromarray(np.ascontiguousarray(array)).save(handle, format="PNG")
    return path


def target_size(height: int, width: int, new_height: int | None, new_width: int | None) -> tuple[int, int]:
    """The size an ``height x width`` image is resized to: both given -> exactly that; one given -> the
    other follows the aspect ratio (rounded, at least 1); none -> unchanged."""
    for name, value in (("height", new_height), ("width", new_width)):
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be positive, got {value}")
    if new_height and new_width:
        return new_height, new_width
    if new_height:
        return new_height, max(1, round(width * new_height / height))
    if new_width:
        return max(1, round(height * new_width / width)), new_width
    return height, width


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 image resized to ``height x width`` (bilinear, PIL); the image itself if it
    already has that size."""
    if image.shape[:2] == (height, width):
        return image
    return np.array(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def resample(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` resized to ``1 / factor`` of its height and width and back (:func:`resize_rgb`): the
    detail of the same view captured ``factor`` times smaller and upscaled. ``factor`` 1: the image."""
    if factor < 1:
        raise ValueError(f"resample factor must be >= 1, not {factor}")
    if factor == 1:
        return image
    height, width = image.shape[:2]
    small = resize_rgb(image, max(1, round(height / factor)), max(1, round(width / factor)))
    return resize_rgb(small, height, width)


def resize_label(label: np.ndarray, height: int, width: int) -> np.ndarray:
    """An ``(H, W)`` label map resized to ``height x width`` (nearest neighbour, so no new class ids); the
    map itself if it already has that size."""
    if label.shape[:2] == (height, width):
        return label
    return np.array(Image.fromarray(label).resize((width, height), Image.NEAREST))


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Sorted image files directly in ``folder`` (or the file itself); errors on empty or missing."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise ImageError(f"no such file or folder: {folder}")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise ImageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder}")
    return images


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header, with a one-line error for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read image {path}: corrupt or not an image ({exc})") from None


def check_image_size(path: str | os.PathLike, height: int, width: int, minimum: int = MIN_IMAGE_SIDE,
                     needed_by: str = "SAM") -> None:
    """Refuse an image smaller than ``minimum`` pixels on a side (``needed_by``: who needs it, for the
    message)."""
    if min(height, width) < minimum:
        raise ImageError(f"{path}: image is {width}x{height} pixels; {needed_by} needs at least {minimum} "
                         "pixels on each side")
