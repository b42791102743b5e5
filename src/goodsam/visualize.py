"""Colour overlays with a legend, thumbnails and the HTML gallery of a prediction run."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from goodsam.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX, colorize
from goodsam.fileio import atomic_write, atomic_write_text
from goodsam.imageio import resize_rgb, target_size


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType: fixed bitmap font
        return ImageFont.load_default()


def present_classes(labels: np.ndarray, num_classes: int = len(CITYSCAPES_CLASSES)) -> list[int]:
    """Class ids present in a label map, most pixels first (ignore and out-of-range ids left out)."""
    counts = np.bincount(labels.reshape(-1).astype(np.int64), minlength=256)[:num_classes]
    return [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]


def legend(class_ids: list[int], width: int, names: tuple[str, ...] = CITYSCAPES_CLASSES,
           palette: np.ndarray = CITYSCAPES_PALETTE) -> np.ndarray:
    """A white strip ``width`` pixels wide with a colour swatch and name per class, wrapped into rows."""
    size = int(np.clip(width / 90, 12, 28))
    font = _font(size)
    pad, swatch = size // 2, size
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    items = [(c, names[c], probe.textlength(names[c], font=font)) for c in class_ids]
    rows: list[list[tuple[int, str, float]]] = [[]]
    x = pad
    for item in items:
        needed = swatch + pad // 2 + item[2] + 2 * pad
        if rows[-1] and x + needed > width:
            rows.append([])
            x = pad
        rows[-1].append(item)
        x += needed
    line = swatch + pad
    strip = Image.new("RGB", (width, pad + line * max(1, len(rows))), "white")
    draw = ImageDraw.Draw(strip)
    for r, row in enumerate(rows):
        x, y = pad, pad + r * line
        for class_id, name, text_width in row:
            colour = tuple(int(v) for v in palette[class_id])
            draw.rectangle([x, y, x + swatch - 1, y + swatch - 1], fill=colour, outline=(0, 0, 0))
            draw.text((x + swatch + pad // 2, y + swatch // 2), name, fill=(0, 0, 0), font=font, anchor="lm")
            x += int(swatch + pad // 2 + text_width + 2 * pad)
    return np.asarray(strip)


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5, with_legend: bool = True,
            names: tuple[str, ...] = CITYSCAPES_CLASSES,
            palette: np.ndarray = CITYSCAPES_PALETTE) -> np.ndarray:
    """Blend class colours over the image (ignore pixels kept); legend of the present classes below."""
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    colours = colorize(labels, palette).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    valid = (labels != IGNORE_INDEX) & (labels < len(palette))
    out = np.where(valid[..., None], blended, image.astype(np.float32)).round().astype(np.uint8)
    if not with_legend:
        return out
    return np.concatenate([out, legend(present_classes(labels, len(names)), out.shape[1], names, palette)])


def save_thumbnail(image: np.ndarray, path: Path, max_width: int = 640) -> Path:
    """A JPEG at most ``max_width`` wide (aspect kept), written atomically."""
    height, width = image.shape[:2]
    if width > max_width:
        image = resize_rgb(image, *target_size(height, width, None, max_width))
    with atomic_write(path) as handle:
        Image.fromarray(image).save(handle, format="JPEG", quality=88)
    return path


@dataclass(frozen=True)
class GalleryItem:
    """One gallery entry; paths relative to the gallery folder."""

    name: str
    thumbnail: str
    overlay: str
    labels: str
    source: str
    classes: tuple[str, ...]
    size: tuple[int, int]


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #f4f4f4; color: #222; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; }
.meta { color: #555; margin-bottom: 1rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1rem; }
figure { margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .6rem; }
figure img { width: 100%; height: auto; display: block; border-radius: 3px; }
figcaption { font-size: .85rem; margin-top: .4rem; line-height: 1.35; }
figcaption a { margin-right: .6rem; }
.classes { color: #555; }
"""


def write_gallery(items: list[GalleryItem], out_dir: Path, title: str = "goodsam predictions",
                  subtitle: str = "") -> Path:
    """``out_dir/index.html``: thumbnails of the overlays linking to full-size overlays and label PNGs."""
    figures = []
    for item in items:
        quote = html.escape
        figures.append(
            f'<figure><a href="{quote(item.overlay)}"><img src="{quote(item.thumbnail)}" '
            f'alt="{quote(item.name)}" loading="lazy"></a><figcaption><b>{quote(item.name)}</b> '
            f'({item.size[1]}&times;{item.size[0]})<br><a href="{quote(item.overlay)}">overlay</a>'
            f'<a href="{quote(item.labels)}">label PNG (trainIds)</a><br>'
            f'<span class="classes">{quote(", ".join(item.classes)) or "no classes"}</span>'
            "</figcaption></figure>")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><div class=\"meta\">{html.escape(subtitle)}</div>"
        f"<div class=\"grid\">{''.join(figures)}</div></body></html>\n")
    return atomic_write_text(out_dir / "index.html", page)
