"""The masks stage: SAM masks for every window and overlap of every panorama in a folder, cached on disk.

Resumable (images whose cache file exists are skipped; files are written atomically), shardable
(``shard="k/n"`` takes images k, k+n, …, so n processes can share a folder) and strict: a cache made
with another model, weights, AMG settings, layout or resize is refused
(:func:`goodsam.sam.cache.check_compatible`) unless ``overwrite`` is given. An image that cannot be read
is listed in the summary and the others are still done (``strict=True`` stops at the first).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from goodsam import assets
from goodsam.devices import keep_freed_memory, resolve_device
from goodsam.errors import AssetError, BatchError, ConfigError, GoodSAMError
from goodsam.imageio import (
    check_image_size,
    image_size,
    list_images,
    load_rgb,
    resize_rgb,
    target_size,
)
from goodsam.panorama.windows import WindowLayout, sliding_windows
from goodsam.sam.base import AMGSettings
from goodsam.sam.cache import (
    MASKS_COMMAND,
    CacheUser,
    MaskCacheError,
    cache_identity,
    cache_path,
    check_compatible,
    generate_panorama_masks,
    read_meta,
    save_panorama_masks,
    stale_temporaries,
)
from goodsam.sam.models import check_model_name

IMPLS = ("fast", "reference")


@dataclass
class MasksSummary:
    """What one run of the masks stage did; ``failed`` lists (image, reason) of the images it skipped."""

    done: int = 0
    skipped: int = 0
    windows: int = 0  # SAM calls: windows + overlaps
    masks: int = 0
    seconds: float = 0.0
    recomputed: int = 0  # unreadable cache files that were computed again
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def seconds_per_window(self) -> float:
        return self.seconds / self.windows if self.windows else 0.0

    def line(self) -> str:
        extra = f", {self.recomputed} unreadable cache file(s) recomputed" if self.recomputed else ""
        bad = f", {len(self.failed)} failed" if self.failed else ""
        return (f"masks: {self.done} image(s) done, {self.skipped} skipped (already cached){extra}{bad}; "
                f"{self.windows} windows+overlaps, {self.masks} masks, "
                f"{self.seconds_per_window:.2f} s per window")


def parse_shard(spec: str | None) -> tuple[int, int]:
    """``"k/n"`` -> (k, n) with 0 <= k < n; None -> (0, 1)."""
    if spec is None:
        return 0, 1
    try:
        index, count = (int(part) for part in spec.split("/"))
    except ValueError:
        raise ConfigError(f"bad --shard '{spec}': expected k/n, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"bad --shard '{spec}': need 0 <= k < n")
    return index, count


def build_generator(model: str, weights: str | None, settings: AMGSettings, impl: str, device: str):
    """The SAM automatic mask generator (deferred import: it loads the SAM packages)."""
    from goodsam.sam.registry import build_mask_generator

    return build_mask_generator(model=model, weights=weights, settings=settings, impl=impl, device=device)


def _weights_sha256(model: str, weights: str | None) -> str | None:
    """The SAM weight file's checksum; None when it is not on this machine (masks made elsewhere can still
    be checked and used; computing new ones then fails with the weight's own error)."""
    try:
        return assets.sha256_file(assets.resolve_weight(model, weights, verify=False))
    except AssetError:
        return None


@dataclass(frozen=True)
class _Job:
    path: Path
    identity: dict
    layout: WindowLayout
    source_size: tuple[int, int]


def _plan(path: Path, *, model: str, weights_sha: str, impl: str, settings: AMGSettings,
          window: int, stride: int, wrap: bool, height: int | None, width: int | None) -> _Job:
    source_size = image_size(path)
    size = target_size(*source_size, height, width)
    check_image_size(path, *size)
    layout = sliding_windows(size[0], size[1], window, stride, wrap)
    identity = cache_identity(model, weights_sha, impl, settings, layout, assets.sha256_file(path),
                              path.stat().st_size)
    return _Job(path, identity, layout, source_size)


