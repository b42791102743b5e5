"""Training data: panoramas resized to a fixed ERP band, their cached SAM masks, and the batch order.

* Images are read as 8-bit RGB and resized to the config's ``height x width`` with
  :func:`goodsam.imageio.resize_rgb`, the rule ``goodsam masks --height --width`` uses, so the cached
  masks line up with what the models see.
* :func:`fit_erp_band` prepares arbitrary panoramas as a fixed ERP band (used by ``goodsam demo``);
  :func:`fit_erp_band_labelled` does the same to a labelled panorama.
* Batches are a pure function of ``(seed, step)`` (:func:`global_indices`): epoch ``e`` visits the
  images in the permutation ``default_rng([seed, e])``; rank ``r`` of ``R`` takes the ``r``-th equal
  chunk of each global batch (:func:`rank_indices`). Resuming at any step continues the same sequence,
  and any number of processes sees the same global batches.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from goodsam.dar import boundary_from_masks
from goodsam.errors import ConfigError
from goodsam.imageio import list_images, load_rgb, resize_label, resize_rgb, save_png
from goodsam.panorama.windows import WindowLayout
from goodsam.sam.base import MaskSet
from goodsam.sam.cache import MaskCacheError, cache_path, load_panorama_masks


def fit_erp_band(image: np.ndarray, height: int = 400, width: int = 2048) -> np.ndarray:
    """A panorama as a ``height x width`` ERP band around the horizon (square pixels, like DensePASS).

    A full equirectangular image (aspect 2:1, 180° of latitude) is first cropped to the rows of the
    band's latitude span, ``360° * height / width`` (70.3° for 400x2048), centred on the horizon (its
    middle row); this drops the poles (sky and, in street panoramas, the camera car). Anything else —
    already a band, such as the unfolded PASS images (2048x692) — is resized as is.
    """
    top, count = erp_band_rows(image.shape[0], image.shape[1], height, width)
    return resize_rgb(np.ascontiguousarray(image[top:top + count]), height, width)


def fit_erp_folder(source: str | Path, out_dir: str | Path, height: int, width: int, *,
                   limit: int | None = None, overwrite: bool = False) -> list[Path]:
    """:func:`fit_erp_band` of the images of ``source`` (the first ``limit`` of them), written as
    ``out_dir/<stem>.png``; files already there are kept unless ``overwrite``. Returns the written paths."""
    written = []
    for path in list_images(source)[:limit]:
        target = Path(out_dir) / f"{path.stem}.png"
        if overwrite or not target.is_file():
            save_png(target, fit_erp_band(load_rgb(path), height, width))
        written.append(target)
    return written


def erp_band_rows(rows: int, cols: int, height: int, width: int) -> tuple[int, int]:
    """(first row, number of rows) of :func:`fit_erp_band`'s crop of a ``rows x cols`` image (all rows
    unless it is a full 2:1 ERP image taller than the band)."""
    if cols != 2 * rows:
        return 0, rows
    band = max(1, round(rows * (360.0 * height / width) / 180.0))
    if band >= rows:
        return 0, rows
    return (rows - band) // 2, band


def fit_erp_band_labelled(image: np.ndarray, label: np.ndarray, height: int = 400, width: int = 2048
                          ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fit_erp_band` of an image and its label map: the same rows, the labels resized with
    nearest neighbour (no blended ids)."""
    top, count = erp_band_rows(image.shape[0], image.shape[1], height, width)
    label = np.ascontiguousarray(label[top:top + count])
    return fit_erp_band(image, height, width), resize_label(label, height, width)


def global_indices(step: int, batch_size: int, num_items: int, seed: int) -> list[int]:
    """Dataset indices of global batch ``step``: consecutive slices of per-epoch permutations."""
    if num_items < 1:
        raise ConfigError("no training images")
    out = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, num_items)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(num_items)[offset]))
    return out


def rank_indices(indices: list[int], rank: int, world_size: int) -> list[int]:
    """This rank's equal, contiguous share of a global batch (batch size must divide evenly)."""
    if len(indices) % world_size:
        raise ConfigError(f"data.batch_size {len(indices)} is not a multiple of the {world_size} processes")
    share = len(indices) // world_size
    return indices[rank * share:(rank + 1) * share]


@dataclass
class TrainingSample:
    """One training panorama: image ``(3, H, W)`` uint8, SAM masks per window, ``B_SAM`` per overlap."""

    index: int
    name: str
    image: torch.Tensor
    window_masks: list[MaskSet]
    overlap_boundaries: list[torch.Tensor]


class PanoramaDataset:
    """The panoramas of a folder and their cached masks (kept in memory, least recently used first out)."""

    def __init__(self, data_dir: str | Path, masks_dir: str | Path, layout: WindowLayout,
                 keep_in_memory: int = 8):
        self.paths = list_images(data_dir)
        self.masks_dir = Path(masks_dir)
        self.layout = layout
        self.keep = max(1, keep_in_memory)
        self._cache: OrderedDict[int, TrainingSample] = OrderedDict()

    def __len__(self) -> int:
        return len(self.paths)

    def missing_masks(self) -> list[Path]:
        """Images whose mask cache file does not exist yet."""
        return [p for p in self.paths if not cache_path(self.masks_dir, p).is_file()]

    def load_image(self, index: int) -> torch.Tensor:
        image = resize_rgb(load_rgb(self.paths[index]), self.layout.height, self.layout.width)
        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()

    def _load(self, index: int) -> TrainingSample:
        path = self.paths[index]
        try:
            cached = load_panorama_masks(cache_path(self.masks_dir, path))
        except MaskCacheError as exc:  # the way out of `goodsam train`, which has no --overwrite
            raise exc.with_remedy("delete it (goodsam train computes missing masks) or recompute the "
                                  "folder with `goodsam masks DATA --out MASKS --config CONFIG --overwrite`"
                                  ) from None
        if cached.layout != self.layout:
            have, want = cached.layout.as_dict(), self.layout.as_dict()
            raise ConfigError(f"masks for {path.name} in {self.masks_dir} were computed for windows {have}, "
                              f"training uses {want}; use another masks folder or recompute them")
        boundaries = [boundary_from_masks(m) for m in cached.overlaps]
        return TrainingSample(index, path.name, self.load_image(index), cached.windows, boundaries)

    def __getitem__(self, index: int) -> TrainingSample:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        sample = self._load(index)
        self._cache[index] = sample
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return sample
