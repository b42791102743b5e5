"""``goodsam masks``: SAM masks for every window and overlap of every panorama, cached on disk.

Resumable (images whose cache file exists are skipped; files are written atomically), shardable
(``--shard k/n`` takes images k, k+n, …, so n processes can share a folder) and strict: a cache made
with another model, weights, AMG settings, layout or resize is refused unless ``--overwrite`` is given.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import typer
from PIL import Image
from tqdm import tqdm

from goodsam import assets
from goodsam.errors import ConfigError, ImageError
from goodsam.imageio import list_images, load_rgb
from goodsam.panorama.windows import WindowLayout, sliding_windows
from goodsam.sam.base import AMGSettings
from goodsam.sam.cache import (
    MaskCacheError,
    cache_identity,
    cache_path,
    check_compatible,
    generate_panorama_masks,
    read_meta,
    save_panorama_masks,
    stale_temporaries,
)

# Test hook: exit abruptly (like a killed process) after this many images were written in a run.
KILL_AFTER_ENV = "GOODSAM_MASKS_TEST_KILL_AFTER"
IMPLS = ("fast", "reference")
_AMG = AMGSettings()


@dataclass
class MasksSummary:
    """What one run of the masks stage did."""

    done: int = 0
    skipped: int = 0
    windows: int = 0  # SAM calls: windows + overlaps
    masks: int = 0
    seconds: float = 0.0
    recomputed: int = 0  # unreadable cache files that were computed again

    @property
    def seconds_per_window(self) -> float:
        return self.seconds / self.windows if self.windows else 0.0

    def line(self) -> str:
        extra = f", {self.recomputed} unreadable cache file(s) recomputed" if self.recomputed else ""
        return (f"masks: {self.done} image(s) done, {self.skipped} skipped (already cached){extra}; "
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


def target_size(height: int, width: int, new_height: int | None, new_width: int | None) -> tuple[int, int]:
    """Resize rule: both given -> exactly that; one given -> keep the aspect ratio; none -> unchanged."""
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


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read image {path}: corrupt or not an image ({exc})") from None


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def build_generator(model: str, weights: str | None, settings: AMGSettings, impl: str, device: str):
    """The SAM automatic mask generator (``goodsam.sam.registry.build_mask_generator``)."""
    from goodsam.sam.registry import build_mask_generator

    return build_mask_generator(model=model, weights=weights, settings=settings, impl=impl, device=device)


def run_masks(input_folder: str | os.PathLike, out: str | os.PathLike, *, model: str = "mobile_sam",
              weights: str | None = None, impl: str = "fast", settings: AMGSettings | None = None,
              window: int = 512, stride: int = 256, wrap: bool = False, height: int | None = None,
              width: int | None = None, shard: str | None = None, device: str = "cpu",
              overwrite: bool = False, progress: bool = True, generator=None) -> MasksSummary:
    """The masks stage (see the module docstring); ``generator`` overrides building one from the options."""
    from goodsam.sam.models import check_model_name

    settings = (settings or AMGSettings()).validate()
    check_model_name(model)
    if impl not in IMPLS:
        raise ConfigError(f"unknown --impl '{impl}'; choose one of {', '.join(IMPLS)}")
    index, count = parse_shard(shard)
    images = list_images(input_folder)[index::count]
    out = Path(out)
    weights_sha = assets.sha256_file(assets.resolve_weight(model, weights, verify=False))
    if generator is not None:
        weights_sha = getattr(generator, "weights_sha256", weights_sha)
    summary = MasksSummary()
    pending: list[tuple[Path, dict, WindowLayout, tuple[int, int]]] = []
    for path in images:  # check every existing cache before any SAM work
        source_size = _image_size(path)
        size = target_size(*source_size, height, width)
        layout = sliding_windows(size[0], size[1], window, stride, wrap)
        identity = cache_identity(model, weights_sha, impl, settings, layout, assets.sha256_file(path),
                                  path.stat().st_size)
        target = cache_path(out, path)
        if target.is_file() and not overwrite:
            try:
                meta = read_meta(target)
            except MaskCacheError as exc:
                tqdm.write(f"warning: {exc}; recomputing it", file=sys.stderr)
                summary.recomputed += 1
            else:
                check_compatible(target, meta, identity)
                summary.skipped += 1
                continue
        pending.append((path, identity, layout, source_size))
    if pending and generator is None:  # built only when there is work: a finished run loads no model
        generator = build_generator(model, weights, settings, impl, device)
    kill_after = int(os.environ.get(KILL_AFTER_ENV, "0") or 0)
    start = time.perf_counter()
    bar = tqdm(pending, desc="SAM masks", unit="image", disable=not progress)
    for path, identity, layout, source_size in bar:
        image = _resize(load_rgb(path), layout.height, layout.width)
        target = cache_path(out, path)
        for stale in stale_temporaries(target):
            stale.unlink(missing_ok=True)
        meta = {**identity, "image": {**identity["image"], "name": path.name, "source_height": source_size[0],
                                      "source_width": source_size[1], "height": layout.height,
                                      "width": layout.width}}
        meta["sam"] = {**identity["sam"], "generator": {"model_name": getattr(generator, "model_name", model),
                                                         "impl": getattr(generator, "impl", impl)}}
        result = generate_panorama_masks(generator, image, layout, meta)
        save_panorama_masks(target, result)
        summary.done += 1
        summary.windows += layout.num_windows + layout.num_overlaps
        summary.masks += result.num_masks
        summary.seconds = time.perf_counter() - start
        bar.set_postfix(masks=summary.masks, s_per_window=f"{summary.seconds_per_window:.1f}")
        if kill_after and summary.done >= kill_after:
            os._exit(75)
    return summary


def options_from_config(name_or_path: str) -> dict:
    """The ``goodsam masks`` options a training config implies (its ``sam.*``, windows and image size):
    masks made with them are the ones ``goodsam train --config`` accepts."""
    from goodsam.train.config import load_config

    cfg = load_config(name_or_path)
    return {"model": cfg.sam.model, "weights": cfg.sam.weights, "impl": cfg.sam.impl,
            **cfg.sam.amg_settings().as_dict(),
            "window": cfg.windows.width, "stride": cfg.windows.stride, "wrap": cfg.windows.wrap,
            "height": cfg.data.height, "width": cfg.data.width}


def masks(
    ctx: typer.Context,
    input_folder: Path = typer.Argument(..., help="Folder of panoramas (or one image)."),
    out: Path = typer.Option(..., "--out", help="Cache folder (one .npz per image)."),
    config: str | None = typer.Option(
        None, "--config", help="Take the SAM model, settings, windows and image size from this training "
        "config (bundled name or YAML), as `goodsam train --config` expects them; options given "
        "explicitly still win."),
    model: str = typer.Option("mobile_sam", help="SAM model: mobile_sam, sam_vit_b, sam_vit_l, sam_vit_h."),
    weights: str | None = typer.Option(None, help="Explicit SAM checkpoint (default: by name)."),
    impl: str = typer.Option("fast", help="Mask generator implementation: fast or reference."),
    points_per_side: int = typer.Option(_AMG.points_per_side, min=1, help="Point grid per side."),
    points_per_batch: int = typer.Option(_AMG.points_per_batch, min=1, help="Prompts per batch."),
    pred_iou_thresh: float = typer.Option(_AMG.pred_iou_thresh, help="Minimum predicted IoU."),
    stability_score_thresh: float = typer.Option(_AMG.stability_score_thresh, help="Min stability."),
    stability_score_offset: float = typer.Option(_AMG.stability_score_offset, help="Stability offset."),
    box_nms_thresh: float = typer.Option(_AMG.box_nms_thresh, help="Box NMS IoU threshold."),
    crop_n_layers: int = typer.Option(_AMG.crop_n_layers, min=0, help="Extra crop layers."),
    min_mask_region_area: int = typer.Option(_AMG.min_mask_region_area, min=0,
                                             help="Remove holes/islands smaller than this (pixels)."),
    window: int = typer.Option(512, min=1, help="Window width (columns)."),
    stride: int = typer.Option(256, min=1, help="Window stride (columns)."),
    wrap: bool = typer.Option(False, "--wrap", help="Windows wrap around the 360° seam."),
    height: int | None = typer.Option(None, help="Resize images to this height first (default: keep)."),
    width: int | None = typer.Option(None, help="Resize images to this width first (default: keep)."),
    shard: str | None = typer.Option(None, help="k/n: process images k, k+n, k+2n, … (0-based)."),
    device: str = typer.Option("cpu", help="Torch device, e.g. cpu or cuda:0."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute mismatching caches."),
) -> None:
    """SAM masks for every window and every overlap of every panorama (cached, resumable, shardable)."""
    opts = dict(ctx.params)
    if config is not None:  # the config's values, except for options given on the command line
        # compared by name: typer vendors its own copy of click's ParameterSource enum
        sources = {name: ctx.get_parameter_source(name) for name in opts}
        given = {name for name, src in sources.items() if getattr(src, "name", "") == "COMMANDLINE"}
        opts.update({k: v for k, v in options_from_config(config).items() if k not in given})
    settings = AMGSettings(**{f.name: opts[f.name] for f in fields(AMGSettings)})
    summary = run_masks(input_folder, out, model=opts["model"], weights=opts["weights"], impl=opts["impl"],
                        settings=settings, window=opts["window"], stride=opts["stride"], wrap=opts["wrap"],
                        height=opts["height"], width=opts["width"], shard=shard, device=device,
                        overwrite=overwrite)
    typer.echo(summary.line())
    typer.echo(f"cache: {out}")


def register(app: typer.Typer) -> None:
    app.command("masks")(masks)
