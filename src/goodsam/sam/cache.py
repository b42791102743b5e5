"""On-disk cache of SAM masks for the sliding windows and overlaps of one panorama.

One file per image, ``<cache_dir>/<image file name>.npz``, holding for every window ``k`` (prefix
``w<k>_``) and every overlap ``k`` (prefix ``o<k>_``): ``bits`` (the ``(N, H, w)`` bool masks flattened per
mask and packed with ``np.packbits``), ``shape`` ``[N, H, w]``, ``area``, ``iou`` (predicted IoU),
``stability`` and ``boxes`` (XYWH); plus ``meta``, a JSON document with the SAM model name, weights
sha256, generator implementation, every :class:`AMGSettings` value, the window layout, the (resized)
image size and the source image's name, sha256 and size in bytes.

Files are written atomically (:func:`goodsam.fileio.atomic_write`: a temporary file in the same folder,
then ``os.replace``): a run killed mid-write leaves no file under the final name. A cache made with
another model, weights, settings, layout, size or image is refused (:func:`check_compatible`) rather
than silently reused.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from goodsam.errors import ConfigError
from goodsam.fileio import atomic_write
from goodsam.fileio import stale_temporaries as stale_temporaries  # re-exported for the masks stage
from goodsam.panorama.windows import WindowLayout, layout_from_dict
from goodsam.sam.base import AMGSettings, MaskGenerator, MaskSet

FORMAT = "goodsam-panorama-masks"
VERSION = 1
# SAM settings that do not change the masks (batching only): recorded, never compared.
MASK_NEUTRAL_SETTINGS = ("points_per_batch",)


class MaskCacheError(ConfigError):
    """A mask cache file is unreadable or was made with other settings than requested.

    The message is ``problem; remedy``: the remedy names a way out of the command that reads the cache
    (``goodsam masks`` by default; :meth:`with_remedy` gives the same problem with another command's)."""

    def __init__(self, problem: str, remedy: str | None = None):
        self.problem, self.remedy = problem, remedy
        super().__init__(f"{problem}; {remedy}" if remedy else problem)

    def with_remedy(self, remedy: str) -> MaskCacheError:
        """The same problem with the way out of another command."""
        return MaskCacheError(self.problem, remedy)


@dataclass
class PanoramaMasks:
    """SAM masks of one panorama: one :class:`MaskSet` per window and per overlap of ``layout``."""

    layout: WindowLayout
    windows: list[MaskSet]
    overlaps: list[MaskSet]
    meta: dict = field(default_factory=dict)

    @property
    def num_masks(self) -> int:
        return sum(len(m) for m in self.windows) + sum(len(m) for m in self.overlaps)


def cache_path(cache_dir: str | os.PathLike, image_path: str | os.PathLike) -> Path:
    """Where the masks of ``image_path`` are cached: ``<cache_dir>/<file name>.npz``."""
    return Path(cache_dir) / f"{Path(image_path).name}.npz"


def cache_identity(model: str, weights_sha256: str | None, impl: str, settings: AMGSettings,
                   layout: WindowLayout, image_sha256: str, image_size_bytes: int) -> dict:
    """The fields that must match for a cache file to be reused (see :func:`check_compatible`)."""
    return {
        "sam": {"model": model, "weights_sha256": weights_sha256, "impl": impl,
                "settings": settings.as_dict()},
        "layout": layout.as_dict(),
        "image": {"sha256": image_sha256, "size_bytes": int(image_size_bytes)},
    }


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


@dataclass(frozen=True)
class CacheUser:
    """Who checks a cache, for its messages: what the wanted values are called, and its way out."""

    wanted_by: str
    remedy: str


MASKS_COMMAND = CacheUser("requested", "use another --out folder or pass --overwrite to recompute them")


def mismatches(meta: dict, identity: dict, wanted_by: str = "requested") -> list[str]:
    """Human-readable differences ``key=cached (<wanted_by> wanted)`` between a cache's meta and
    ``identity``; mask-neutral settings and values the checker does not know (None) are left out."""
    cached = _flatten(meta)
    neutral = {f"sam.settings.{name}" for name in MASK_NEUTRAL_SETTINGS}
    out = []
    for key, wanted in _flatten(identity).items():
        if key in neutral or (key == "sam.weights_sha256" and wanted is None):
            continue
        have = cached.get(key, "<missing>")
        if have != wanted:
            out.append(f"{key}={have} ({wanted_by} {wanted})")
    return out


def check_compatible(path: Path, meta: dict, identity: dict, user: CacheUser = MASKS_COMMAND) -> None:
    """Raise :class:`MaskCacheError` naming the differing settings if the cache does not match: the one
    definition of a reusable cache file, for ``goodsam masks`` and ``goodsam train`` alike. A weights
    checksum of None (the weight file is not on this machine) is not compared."""
    diffs = mismatches(meta, identity, user.wanted_by)
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise MaskCacheError(f"cached masks {path} were made with other settings: {shown}", user.remedy)


def _pack(prefix: str, masks: MaskSet, arrays: dict) -> None:
    n, h, w = masks.masks.shape
    arrays[f"{prefix}_bits"] = np.packbits(masks.masks.reshape(n, h * w).astype(bool), axis=1)
    arrays[f"{prefix}_shape"] = np.array([n, h, w], dtype=np.int64)
    arrays[f"{prefix}_area"] = np.asarray(masks.area, dtype=np.int64)
    arrays[f"{prefix}_iou"] = np.asarray(masks.predicted_iou, dtype=np.float32)
    arrays[f"{prefix}_stability"] = np.asarray(masks.stability_score, dtype=np.float32)
    arrays[f"{prefix}_boxes"] = np.asarray(masks.boxes, dtype=np.int64).reshape(-1, 4)


def _unpack(prefix: str, data) -> MaskSet:
    n, h, w = (int(v) for v in data[f"{prefix}_shape"])
    bits = np.unpackbits(data[f"{prefix}_bits"], axis=1, count=h * w).astype(bool)
    return MaskSet(bits.reshape(n, h, w), data[f"{prefix}_area"], data[f"{prefix}_iou"],
                   data[f"{prefix}_stability"], data[f"{prefix}_boxes"])


def save_panorama_masks(path: str | os.PathLike, masks: PanoramaMasks) -> Path:
    """Write ``masks`` to ``path`` atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    counts = {"windows": len(masks.windows), "overlaps": len(masks.overlaps), "masks": masks.num_masks}
    meta = {"format": FORMAT, "version": VERSION, **masks.meta, "layout": masks.layout.as_dict(),
            "counts": counts}
    arrays = {"meta": np.array(json.dumps(meta, sort_keys=True))}
    for k, window in enumerate(masks.windows):
        _pack(f"w{k}", window, arrays)
    for k, overlap in enumerate(masks.overlaps):
        _pack(f"o{k}", overlap, arrays)
    with atomic_write(path) as handle:
        np.savez_compressed(handle, **arrays)
    return path


def _open(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise MaskCacheError(f"{path} is not a readable mask cache ({exc})",
                             "delete it or pass --overwrite") from None


def read_meta(path: str | os.PathLike) -> dict:
    """The JSON metadata of a cache file, without decoding its masks."""
    path = Path(path)
    with _open(path) as data:
        try:
            meta = json.loads(str(data["meta"]))
        except (KeyError, ValueError, zipfile.BadZipFile, EOFError, OSError) as exc:
            raise MaskCacheError(f"{path} has no readable metadata ({exc})",
                                 "delete it or pass --overwrite") from None
    if meta.get("format") != FORMAT:
        raise MaskCacheError(f"{path} is not a goodsam mask cache (format {meta.get('format')!r})",
                             "delete it or pass --overwrite")
    if meta.get("version") != VERSION:
        raise MaskCacheError(f"{path} has cache version {meta.get('version')}, this goodsam reads {VERSION}",
                             "pass --overwrite to recompute it")
    return meta


def load_panorama_masks(path: str | os.PathLike, identity: dict | None = None) -> PanoramaMasks:
    """Read a cache file; with ``identity`` (from :func:`cache_identity`) refuse a mismatching one."""
    path = Path(path)
    if not path.is_file():
        raise MaskCacheError(f"no cached masks at {path}", "run `goodsam masks` first")
    meta = read_meta(path)
    if identity is not None:
        check_compatible(path, meta, identity)
    layout = layout_from_dict(meta["layout"])
    with _open(path) as data:
        try:
            windows = [_unpack(f"w{k}", data) for k in range(meta["counts"]["windows"])]
            overlaps = [_unpack(f"o{k}", data) for k in range(meta["counts"]["overlaps"])]
        except (KeyError, ValueError, zipfile.BadZipFile, EOFError, OSError) as exc:
            raise MaskCacheError(f"{path} is damaged ({exc})", "delete it or pass --overwrite") from None
    if len(windows) != layout.num_windows or len(overlaps) != layout.num_overlaps:
        raise MaskCacheError(f"{path}: mask counts do not match its window layout", "pass --overwrite")
    return PanoramaMasks(layout, windows, overlaps, meta)


def generate_panorama_masks(generator: MaskGenerator, image: np.ndarray, layout: WindowLayout,
                            meta: dict | None = None) -> PanoramaMasks:
    """Masks of every window and every overlap (each its own SAM image), in one
    ``generator.generate_batch`` call (the fast generator encodes several of them per encoder call).

    ``image``: ``(H, W, 3)`` uint8 of the layout's size; windows/overlaps wrap around the seam if the
    layout does.
    """
    if image.shape[:2] != (layout.height, layout.width):
        raise ValueError(f"image {image.shape[:2]} does not match layout {layout.height}x{layout.width}")

    def crop(columns: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(image[:, columns])

    crops = [crop(layout.window_columns(k)) for k in range(layout.num_windows)]
    crops += [crop(layout.overlap_columns(k)) for k in range(layout.num_overlaps)]
    masks = generator.generate_batch(crops)
    windows, overlaps = masks[:layout.num_windows], masks[layout.num_windows:]
    return PanoramaMasks(layout, windows, overlaps, dict(meta or {}))
