"""``goodsam masks``: the masks stage (:func:`goodsam.sam.folder.compute_masks`) from the command line."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import typer

from goodsam.commands.options import STRICT_HELP
from goodsam.errors import BatchError
from goodsam.sam.base import AMGSettings
from goodsam.sam.folder import compute_masks

_AMG = AMGSettings()


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
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP),
) -> None:
    """SAM masks for every window and every overlap of every panorama (cached, resumable, shardable)."""
    opts = dict(ctx.params)
    if config is not None:  # the config's values, except for options given on the command line
        # compared by name: typer vendors its own copy of click's ParameterSource enum
        sources = {name: ctx.get_parameter_source(name) for name in opts}
        given = {name for name, src in sources.items() if getattr(src, "name", "") == "COMMANDLINE"}
        from goodsam.train.pipeline import mask_options  # deferred: the config layer loads torch

        implied = mask_options(config)
        implied.update(implied.pop("settings").as_dict())
        opts.update({k: v for k, v in implied.items() if k not in given})
    settings = AMGSettings(**{f.name: opts[f.name] for f in fields(AMGSettings)})
    try:
        summary = compute_masks(input_folder, out, model=opts["model"], weights=opts["weights"],
                                impl=opts["impl"], settings=settings, window=opts["window"],
                                stride=opts["stride"], wrap=opts["wrap"], height=opts["height"],
                                width=opts["width"], shard=shard, device=device, overwrite=overwrite,
                                strict=strict)
    except BatchError as exc:
        typer.echo(exc.result.line())
        raise
    typer.echo(summary.line())
    typer.echo(f"cache: {out}")


def register(app: typer.Typer) -> None:
    app.command("masks")(masks)
