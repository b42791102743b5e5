"""Colour overlays with a legend, thumbnails, the HTML gallery of a prediction run, and stacked panels
(input, then one titled overlay row per model, one legend) saved as small PNGs for the docs."""

from __future__ import annotations

import html
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from goodsam.classes import (
    CATEGORY_NAMES,
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    IGNORE_INDEX,
    TRAINID_TO_CATEGORY,
    colorize,
)
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


# A category is drawn in the colour of one of its trainIds: road, building, pole, vegetation, sky,
# person, car (category ids 1..7; 0 = void stays uncoloured).
CATEGORY_DISPLAY = (IGNORE_INDEX, 0, 2, 5, 8, 10, 11, 13)
CATEGORY_LEGEND = tuple(
    CATEGORY_NAMES[CATEGORY_DISPLAY.index(i) - 1] if i in CATEGORY_DISPLAY[1:] else name
    for i, name in enumerate(CITYSCAPES_CLASSES))
PANEL_MAX_BYTES = 150_000
PANEL_WIDTHS = (1024, 896, 768, 640, 512, 400)
PANEL_COLOURS = (256, 128, 64, 32)


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


def save_small_png(image: np.ndarray, path: Path, max_bytes: int = PANEL_MAX_BYTES) -> dict:
    """Write the widest, then most colourful, PNG of ``image`` under ``max_bytes`` (atomically);
    returns ``{path, bytes, width, colours}``."""
    data, width, colours = b"", 0, 0
    for width in PANEL_WIDTHS:
        for colours in PANEL_COLOURS:
            data = encode_png(image, width, colours)
            if len(data) <= max_bytes:
                break
        if len(data) <= max_bytes:
            break
    with atomic_write(path) as handle:
        handle.write(data)
    return {"path": str(path), "bytes": len(data), "width": width, "colours": colours}


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
