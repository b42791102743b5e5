"""Horizontal sliding windows over an ERP panorama (GoodSAM §3.2, DAR).

A panorama of ``height x width`` pixels is cut into full-height windows ``W_i`` of ``window_width``
columns placed every ``stride`` columns; adjacent windows ``W_i, W_{i+1}`` share an overlap ``O_i``.
With the defaults (512, 256) a DensePASS panorama of width 2048 gives 7 windows and 6 overlaps of 256
columns.

Geometry rules:

* **Odd widths** (``width - window_width`` not a multiple of ``stride``): windows start at 0, stride,
  … and one more window aligned to the right edge is added, so every column is covered; its overlap
  with the previous window is wider than the others.
* **Narrow panoramas** (``width <= window_width``): one window of full width (narrower than the
  requested ``window_width``, which the layout still records), no overlaps.
* **Wrap** (``wrap=True``, beyond the paper): a 360° panorama has no left/right edge, so windows start
  every ``stride`` columns up to ``width`` and take columns modulo ``width``; the last overlap joins the
  last and the first window across the seam.

Every window and overlap is described by its first panorama column ``x0`` and ``width``; its columns
are ``(x0 + arange(width)) % W`` (the modulo only matters with ``wrap``). An overlap starts at
column ``right_offset`` (always 0) of its right window and ``left_offset`` of its left window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from goodsam.errors import ConfigError

ArrayLike = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class Window:
    """Window ``index``: panorama columns ``x0 .. x0 + width - 1`` (modulo W when wrapping)."""

    index: int
    x0: int
    width: int


@dataclass(frozen=True)
class Overlap:
    """Columns shared by windows ``left`` and ``right`` (``O_i`` in the paper).

    ``left_offset``/``right_offset``: the overlap's first column inside the left/right window.
    """

    left: int
    right: int
    x0: int
    width: int
    left_offset: int = 0
    right_offset: int = 0


@dataclass(frozen=True)
class WindowLayout:
    """All windows and overlaps of a ``height x width`` panorama."""

    height: int
    width: int
    window_width: int
    stride: int
    wrap: bool
    windows: tuple[Window, ...]
    overlaps: tuple[Overlap, ...]

    @property
    def num_windows(self) -> int:
        return len(self.windows)

    @property
    def num_overlaps(self) -> int:
        return len(self.overlaps)

    def window_columns(self, index: int) -> np.ndarray:
        """Panorama column indices (int64) of window ``index``."""
        window = self.windows[index]
        return (window.x0 + np.arange(window.width)) % self.width

    def overlap_columns(self, index: int) -> np.ndarray:
        """Panorama column indices (int64) of overlap ``index``."""
        overlap = self.overlaps[index]
        return (overlap.x0 + np.arange(overlap.width)) % self.width

    def as_dict(self) -> dict:
        """The parameters that define the layout (JSON-friendly; :func:`layout_from_dict` inverts it)."""
        return {"height": self.height, "width": self.width, "window_width": self.window_width,
                "stride": self.stride, "wrap": self.wrap}


def layout_from_dict(params: dict) -> WindowLayout:
    """Rebuild a layout from :meth:`WindowLayout.as_dict`."""
    return sliding_windows(int(params["height"]), int(params["width"]), int(params["window_width"]),
                           int(params["stride"]), bool(params["wrap"]))


def _window_starts(width: int, window_width: int, stride: int, wrap: bool) -> list[int]:
    if wrap:
        return list(range(0, width, stride))
    starts = list(range(0, width - window_width + 1, stride))
    if starts[-1] + window_width < width:  # odd width: one more window flush with the right edge
        starts.append(width - window_width)
    return starts


def sliding_windows(height: int, width: int, window_width: int = 512, stride: int = 256,
                    wrap: bool = False) -> WindowLayout:
    """The sliding-window layout of a ``height x width`` panorama (see the module docstring)."""
    for name, value in (("height", height), ("width", width), ("window width", window_width),
                        ("stride", stride)):
        if int(value) != value or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value}")
    if stride > window_width:
        raise ConfigError(f"stride {stride} is larger than the window width {window_width}: columns "
                          "between windows would never be seen")
    if width <= window_width:
        return WindowLayout(height, width, window_width, stride, wrap, (Window(0, 0, width),), ())
    starts = _window_starts(width, window_width, stride, wrap)
    windows = tuple(Window(i, x0, window_width) for i, x0 in enumerate(starts))
    overlaps = []
    pairs = [(i, i + 1) for i in range(len(starts) - 1)]
    if wrap:
        pairs.append((len(starts) - 1, 0))
    for left, right in pairs:
        right_x0 = starts[right] + (width if right < left else 0)  # unwrapped start of the right window
        shared = starts[left] + window_width - right_x0
        if shared > 0:
            overlaps.append(Overlap(left, right, starts[right], shared, right_x0 - starts[left], 0))
    return WindowLayout(height, width, window_width, stride, wrap, windows, tuple(overlaps))


def _take_columns(data: ArrayLike, columns: np.ndarray) -> ArrayLike:
    if isinstance(data, np.ndarray):
        return np.take(data, columns, axis=-1)
    return data.index_select(-1, torch.as_tensor(columns, device=data.device))


def _check_size(data: ArrayLike, layout: WindowLayout) -> None:
    if tuple(data.shape[-2:]) != (layout.height, layout.width):
        raise ValueError(f"expected a map of size {layout.height}x{layout.width}, "
                         f"got {tuple(data.shape[-2:])}")


def crop_windows(data: ArrayLike, layout: WindowLayout) -> ArrayLike:
    """``data[..., H, W]`` -> the windows stacked first: ``(N, ..., H, w)`` (w = the windows' width).

    Works on torch tensors (differentiable, any device) and numpy arrays.
    """
    _check_size(data, layout)
    columns = np.stack([layout.window_columns(i) for i in range(layout.num_windows)])  # (N, w)
    taken = _take_columns(data, columns.reshape(-1))  # (..., H, N*w)
    shape = (*taken.shape[:-1], layout.num_windows, columns.shape[1])
    taken = taken.reshape(shape)
    return np.moveaxis(taken, -2, 0) if isinstance(taken, np.ndarray) else taken.movedim(-2, 0)


def crop_overlaps(data: ArrayLike, layout: WindowLayout) -> list[ArrayLike]:
    """``data[..., H, W]`` -> one ``(..., H, overlap_width)`` crop per overlap (widths may differ)."""
    _check_size(data, layout)
    return [_take_columns(data, layout.overlap_columns(k)) for k in range(layout.num_overlaps)]


def overlap_pairs(window_maps: ArrayLike, layout: WindowLayout) -> list[tuple[ArrayLike, ArrayLike]]:
    """Per overlap ``O_k``, the two windows' maps on it: ``(maps[left][..., O_k], maps[right][..., O_k])``.

    ``window_maps``: ``(N, ..., H, window_width)``, e.g. the TA logits of every window.
    """
    pairs = []
    for overlap in layout.overlaps:
        a = window_maps[overlap.left][..., overlap.left_offset:overlap.left_offset + overlap.width]
        b = window_maps[overlap.right][..., overlap.right_offset:overlap.right_offset + overlap.width]
        pairs.append((a, b))
    return pairs


def stitch_windows(window_maps: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
    """``(N, ..., H, w)`` window maps -> ``(..., H, W)`` panorama map; overlapping columns are averaged.

    Meant for float maps (logits, probabilities); integer maps are averaged as floats. Differentiable.
    """
    if window_maps.shape[0] != layout.num_windows:
        raise ValueError(f"expected {layout.num_windows} window maps, got {window_maps.shape[0]}")
    maps = window_maps if window_maps.is_floating_point() else window_maps.float()
    columns = torch.as_tensor(
        np.concatenate([layout.window_columns(i) for i in range(layout.num_windows)]), device=maps.device)
    flat = maps.movedim(0, -2).flatten(-2)  # (..., H, N*w)
    total = flat.new_zeros((*flat.shape[:-1], layout.width)).index_add(-1, columns, flat)
    count = torch.bincount(columns, minlength=layout.width).to(flat.dtype)
    if bool((count == 0).any()):
        raise ValueError("the layout leaves some columns uncovered")
    return total / count


def nonoverlapping_windows(layout: WindowLayout) -> list[Window]:
    """A tiling of the panorama by windows, used to assemble a panorama from window predictions (eq. 4).

    Each returned :class:`Window` names the sliding window it is cut from (``index``) and the panorama
    columns it contributes, ``x0 .. x0 + width - 1``; the tiles partition ``0 .. W-1`` exactly. Greedy
    from the left: the tile starting at column ``c`` comes from the window covering ``c`` that reaches
    furthest right. When the stride divides the window width (the paper's 512/256) every tile is a whole
    window (W_1, W_3, W_5, W_7 for a 2048-wide panorama). For odd widths the last tile is the right part
    of the right-aligned last window (e.g. width 2100: four whole windows, then columns 2048..2099 of the
    window starting at 1588, i.e. its offset 460). With ``wrap`` the tiles stop at the seam (column W-1).
    The offset of a tile in its window is ``(x0 - layout.windows[index].x0) % W``.
    """
    tiles: list[Window] = []
    column = 0
    while column < layout.width:
        covering = [w for w in layout.windows if w.x0 <= column < w.x0 + w.width]
        best = max(covering, key=lambda w: (w.x0 + w.width, w.x0))
        end = min(best.x0 + best.width, layout.width)
        tiles.append(Window(best.index, column, end - column))
        column = end
    return tiles


def tile_offset(layout: WindowLayout, tile: Window) -> int:
    """Column of ``tile`` (from :func:`nonoverlapping_windows`) inside its sliding window."""
    return (tile.x0 - layout.windows[tile.index].x0) % layout.width


def assemble_tiles(window_maps: ArrayLike, layout: WindowLayout) -> ArrayLike:
    """``(N, ..., H, w)`` window maps -> ``(..., H, W)`` by the non-overlapping tiling (no averaging)."""
    parts = []
    for tile in nonoverlapping_windows(layout):
        offset = tile_offset(layout, tile)
        parts.append(window_maps[tile.index][..., offset:offset + tile.width])
    if isinstance(window_maps, np.ndarray):
        return np.concatenate(parts, axis=-1)
    return torch.cat(parts, dim=-1)
