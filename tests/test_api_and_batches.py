"""The Python API (the README example runs as written) and the batch behaviour of masks / predict / eval:
every good file is done and the bad ones are listed (``--strict`` stops at the first), images below the
stated minimum are refused, and each cache error names a way out of the command that printed it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import StandInSAM

import goodsam
from goodsam.errors import BatchError, ConfigError, ImageError
from goodsam.imageio import MIN_IMAGE_SIDE, save_png
from goodsam.sam import folder as masks_stage
from goodsam.sam.base import AMGSettings
from goodsam.sam.cache import cache_path, load_panorama_masks
from goodsam.sam.folder import compute_masks
from goodsam.train.config import load_config
from goodsam.train.pipeline import ensure_masks

REPO = Path(__file__).resolve().parents[1]
GOODSAM = [sys.executable, "-m", "goodsam.cli"]
SMALL = ["data.height=64", "data.width=256", "windows.width=128", "windows.stride=64", "data.batch_size=1",
         "sam.settings.points_per_side=2"]


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*GOODSAM, *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture()
def mixed_folder(tmp_path: Path, assets_dir: Path) -> Path:
    """a.png, b.png (corrupt), c.png: one bad image between two good ones."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    image = np.asarray(goodsam.resize_rgb(goodsam.load_rgb(assets_dir / "panoramas" / "pass_1027U_0.png"),
                                          64, 256))
    save_png(folder / "a.png", image)
    (folder / "b.png").write_bytes(b"\x89PNG truncated")
    save_png(folder / "c.png", image[:, ::-1])
    return folder


# ------------------------------------------------------------------------------------------ the API
def test_api_names_resolve_lazily() -> None:
    probe = "import sys, goodsam; print('torch' in sys.modules)"
    light = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert light.stdout.strip() == "False", light.stderr
    for name in goodsam.__all__:
        assert getattr(goodsam, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        goodsam.nope  # noqa: B018


@pytest.mark.slow
def test_readme_example_runs_as_written(tmp_path: Path, assets_dir: Path) -> None:
    """The README's Python example, unchanged, from a project root with ../shared beside it."""
    text = (REPO / "README.md").read_text()
    code = re.search(r"## Python API.*?```python\n(.*?)```", text, re.S).group(1)
    root = tmp_path / "project"
    root.mkdir()
    (tmp_path / "shared").symlink_to(assets_dir.parent)
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"student mIoU \d+\.\d % on 3 panoramas", result.stdout), result.stdout
    assert "CTCF labelled" in result.stdout
    out = root / "outputs" / "api"
    assert len(list((out / "masks").glob("*.npz"))) == 3
    assert (out / "run" / "student" / "model.safetensors").is_file()
    assert (out / "predict" / "index.html").is_file() and (out / "student.onnx").is_file()


