"""Labelled pinhole frames projected onto equirectangular panoramas: the pinhole-to-ERP proxy datasets.

Each chunk of ``frames_per_pano`` frames (sorted by name) becomes one panorama, the frames placed at
seeded or given yaws/pitches (:mod:`goodsam.panorama.projection`); ``OUT/manifest.json`` records every
panorama's frames and geometry, so a rerun skips the panoramas that are up to date.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from goodsam.classes import LABELID_TO_TRAINID_LUT
from goodsam.errors import ConfigError, ImageError
from goodsam.evaluation.datasets import find_frames
from goodsam.fileio import atomic_write_text
from goodsam.imageio import image_size, load_label, load_rgb, save_png
from goodsam.panorama.projection import (
    CITYSCAPES_INTRINSICS,
    Intrinsics,
    band_fov_deg,
    project_to_erp,
    spread_yaws,
)

MANIFEST_FORMAT = "goodsam-pinhole-to-erp/1"


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
        print(f"goodsam: warning: {path} is unreadable; regenerating everything", file=sys.stderr)
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


def pinhole_folder_to_erp(
    src: str | os.PathLike,
    out: str | os.PathLike,
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
    """Project each chunk of ``frames_per_pano`` sorted labelled frames (``layout``: plain, cityscapes or
    auto) onto one ERP panorama with its label; resumable (a panorama whose manifest entry is unchanged is
    skipped). Returns (written, skipped)."""
    src, out = Path(src), Path(out)
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
        cams = [intrinsics.scaled_to(*image_size(frame.image)[::-1]) for frame in chunk]
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
