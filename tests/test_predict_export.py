"""Prediction (labels, overlays, gallery), model loading, ONNX export and its parity with PyTorch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CodedSegmenter
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from goodsam.errors import AssetError, ConfigError
from goodsam.export import ExportError, check_parity, export_onnx
from goodsam.imageio import load_label, save_png
from goodsam.inference import OnnxSegmenter, load_model, predict_logits
from goodsam.predict import predict_images
from goodsam.segmenters.base import Segmenter, SegmenterOutput
from goodsam.visualize import (
    CATEGORY_LEGEND,
    categories_as_train_ids,
    overlay,
    present_classes,
    save_small_png,
    train_ids_as_categories,
)

GOODSAM = [sys.executable, "-m", "goodsam.cli"]


def run_cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([*GOODSAM, *map(str, args)], capture_output=True, text=True, timeout=600)




@pytest.fixture()
def single_thread() -> object:
    """One PyTorch thread: on a busy 2-core machine two threads wait on each other after each of ESPNetv2's
    ~1000 small ops and run many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)




class DriftingSegmenter(Segmenter):
    """Adds its call count to the logits: tracing freezes the count, so ONNX disagrees with PyTorch."""

    name = "drifting"

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 19, 1)
        self.calls = 0

    def forward(self, pixel_values: torch.Tensor) -> SegmenterOutput:
        self.calls += 1
        return SegmenterOutput(self.head(pixel_values) + float(self.calls))


@pytest.fixture(scope="module")
def coded_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(CodedSegmenter().eval(), tmp_path_factory.mktemp("onnx") / "coded.onnx", 16, 32,
                       dynamic_height=True)


@pytest.fixture()
def coded_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    truth = {}
    for name, width in (("a", 96), ("b", 70)):
        labels = rng.integers(0, 19, (40, width)).astype(np.uint8)
        image = np.full((40, width, 3), 60, np.uint8)
        image[..., 0] = labels * 10
        save_png(tmp_path / "in" / f"{name}.png", image)
        truth[name] = labels
    return tmp_path / "in", truth


# --- prediction ------------------------------------------------------------------------------------------

