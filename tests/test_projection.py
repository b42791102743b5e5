"""Pinhole → ERP projection: geometry checked by hand, label safety, determinism and the data CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from goodsam.classes import IGNORE_INDEX
from goodsam.cli import app
from goodsam.errors import ConfigError, ImageError
from goodsam.panorama.projection import (
    CITYSCAPES_INTRINSICS,
    Intrinsics,
    pinhole_to_erp,
    principal_point_erp,
    project_to_erp,
    spread_yaws,
)

# A small ERP grid with 0.5° pixels: column c has longitude (c + 0.5) * 0.5 - 180, and with an odd
# height of 201 rows over 100.5° row r has latitude 50 - 0.5 * r (row 100 is the horizon).
W, H, FOV = 720, 201, 100.5
STEMS = ("aachen_000000_000019", "aachen_000001_000019", "aachen_000002_000019")


def col_of(lon: float) -> float:
    return (lon + 180.0) / 0.5 - 0.5


def row_of(lat: float) -> float:
    return (50.0 - lat) / 0.5


@pytest.mark.parametrize(
    ("yaw", "pitch", "col", "row"),
    [(30.25, 10.5, 420, 79), (-120.25, -20.0, 119, 140), (179.75, 0.0, 719, 100)],
)
def test_principal_point_lands_at_yaw_pitch(yaw: float, pitch: float, col: int, row: int) -> None:
    assert (col_of(yaw), row_of(pitch)) == (col, row)  # the hand computation
    assert principal_point_erp(yaw, pitch, W, H) == pytest.approx((col, row), abs=1e-9)
    k = Intrinsics(fx=100, fy=100, cx=100, cy=50, width=201, height=101)
    assert np.allclose(pinhole_to_erp(100, 50, yaw, pitch, k, W, H, FOV), (col, row))
    image = np.zeros((101, 201, 3), np.uint8)
    label = np.zeros((101, 201), np.uint8)
    image[50, 100], label[50, 100] = 255, 7
    erp_image, erp_label, coverage = project_to_erp([image], [label], [yaw], [pitch], k, W, H, FOV)
    assert np.argwhere(erp_label == 7).tolist() == [[row, col]]
    assert np.argwhere(erp_image[..., 0] == 255).tolist() == [[row, col]]
    assert coverage[row, col]


def test_off_horizon_line_curves_horizon_stays_straight() -> None:
    f, cx, cy = 200.0, 200, 100
    k = Intrinsics(fx=f, fy=f, cx=cx, cy=cy, width=401, height=201)
    label = np.zeros((201, 401), np.uint8)
    label[: 60 + 1] = 1  # everything above the straight image row 60 (40 px above the horizon)
    label[cy] = 2  # the horizon row
    image = np.repeat(label[..., None] * 100, 3, axis=2).astype(np.uint8)
    yaw = 0.25  # lands on column 360
    _, erp_label, _ = project_to_erp([image], [label], [yaw], None, k, W, H, FOV)

    horizon_rows, horizon_cols = np.nonzero(erp_label == 2)
    assert set(horizon_rows.tolist()) == {100} and len(horizon_cols) > 150

    cols = np.flatnonzero((erp_label == 1).any(axis=0))
    boundary = np.array([np.flatnonzero(erp_label[:, c] == 1).max() for c in cols])
    # Hand maths: at longitude offset d, image row 60.5 (the region's edge) is at latitude
    # atan(39.5 * cos(d) / f); the last ERP row above it is the boundary.
    offset = np.deg2rad((cols + 0.5) * 0.5 - 180.0 - yaw)
    lat_edge = np.degrees(np.arctan(39.5 * np.cos(offset) / f))
    expected = np.ceil(row_of(lat_edge)) - 1
    assert np.abs(boundary - expected).max() <= 1
    centre = boundary[cols == 360][0]
    assert boundary.max() - centre >= 4  # the straight line bends towards the horizon at the sides
    assert boundary.min() == centre


def test_labels_never_interpolated_and_uncovered_is_ignore() -> None:
    rng = np.random.default_rng(1)
    values = np.array([3, 7, 11], np.uint8)
    images = [rng.integers(0, 256, (120, 240, 3), dtype=np.uint8) for _ in range(5)]
    labels = [values[rng.integers(0, 3, (120, 240))] for _ in range(5)]
    k = Intrinsics(fx=150, fy=150, cx=119.5, cy=59.5, width=240, height=120)
    fill = (10, 20, 30)
    erp_image, erp_label, coverage = project_to_erp(
        images, labels, [0, 50, 100, -60, 170], [5, -15, 0, 20, -3], k, W, H, FOV, fill=fill
    )
    assert set(np.unique(erp_label).tolist()) == {3, 7, 11, IGNORE_INDEX}
    assert 0.05 < coverage.mean() < 0.9
    assert np.array_equal(erp_label != IGNORE_INDEX, coverage)
    assert (erp_image[~coverage] == fill).all()


def test_closer_optical_axis_wins_and_no_projection_from_behind() -> None:
    k = Intrinsics(fx=200, fy=200, cx=200, cy=100, width=401, height=201)  # ~90° wide: frames overlap
    images = [np.full((201, 401, 3), c, np.uint8) for c in (50, 150)]
    labels = [np.full((201, 401), v, np.uint8) for v in (3, 4)]
    erp_image, erp_label, _ = project_to_erp(images, labels, [0.25, 20.25], None, k, W, H, FOV)
    assert erp_label[100, int(col_of(5.25))] == 3 and erp_image[100, int(col_of(5.25)), 0] == 50
    assert erp_label[100, int(col_of(15.25))] == 4 and erp_image[100, int(col_of(15.25)), 0] == 150
    assert erp_label[100, int(col_of(-30.25))] == 3 and erp_label[100, int(col_of(50.25))] == 4

    wide = Intrinsics(fx=5, fy=5, cx=100, cy=50, width=201, height=101)  # ~174° wide
    _, wide_label, coverage = project_to_erp(images[:1], labels[:1], [0.25], None, wide, W, H, FOV)
    lon = (np.arange(W) + 0.5) * 0.5 - 180.0 - 0.25
    assert not coverage[:, np.abs(lon) > 90].any()
    assert coverage[100, np.abs(lon) < 80].all()


def test_intrinsics_scale_with_image_size() -> None:
    half = CITYSCAPES_INTRINSICS.scaled_to(1024, 512)
    assert (half.fx, half.fy) == pytest.approx((2262.52 / 2, 2265.30 / 2))
    assert (half.cx, half.cy) == pytest.approx((1096.98 / 2 - 0.25, 513.14 / 2 - 0.25))
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (64, 128), dtype=np.uint8)
    native = Intrinsics(fx=100, fy=100, cx=63.5, cy=31.5, width=128, height=64)
    double = Intrinsics(fx=200, fy=200, cx=127.5, cy=63.5, width=256, height=128)  # same camera at 2x
    a = project_to_erp([image], [label], [40], [5], native, 360, 100)
    b = project_to_erp([image], [label], [40], [5], double, 360, 100)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    with pytest.raises(ConfigError, match="focal"):
        Intrinsics(fx=0, fy=1, cx=0, cy=0, width=1, height=1)
    with pytest.raises(ImageError, match="label shape"):
        project_to_erp([image], [label[:10]], [0], None, native)


def test_seeded_yaws_are_deterministic_and_spread() -> None:
    a = spread_yaws(4, np.random.default_rng([0, 3]))
    assert a == spread_yaws(4, np.random.default_rng([0, 3]))
    assert a != spread_yaws(4, np.random.default_rng([1, 3]))
    gaps = np.diff(np.sort(np.mod(a, 360.0)))
    assert all(-180 <= y < 180 for y in a) and gaps.min() > 90 - 2 * 10 - 1e-9


@pytest.fixture()
def three_frames(assets_dir: Path, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    for stem in STEMS:
        shutil.copy(assets_dir / "cityscapes" / "images" / f"{stem}.jpg", src / "images")
        shutil.copy(assets_dir / "cityscapes" / "labels" / f"{stem}_trainIds.png", src / "labels")
    return src


def invoke(*args: str):
    return CliRunner().invoke(app, ["data", "pinhole-to-erp", *args])


def test_cli_writes_panorama_and_resumes(three_frames: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(str(three_frames), str(out), "--seed", "3", "--pitch-jitter", "5")
    assert result.exit_code == 0, result.output
    image_path, label_path = out / "images" / "pano_0000.png", out / "labels" / "pano_0000_trainIds.png"
    erp = np.asarray(Image.open(image_path))
    erp_label = np.asarray(Image.open(label_path))
    assert erp.shape == (400, 2048, 3) and erp_label.shape == (400, 2048)
    inputs = set()
    for stem in STEMS:
        source = np.asarray(Image.open(three_frames / "labels" / f"{stem}_trainIds.png"))
        inputs |= set(np.unique(source).tolist())
    assert set(np.unique(erp_label).tolist()) <= inputs | {IGNORE_INDEX}
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["panoramas"]["pano_0000"]
    assert [f["stem"] for f in entry["frames"]] == list(STEMS)
    assert entry["seed"] == 3 and len(entry["yaws_deg"]) == 3 and len(entry["pitches_deg"]) == 3
    assert entry["intrinsics"][0]["fx"] == pytest.approx(1131.26)
    assert not list(out.rglob("*.tmp"))

    stamps = {p: p.stat().st_mtime_ns for p in (image_path, label_path)}
    again = invoke(str(three_frames), str(out), "--seed", "3", "--pitch-jitter", "5")
    assert again.exit_code == 0 and "wrote 0" in again.output and "skipped 1" in again.output
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())

    label_path.unlink()  # a missing output is redone
    assert "wrote 1" in invoke(str(three_frames), str(out), "--seed", "3", "--pitch-jitter", "5").output
    assert np.array_equal(np.asarray(Image.open(label_path)), erp_label)  # same seed, same pixels
    other = invoke(str(three_frames), str(out), "--seed", "4", "--pitch-jitter", "5")
    assert "wrote 1" in other.output
    new_entry = json.loads((out / "manifest.json").read_text())["panoramas"]["pano_0000"]
    assert new_entry["seed"] == 4 and new_entry["yaws_deg"] != entry["yaws_deg"]


def test_cli_fixed_yaws_cityscapes_layout(three_frames: Path, tmp_path: Path) -> None:
    src = tmp_path / "cs"
    for stem in STEMS[:2]:
        city = stem.split("_")[0]
        (src / "leftImg8bit" / "val" / city).mkdir(parents=True, exist_ok=True)
        (src / "gtFine" / "val" / city).mkdir(parents=True, exist_ok=True)
        Image.open(three_frames / "images" / f"{stem}.jpg").save(
            src / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png"
        )
    trainids = three_frames / "labels" / f"{STEMS[0]}_trainIds.png"
    shutil.copy(trainids, src / "gtFine" / "val" / "aachen" / f"{STEMS[0]}_gtFine_labelTrainIds.png")
    label_ids = np.zeros((512, 1024), np.uint8)
    label_ids[:256], label_ids[256:] = 23, 7  # labelIds sky / road -> trainIds 10 / 0
    Image.fromarray(label_ids).save(src / "gtFine" / "val" / "aachen" / f"{STEMS[1]}_gtFine_labelIds.png")

    out = tmp_path / "out"
    result = invoke(str(src), str(out), "--split", "val", "--yaws", "-90,90", "--erp-width", "1024",
                    "--erp-height", "200")  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["panoramas"]["val_0000"]
    assert manifest["layout"] == "cityscapes" and entry["yaws_deg"] == [-90.0, 90.0]
    erp_label = np.asarray(Image.open(out / "labels" / "val_0000_trainIds.png"))
    right = erp_label[:, 512:]  # the labelIds frame at yaw +90
    assert set(np.unique(right).tolist()) == {0, 10, IGNORE_INDEX}
    col = round(principal_point_erp(90.0, 0.0, 1024, 200)[0])
    assert erp_label[90, col] == 10 and erp_label[110, col] == 0  # sky above, road below the horizon


def test_cli_bad_input_is_one_line(tmp_path: Path, three_frames: Path) -> None:
    (tmp_path / "empty" / "images").mkdir(parents=True)
    result = invoke(str(tmp_path / "empty"), str(tmp_path / "o1"))
    assert isinstance(result.exception, ImageError) and "no images" in str(result.exception)
    (three_frames / "labels" / f"{STEMS[1]}_trainIds.png").unlink()
    result = invoke(str(three_frames), str(tmp_path / "o2"))
    assert isinstance(result.exception, ImageError) and "1 image(s) have no label" in str(result.exception)
    result = invoke(str(three_frames), str(tmp_path / "o3"), "--yaws", "0,x")
    assert isinstance(result.exception, ConfigError)
    proc = subprocess.run(
        [sys.executable, "-m", "goodsam.cli", "data", "pinhole-to-erp", str(tmp_path / "no"), str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no such folder" in proc.stderr