# --------------------------------------------------------------------------------- batch behaviour
def test_masks_finish_every_good_image_and_list_the_bad(mixed_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "masks"
    with pytest.raises(BatchError) as caught:
        compute_masks(mixed_folder, out, settings=AMGSettings(points_per_side=2), generator=StandInSAM(),
                      window=128, stride=64, progress=False)
    assert [p.name for p, _ in caught.value.failures] == ["b.png"]
    assert "corrupt or not an image" in caught.value.failures[0][1]
    assert caught.value.result.done == 2 and sorted(p.name for p in out.glob("*.npz")) == ["a.png.npz",
                                                                                          "c.png.npz"]
    with pytest.raises(ImageError, match="b.png"):  # --strict: stops at the first
        compute_masks(mixed_folder, tmp_path / "strict", settings=AMGSettings(points_per_side=2),
                      generator=StandInSAM(), window=128, stride=64, progress=False, strict=True)
    assert not (tmp_path / "strict" / "c.png.npz").exists()


def test_predict_finishes_every_good_image_and_lists_the_bad(mixed_folder: Path, tmp_path: Path) -> None:
    result = run_cli("predict", "espnetv2-s0.5", mixed_folder, "--out", tmp_path / "p", "--threads", 1)
    assert result.returncode == 2
    assert sorted(p.name for p in (tmp_path / "p" / "labels").iterdir()) == ["a.png", "c.png"]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("goodsam: error: ") and "b.png" in lines[-1], result.stderr
    assert "2 other input(s) were done" in lines[-1], result.stderr
    assert "Traceback" not in result.stderr and "c.png ->" in result.stdout
    strict = run_cli("predict", "espnetv2-s0.5", mixed_folder, "--out", tmp_path / "s", "--strict")
    assert strict.returncode == 2 and "b.png" in strict.stderr
    assert not (tmp_path / "s" / "labels" / "c.png").exists()


def test_eval_scores_every_good_image_and_lists_the_bad(mixed_folder: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    for stem in ("a", "b", "c"):
        save_png(labels / f"{stem}.png", np.zeros((64, 256), np.uint8))
    save_png(labels / "b.png", np.zeros((64, 255), np.uint8))  # and b's label does not fit either
    result = run_cli("eval", "espnetv2-s0.5", "--images", mixed_folder, "--labels", labels, "--out",
                     tmp_path / "e", "--threads", 1)
    assert result.returncode == 2 and "b.png" in result.stderr.strip().splitlines()[-1], result.stderr
    report = (tmp_path / "e" / "results.json").read_text()
    assert '"n_images": 2' in report and '"failed"' in report and "b.png" in report


def test_images_below_the_minimum_are_refused(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny"
    save_png(tiny / "t.png", np.full((3, 5, 3), 128, np.uint8))
    result = run_cli("predict", "espnetv2-s0.5", tiny / "t.png", "--out", tmp_path / "p")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"is 5x3 pixels; espnetv2-s0.5 needs at least {MIN_IMAGE_SIDE} pixels on each side" in lines[0]
    with pytest.raises(BatchError, match=f"is 5x3 pixels; SAM needs at least {MIN_IMAGE_SIDE}"):
        compute_masks(tiny, tmp_path / "m", settings=AMGSettings(points_per_side=2), generator=StandInSAM(),
                      window=4, stride=2, progress=False)


# ------------------------------------------------------------------ cache errors name a way out
def test_partial_cache_of_another_impl_gives_one_message_with_a_way_out(tmp_path: Path, assets_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch
                                                                        ) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("pass_1027U_0.png", "pass_7100U_1.png"):
        shutil.copy(assets_dir / "panoramas" / name, data / name)
    config = load_config("nano-s0.5", SMALL)
    options = {**goodsam.mask_options(config), "impl": "reference"}
    compute_masks(data / "pass_1027U_0.png", tmp_path / "masks", **options, generator=StandInSAM(),
                  progress=False)  # a partly filled cache made with the reference generator
    monkeypatch.setattr(masks_stage, "build_generator", lambda *a: pytest.fail("SAM must not run"))
    with pytest.raises(ConfigError) as caught:
        ensure_masks(config, data, tmp_path / "masks")
    message = str(caught.value)
    assert "impl=reference (config fast)" in message
    assert "--masks folder" in message
    assert "goodsam masks DATA --out MASKS --config CONFIG --overwrite" in message
    assert "--out folder" not in message  # the masks command's way out is not offered to `goodsam train`
    # the same cache given to `goodsam masks` with other settings: its own way out
    with pytest.raises(ConfigError, match="use another --out folder or pass --overwrite"):
        compute_masks(data, tmp_path / "masks", **goodsam.mask_options(config), generator=StandInSAM(),
                      progress=False)


def test_truncated_cache_in_training_names_ways_out_of_train(tmp_path: Path, assets_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from goodsam.train.data import PanoramaDataset

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(assets_dir / "panoramas" / "pass_1027U_0.png", data / "p.png")
    config = load_config("nano-s0.5", SMALL)
    compute_masks(data, tmp_path / "masks", **goodsam.mask_options(config), generator=StandInSAM(),
                  progress=False)
    target = cache_path(tmp_path / "masks", data / "p.png")
    target.write_bytes(target.read_bytes()[:200])  # truncated: its header is gone
    monkeypatch.setattr(masks_stage, "build_generator", lambda *a: StandInSAM())
    assert ensure_masks(config, data, tmp_path / "masks", progress=False) == 1  # recomputed, no error
    payload = target.read_bytes()  # now damage the masks but keep a readable header
    dataset = PanoramaDataset(data, tmp_path / "masks", load_panorama_masks(target).layout)
    target.write_bytes(payload[: len(payload) // 2] + b"\0" * (len(payload) - len(payload) // 2))
    with pytest.raises(ConfigError) as caught:
        dataset[0]
    assert "pass --overwrite" not in str(caught.value)
    assert "goodsam train computes missing masks" in str(caught.value)