def test_onnx_model_loads_and_is_dynamic(coded_onnx: Path) -> None:
    model = load_model(coded_onnx)
    assert isinstance(model, OnnxSegmenter) and model.name == "coded" and model.num_classes == 19
    for shape in ((2, 3, 16, 50), (1, 3, 24, 40)):
        images = torch.randint(0, 19, shape, dtype=torch.uint8) * 10
        logits = model.segment(images).logits
        assert logits.shape == (shape[0], 19, *shape[2:])
        assert torch.equal(logits.argmax(1), (images[:, 0] // 10).long())


def test_fixed_height_onnx(coded_folder: tuple, tmp_path: Path) -> None:
    folder, truth = coded_folder
    model = load_model(export_onnx(CodedSegmenter().eval(), tmp_path / "fixed.onnx", 16, 32))
    with pytest.raises(ConfigError, match="exported for height 16, got 40; pass --height 16"):
        predict_logits(model, np.zeros((40, 96, 3), np.uint8))
    results = predict_images(model, [folder / "a.png"], tmp_path / "out", gallery=False, overlays=False)
    assert load_label(results[0].labels).shape == truth["a"].shape  # run at height 16, written at 40
    assert results[0].overlay is None


def test_predict_sliding_windows_exact_outputs(coded_onnx: Path, coded_folder: tuple, tmp_path: Path) -> None:
    folder, truth = coded_folder
    out = tmp_path / "out"
    results = predict_images(load_model(str(coded_onnx)), [folder], out, window=32, stride=16)
    assert [r.source.name for r in results] == ["a.png", "b.png"]
    for result in results:
        labels = load_label(result.labels)
        assert np.array_equal(labels, truth[result.source.stem])
        picture = np.asarray(Image.open(result.overlay))
        assert picture.shape[1] == labels.shape[1] and picture.shape[0] > labels.shape[0]  # legend below
    page = (out / "index.html").read_text()
    assert page.count("<figure>") == 2 and 'href="overlays/a.png"' in page and 'src="thumbs/b.jpg"' in page


def test_overlay_legend_lists_present_classes_only() -> None:
    labels = np.zeros((30, 200), np.uint8)
    labels[:, 150:] = 13
    labels[0, 0] = 255
    assert present_classes(labels) == [0, 13]
    image = np.full((30, 200, 3), 128, np.uint8)
    picture = overlay(image, labels, alpha=1.0)
    assert tuple(picture[5, 10]) == (128, 64, 128) and tuple(picture[0, 0]) == (128, 128, 128)
    strip = picture[30:]
    colours = {tuple(c) for c in strip.reshape(-1, 3)}
    assert (128, 64, 128) in colours and (0, 0, 142) in colours and (70, 130, 180) not in colours



def test_overlay_png_stays_under_budget(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 1024, 3), dtype=np.uint8)  # noise: the worst case for PNG
    info = save_small_png(image, tmp_path / "x.png", max_bytes=20_000)
    assert (tmp_path / "x.png").stat().st_size == info["bytes"] <= 20_000
    assert info["width"] < 1024  # had to shrink
    assert Image.open(tmp_path / "x.png").width == info["width"]


def test_category_display_ids() -> None:
    cats = np.array([[0, 1, 2, 3, 4, 5, 6, 7]], np.uint8)
    assert categories_as_train_ids(cats).tolist() == [[255, 0, 2, 5, 8, 10, 11, 13]]
    train_ids = np.array([[0, 1, 2, 8, 10, 11, 13, 18]], np.uint8)
    assert train_ids_as_categories(train_ids).tolist() == [[0, 0, 2, 8, 10, 11, 13, 13]]
    assert CATEGORY_LEGEND[13] == "vehicle"

def test_predict_cli_and_errors(coded_onnx: Path, coded_folder: tuple, tmp_path: Path) -> None:
    folder, truth = coded_folder
    result = run_cli("predict", coded_onnx, folder / "a.png", "--out", tmp_path / "o", "--height", 16)
    assert result.returncode == 0, result.stderr
    assert load_label(tmp_path / "o" / "labels" / "a.png").shape == truth["a"].shape  # input size kept
    for args, fragment in (((tmp_path / "absent.png",), "no such file or folder"),
                           ((tmp_path / "o" / "labels", "--stride", 4), "--stride needs --window")):
        bad = run_cli("predict", coded_onnx, *args, "--out", tmp_path / "p")
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and len(lines) == 1 and fragment in lines[0], bad.stderr
    bad = run_cli("predict", tmp_path / "nothing.onnx", folder)
    assert bad.returncode == 2 and "model file" in bad.stderr and "not found" in bad.stderr


def test_bad_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "goodsam_model.json").write_text(json.dumps({"num_classes": 19}))
    with pytest.raises(AssetError, match="has no 'architecture'"):
        load_model(tmp_path / "ckpt")
    (tmp_path / "plain").mkdir()
    with pytest.raises(AssetError, match="is not a model"):
        load_model(tmp_path / "plain")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(AssetError, match="cannot load ONNX model"):
        load_model(broken)


# --- export ----------------------------------------------------------------------------------------------

