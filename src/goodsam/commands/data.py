"""``goodsam data pinhole-to-erp``: labelled pinhole frames projected onto equirectangular panoramas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from PIL import Image
from tqdm import tqdm

from goodsam.classes import LABELID_TO_TRAINID_LUT
from goodsam.errors import ConfigError, ImageError
from goodsam.evaluation.datasets import CITYSCAPES_SUFFIX, LabelledSample, cityscapes_sample
from goodsam.fileio import atomic_write_text
from goodsam.imageio import IMAGE_SUFFIXES, load_label, load_rgb, save_png
from goodsam.panorama.projection import (
    CITYSCAPES_INTRINSICS,
    Intrinsics,
    band_fov_deg,
    project_to_erp,
    spread_yaws,
)

MANIFEST_FORMAT = "goodsam-pinhole-to-erp/1"
data_app = typer.Typer(help="Prepare datasets.", no_args_is_help=True)


def _missing_labels_error(missing: list[tuple[str, Path]]) -> ImageError:
    stem, expected = missing[0]
    return ImageError(f"{len(missing)} image(s) have no label, e.g. {stem} (expected {expected})")


def find_plain_frames(src: Path) -> list[LabelledSample]:
    """``src/images/<stem>.<ext>`` with ``src/labels/<stem>_trainIds.png``."""
    image_dir, label_dir = src / "images", src / "labels"
    if not image_dir.is_dir():
        raise ImageError(
            f"{src}: no images/ folder (plain layout: images/<stem>.jpg + labels/<stem>_trainIds.png)"
        )
    images = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ImageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {image_dir}")
    frames, missing = [], []
    for path in images:
        label = label_dir / f"{path.stem}_trainIds.png"
        if label.is_file():
            frames.append(LabelledSample(path.stem, path, label))
        else:
            missing.append((path.stem, label))
    if missing:
        raise _missing_labels_error(missing)
    return sorted(frames, key=lambda f: f.name)


def find_cityscapes_frames(src: Path, split: str) -> list[LabelledSample]:
    """``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with ``gtFine/...labelTrainIds.png``
    (or ``labelIds.png``, mapped to trainIds)."""
    image_root = src / "leftImg8bit" / split
    if not image_root.is_dir():
        raise ImageError(
            f"{src}: no leftImg8bit/{split}/ folder (cityscapes layout; choose the split with --split)"
        )
    suffix = CITYSCAPES_SUFFIX
    frames, missing = [], []
    for path in sorted(image_root.glob(f"*/*{suffix}.png")):
        sample, expected = cityscapes_sample(path, src / "gtFine" / split / path.parent.name)
        if sample is not None:
            frames.append(sample)
        else:
            missing.append((path.stem[: -len(suffix)], expected[0]))
    if not frames and not missing:
        raise ImageError(f"no *{suffix}.png images found under {image_root}/<city>/")
    if missing:
        raise _missing_labels_error(missing)
    return sorted(frames, key=lambda f: f.name)


def find_frames(src: Path, layout: str, split: str | None) -> tuple[str, list[LabelledSample]]:
    """Resolve ``layout`` (auto: cityscapes if ``leftImg8bit/`` exists) and list the frames by stem."""
    if not src.is_dir():
        raise ImageError(f"no such folder: {src}")
    if layout == "auto":
        layout = "cityscapes" if (src / "leftImg8bit").is_dir() else "plain"
    if layout == "plain":
        return layout, find_plain_frames(src)
    if layout == "cityscapes":
        return layout, find_cityscapes_frames(src, split or "train")
    raise ConfigError(f"unknown layout '{layout}' (use plain, cityscapes or auto)")


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


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: corrupt or not an image ({exc})") from None


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _load_manifest(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        typer.echo(f"goodsam: warning: {path} is unreadable; regenerating everything", err=True)
        return {}
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return {}
    return manifest


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def _same(old: dict | None, new: dict) -> bool:
    if not isinstance(old, dict):
        return False
    derived = ("coverage",)
    return {k: v for k, v in old.items() if k not in derived} == {
        k: v for k, v in new.items() if k not in derived
    }


def convert(
    src: Path,
    out: Path,
    layout: str = "auto",
    frames_per_pano: int | None = None,
    erp_width: int = 2048,
    erp_height: int = 400,
    fov_vertical_deg: float | None = None,
    yaws: list[float] | None = None,
    pitches: list[float] | None = None,
    yaw_jitter: float = 10.0,
    pitch_jitter: float = 0.0,
    seed: int = 0,
    intrinsics: Intrinsics = CITYSCAPES_INTRINSICS,
    split: str | None = None,
    fill: list[int] | None = None,
    progress: bool = True,
) -> tuple[int, int]:
    """Project each chunk of ``frames_per_pano`` sorted frames to one panorama; returns (written, skipped)."""
    fill = [0, 0, 0] if fill is None else fill
    k = frames_per_pano or (len(yaws) if yaws else 4)
    if k < 1:
        raise ConfigError(f"--frames-per-pano must be at least 1, got {k}")
    for values, option in ((yaws, "--yaws"), (pitches, "--pitches")):
        if values is not None and len(values) != k:
            raise ConfigError(
                f"{option}: expected {k} value(s), one per frame of a panorama, got {len(values)}"
            )
    if yaw_jitter < 0 or pitch_jitter < 0:
        raise ConfigError("--yaw-jitter and --pitch-jitter must be >= 0")
    band_fov_deg(erp_width, erp_height, fov_vertical_deg)  # validates the ERP geometry
    layout, frames = find_frames(src, layout, split)
    prefix = split or "pano"

    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    old_entries = _load_manifest(manifest_path).get("panoramas", {})
    manifest = {
        "format": MANIFEST_FORMAT,
        "source": str(src.resolve()),
        "layout": layout,
        "conventions": "yaw 0 = panorama centre, + right; pitch + up; column = longitude, row = latitude",
        "panoramas": dict(old_entries),
    }
    chunks = [frames[i : i + k] for i in range(0, len(frames), k)]
    names = [f"{prefix}_{index:04d}" for index in range(len(chunks))]
    written = skipped = 0
    bar = tqdm(
        list(zip(names, chunks, strict=True)), desc="pinhole-to-erp", unit="pano", disable=not progress
    )
    for index, (name, chunk) in enumerate(bar):
        rng = np.random.default_rng([seed, index])
        if yaws:
            chunk_yaws = yaws[: len(chunk)]
        else:
            chunk_yaws = spread_yaws(len(chunk), rng, slots=k, jitter_deg=yaw_jitter)
        if pitches:
            chunk_pitches = pitches[: len(chunk)]
        elif pitch_jitter > 0:
            chunk_pitches = rng.uniform(-pitch_jitter, pitch_jitter, size=len(chunk)).tolist()
        else:
            chunk_pitches = [0.0] * len(chunk)
        cams = [intrinsics.scaled_to(*_image_size(frame.image)) for frame in chunk]
        entry = {
            "image": f"images/{name}.png",
            "label": f"labels/{name}_trainIds.png",
            "frames": [
                {"stem": f.name, "image": _rel(f.image, src), "label": _rel(f.label, src)} for f in chunk
            ],
            "yaws_deg": [round(float(y), 4) for y in chunk_yaws],
            "pitches_deg": [round(float(p), 4) for p in chunk_pitches],
            "intrinsics": [{key: round(val, 4) for key, val in cam.as_dict().items()} for cam in cams],
            "reference_intrinsics": intrinsics.as_dict(),
            "erp_width": erp_width,
            "erp_height": erp_height,
            "fov_vertical_deg": round(band_fov_deg(erp_width, erp_height, fov_vertical_deg), 6),
            "fill": list(fill),
            "seed": seed,
        }
        outputs_exist = (out / entry["image"]).is_file() and (out / entry["label"]).is_file()
        if outputs_exist and _same(old_entries.get(name), entry):
            manifest["panoramas"][name] = old_entries[name]
            skipped += 1
            continue
        images = [load_rgb(f.image) for f in chunk]
        labels = [load_label(f.label) for f in chunk]
        labels = [
            LABELID_TO_TRAINID_LUT[lab] if f.label_ids else lab for f, lab in zip(chunk, labels, strict=True)
        ]
        for f, image, label in zip(chunk, images, labels, strict=True):
            if label.shape != image.shape[:2]:
                size, expected = "x".join(map(str, label.shape[::-1])), "x".join(map(str, image.shape[1::-1]))
                raise ImageError(f"{f.label}: label is {size} but its image is {expected}")
        erp_image, erp_label, coverage = project_to_erp(
            images,
            labels,
            entry["yaws_deg"],
            entry["pitches_deg"],
            cams,
            erp_width,
            erp_height,
            entry["fov_vertical_deg"],
            fill,
        )
        save_png(out / entry["image"], erp_image)
        save_png(out / entry["label"], erp_label)
        entry["coverage"] = round(float(coverage.mean()), 4)
        manifest["panoramas"][name] = entry
        _write_json(manifest_path, manifest)
        written += 1
    bar.close()
    manifest["panoramas"] = {name: manifest["panoramas"][name] for name in names}  # drop stale entries
    _write_json(manifest_path, manifest)
    return written, skipped


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
    written, skipped = convert(
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