def _compute_one(generator, job: _Job, target: Path, model: str, impl: str):
    image = resize_rgb(load_rgb(job.path), job.layout.height, job.layout.width)
    for stale in stale_temporaries(target):
        stale.unlink(missing_ok=True)
    identity = job.identity
    meta = {**identity, "image": {**identity["image"], "name": job.path.name,
                                  "source_height": job.source_size[0], "source_width": job.source_size[1],
                                  "height": job.layout.height, "width": job.layout.width}}
    meta["sam"] = {**identity["sam"], "generator": {"model_name": getattr(generator, "model_name", model),
                                                     "impl": getattr(generator, "impl", impl)}}
    result = generate_panorama_masks(generator, image, job.layout, meta)
    save_panorama_masks(target, result)
    return result


def compute_masks(input_folder: str | os.PathLike, out: str | os.PathLike, *, model: str = "mobile_sam",
                  weights: str | None = None, impl: str = "fast", settings: AMGSettings | None = None,
                  window: int = 512, stride: int = 256, wrap: bool = False, height: int | None = None,
                  width: int | None = None, shard: str | None = None, device: str = "cpu",
                  overwrite: bool = False, strict: bool = False, progress: bool = True,
                  generator=None, cache_user: CacheUser = MASKS_COMMAND) -> MasksSummary:
    """The masks stage (see the module docstring); ``generator`` overrides building one from the options.

    Every existing cache of the shard is checked before any SAM work; a mismatching one raises
    :class:`MaskCacheError` worded for ``cache_user``. Images that cannot be read (or are too small) are
    skipped and, once every other one is done, raised together as :class:`BatchError` (its ``result`` is
    the summary); ``strict`` raises the first."""
    settings = (settings or AMGSettings()).validate()
    check_model_name(model)
    if impl not in IMPLS:
        raise ConfigError(f"unknown --impl '{impl}'; choose one of {', '.join(IMPLS)}")
    index, count = parse_shard(shard)
    images = list_images(input_folder)[index::count]
    out = Path(out)
    weights_sha = _weights_sha256(model, weights)
    if generator is not None:
        weights_sha = getattr(generator, "weights_sha256", weights_sha)
    summary = MasksSummary()
    pending: list[_Job] = []
    for path in images:  # check every existing cache before any SAM work
        try:
            job = _plan(path, model=model, weights_sha=weights_sha, impl=impl, settings=settings,
                        window=window, stride=stride, wrap=wrap, height=height, width=width)
        except GoodSAMError as exc:
            if strict or isinstance(exc, ConfigError):
                raise
            summary.failed.append((path, str(exc)))
            continue
        target = cache_path(out, path)
        if target.is_file() and not overwrite:
            try:
                meta = read_meta(target)
            except MaskCacheError as exc:
                tqdm.write(f"warning: {exc.problem}; recomputing it", file=sys.stderr)
                summary.recomputed += 1
            else:
                check_compatible(target, meta, job.identity, cache_user)
                summary.skipped += 1
                continue
        pending.append(job)
    if pending and generator is None:  # built only when there is work: a finished run loads no model
        generator = build_generator(model, weights, settings, impl, device)
    if pending and resolve_device(device).type == "cpu":
        keep_freed_memory()  # no page faults for each prompt batch's large tensors
    start = time.perf_counter()
    bar = tqdm(pending, desc="SAM masks", unit="image", disable=not progress or not pending)
    for job in bar:
        try:
            result = _compute_one(generator, job, cache_path(out, job.path), model, impl)
        except GoodSAMError as exc:
            if strict:
                raise
            summary.failed.append((job.path, str(exc)))
            continue
        summary.done += 1
        summary.windows += job.layout.num_windows + job.layout.num_overlaps
        summary.masks += result.num_masks
        summary.seconds = time.perf_counter() - start
        bar.set_postfix(masks=summary.masks, s_per_window=f"{summary.seconds_per_window:.1f}")
    if summary.failed:
        raise BatchError("images", len(images), summary.failed, summary)
    return summary