def test_parity_failure_fails_the_export_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import goodsam.inference
    from goodsam.cli import app

    torch.manual_seed(0)
    monkeypatch.setattr(goodsam.inference, "load_model", lambda *a, **k: DriftingSegmenter().eval())
    result = CliRunner().invoke(app, ["export", "drifting", "--out", str(tmp_path / "d.onnx"),
                                      "--height", "8", "--width", "32"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ExportError) and "does not match PyTorch" in str(result.exception)
    assert "FAILED" in result.output


@pytest.fixture(scope="module")
def espnet_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """``goodsam export espnetv2-s0.5`` at 200x1024 (parity-checked by the command on pass_1027U_0)."""
    path = tmp_path_factory.mktemp("export") / "espnetv2-s0.5.onnx"
    return path, run_cli("export", "espnetv2-s0.5", "--out", path, "--height", 200, "--width", 1024,
                         "--threads", 1)


def test_export_cli_espnetv2(espnet_export: tuple) -> None:
    path, result = espnet_export
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("-> ok") == 2 and path.is_file()  # at 200x1024 and 200x512
    assert OnnxSegmenter(path).name == "espnetv2-s0.5"


def test_onnx_parity_espnetv2_real_weights(espnet_export: tuple, panorama_1027: np.ndarray,
                                           single_thread: None) -> None:
    path, _ = espnet_export
    model = load_model("espnetv2-s0.5")
    for width in (1024, 512):  # the export width and another one: the width axis is dynamic
        report = check_parity(model, path, panorama_1027, 200, width)
        print(f"espnetv2-s0.5 on pass_1027U_0 at 200x{width}: {report.summary()}")
        assert report.max_rel_diff <= 1e-3, report.summary()
        assert report.argmax_agreement >= 0.999, report.summary()
    batch = torch.from_numpy(np.ascontiguousarray(panorama_1027[:200, :768])).permute(2, 0, 1)[None]
    batch = torch.cat([batch, batch.flip(-1)])  # batch of 2 at a third width
    onnx_logits = OnnxSegmenter(path).segment(batch).logits
    with torch.no_grad():
        torch_logits = model.segment(batch).logits
    assert onnx_logits.shape == torch_logits.shape == (2, model.num_classes, 200, 768)
    assert (onnx_logits - torch_logits).abs().max() <= 1e-3 * torch_logits.abs().max()


def test_checkpoint_directory_round_trip(tmp_path: Path, single_thread: None) -> None:
    from goodsam.train.checkpoint import export_model

    reference = load_model("espnetv2-s0.5")
    export_model(reference, tmp_path / "student", "espnetv2-s0.5", source="test")
    loaded = load_model(tmp_path / "student")
    images = torch.randint(0, 256, (1, 3, 64, 128), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(loaded.segment(images).logits, reference.segment(images).logits)
    config = json.loads((tmp_path / "student" / "goodsam_model.json").read_text())
    config["architecture"] = "espnetv2-s2.0"
    (tmp_path / "student" / "goodsam_model.json").write_text(json.dumps(config))
    with pytest.raises(AssetError, match="does not match architecture espnetv2-s2.0"):
        load_model(tmp_path / "student")


# --- gallery in a headless browser -----------------------------------------------------------------------

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.slow
def test_gallery_of_bundled_panoramas_renders(assets_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "gallery"
    result = run_cli("predict", "espnetv2-s0.5", assets_dir / "panoramas", "--out", out, "--height", 256,
                     "--window", 256, "--stride", 128, "--threads", 1)
    assert result.returncode == 0, result.stderr
    panoramas = sorted(p.stem for p in (assets_dir / "panoramas").iterdir())
    assert sorted(p.stem for p in (out / "labels").iterdir()) == panoramas
    for stem in panoramas:
        labels = load_label(out / "labels" / f"{stem}.png")
        source = Image.open(next((assets_dir / "panoramas").glob(f"{stem}.*")))
        assert labels.shape == (source.height, source.width) and labels.max() <= 18
    page = (out / "index.html").read_text()
    assert page.count("<figure>") == len(panoramas)
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1000",
                    f"--screenshot={shot}", (out / "index.html").as_uri()],
                   capture_output=True, timeout=180, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1000, 1280)
    background = np.abs(pixels.astype(int) - 244).sum(-1) < 12  # the page's #f4f4f4
    assert background.mean() < 0.7, "screenshot is (nearly) blank"
    colours = np.unique(pixels.reshape(-1, 3) // 8, axis=0)
    assert len(colours) > 500, "no overlay images rendered"
