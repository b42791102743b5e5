"""``goodsam data pinhole-to-erp``: labelled pinhole frames projected onto equirectangular panoramas."""

from __future__ import annotations

from pathlib import Path

import typer

from goodsam.errors import ConfigError
from goodsam.evaluation.proxy import pinhole_folder_to_erp
from goodsam.panorama.projection import CITYSCAPES_INTRINSICS, Intrinsics

data_app = typer.Typer(help="Prepare datasets.", no_args_is_help=True)


def _floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated numbers, got '{text}'") from None
    if not values:
        raise ConfigError(f"{option}: no values given")
    return values


def _fill(text: str) -> list[int]:
    values = _floats(text, "--fill") or []
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or any(not 0 <= v <= 255 for v in values):
        raise ConfigError(f"--fill: expected one grey level or R,G,B in 0..255, got '{text}'")
    return [int(v) for v in values]


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--ref-size: expected WIDTHxHEIGHT, e.g. 2048x1024, got '{text}'") from None
    if width < 1 or height < 1:
        raise ConfigError(f"--ref-size: sizes must be positive, got '{text}'")
    return width, height


@data_app.command("pinhole-to-erp")
def pinhole_to_erp_command(
    src: Path = typer.Argument(..., help="Labelled pinhole dataset (plain or Cityscapes layout)."),
    out: Path = typer.Argument(..., help="Output folder: images/, labels/ and manifest.json."),
    layout: str = typer.Option("auto", help="plain, cityscapes or auto (cityscapes if SRC/leftImg8bit/)."),
    frames_per_pano: int | None = typer.Option(
        None, help="Frames per panorama (default 4, or as many as --yaws)."
    ),
    erp_width: int = typer.Option(2048, help="Panorama width in pixels (covers 360°)."),
    erp_height: int = typer.Option(400, help="Band height in pixels, centred on the horizon."),
    fov_vertical: float | None = typer.Option(None, help="Band height in degrees (default: square pixels)."),
    yaws: str | None = typer.Option(None, help='Fixed yaws (degrees), e.g. "0,90,180,270"; default: seeded.'),
    pitches: str | None = typer.Option(None, help="Fixed pitches in degrees (positive = up)."),
    yaw_jitter: float = typer.Option(10.0, help="Seeded yaws: ± jitter around evenly spaced slots (deg)."),
    pitch_jitter: float = typer.Option(0.0, help="Seeded pitches drawn uniformly in ± this (degrees)."),
    seed: int = typer.Option(0, help="Seed for yaws/pitches; the same seed gives identical outputs."),
    fx: float = typer.Option(
        CITYSCAPES_INTRINSICS.fx, help="Focal length x at --ref-size (rescaled per image)."
    ),
    fy: float = typer.Option(CITYSCAPES_INTRINSICS.fy, help="Focal length y at --ref-size."),
    cx: float = typer.Option(CITYSCAPES_INTRINSICS.cx, help="Principal point x at --ref-size."),
    cy: float = typer.Option(CITYSCAPES_INTRINSICS.cy, help="Principal point y at --ref-size."),
    ref_size: str = typer.Option("2048x1024", help="Image size the intrinsics are given for."),
    split: str | None = typer.Option(None, help="Cityscapes split (default train); also the name prefix."),
    fill: str = typer.Option("0,0,0", help="Image colour of uncovered pixels (R,G,B); labels get 255."),
) -> None:
    """Project labelled pinhole frames onto equirectangular panoramas (several frames per panorama)."""
    width, height = _size(ref_size)
    written, skipped = pinhole_folder_to_erp(
        src,
        out,
        layout=layout,
        frames_per_pano=frames_per_pano,
        erp_width=erp_width,
        erp_height=erp_height,
        fov_vertical_deg=fov_vertical,
        yaws=_floats(yaws, "--yaws"),
        pitches=_floats(pitches, "--pitches"),
        yaw_jitter=yaw_jitter,
        pitch_jitter=pitch_jitter,
        seed=seed,
        intrinsics=Intrinsics(fx, fy, cx, cy, width, height),
        split=split,
        fill=_fill(fill),
    )
    typer.echo(f"pinhole-to-erp: wrote {written} panorama(s), skipped {skipped} up to date, in {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
