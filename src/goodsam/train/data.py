"""Training data: panoramas resized to a fixed ERP band, their cached SAM masks, and the batch order.

* Images are read as 8-bit RGB and resized to the config's ``height x width`` with
  :func:`goodsam.imageio.resize_rgb`, the rule ``goodsam masks --height --width`` uses, so the cached
  masks line up with what the models see.
* :func:`fit_erp_band` prepares arbitrary panoramas as a fixed ERP band (used by ``goodsam demo``).
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
from goodsam.imageio import list_images, load_rgb, resize_rgb
from goodsam.panorama.windows import WindowLayout
from goodsam.sam.base import MaskSet
from goodsam.sam.cache import cache_path, load_panorama_masks, mismatches, read_meta

# SAM settings that do not change the masks (batching only): ignored when checking a cache.
MASK_NEUTRAL_SETTINGS = ("points_per_batch",)


def fit_erp_band(image: np.ndarray, height: int = 400, width: int = 2048) -> np.ndarray:
    """A panorama as a ``height x width`` ERP band around the horizon (square pixels, like DensePASS).

    A full equirectangular image (aspect 2:1, 180° of latitude) is first cropped to the rows of the
    band's latitude span, ``360° * height / width`` (70.3° for 400x2048), centred on the horizon (its
    middle row); this drops the poles (sky and, in street panoramas, the camera car). Anything else —
    already a band, such as the unfolded PASS images (2048x692) — is resized as is.
    """
    rows, cols = image.shape[:2]
    if cols == 2 * rows:
        band = max(1, round(rows * (360.0 * height / width) / 180.0))
        if band < rows:
            top = (rows - band) // 2
            image = image[top:top + band]
    return resize_rgb(np.ascontiguousarray(image), height, width)


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
        cached = load_panorama_masks(cache_path(self.masks_dir, path))
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


def check_mask_settings(paths: list[Path], model: str, settings) -> None:
    """Refuse cached masks made with another SAM model or mask-changing settings than the config's
    (training on them would silently ignore ``sam.*``); the first mismatching file is named."""
    wanted = {"model": model, "settings": {k: v for k, v in settings.as_dict().items()
                                           if k not in MASK_NEUTRAL_SETTINGS}}
    for path in paths:
        diffs = mismatches(read_meta(path).get("sam", {}), wanted, wanted_by="config")
        if diffs:
            raise ConfigError(f"cached masks {path} were made with other SAM settings than the config's: "
                              f"{'; '.join(diffs[:3])}; "
                              "recompute them (`goodsam masks --overwrite`) or set sam.* to match")


def ensure_masks(config, data_dir: str | Path, masks_dir: str | Path, device: str = "cpu", rank: int = 0,
                 world_size: int = 1, progress: bool = True) -> int:
    """Fill the mask cache for images that have none (the ``goodsam masks`` stage, SAM from ``config.sam``).

    Each process of a distributed job computes its shard ``rank/world_size``; the caller waits for all.
    Returns how many images were computed here. Masks already cached must have been made with
    ``config.sam``'s model and settings (:func:`check_mask_settings`, no SAM needed); their window layout
    is checked when they are loaded.
    """
    from goodsam.commands.masks import run_masks

    settings = config.sam.amg_settings()
    caches = {image: cache_path(masks_dir, image) for image in list_images(data_dir)}
    present = {image for image, path in caches.items() if path.is_file()}
    check_mask_settings([caches[image] for image in sorted(present)], config.sam.model, settings)
    if len(present) == len(caches):
        return 0
    summary = run_masks(data_dir, masks_dir, model=config.sam.model, weights=config.sam.weights,
                        impl=config.sam.impl, settings=settings, window=config.windows.width,
                        stride=config.windows.stride, wrap=config.windows.wrap, height=config.data.height,
                        width=config.data.width, shard=f"{rank}/{world_size}", device=device,
                        progress=progress)
    return summary.done
