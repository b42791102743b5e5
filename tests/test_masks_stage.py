"""The SAM masks stage: cache format, resume after a kill, sharding, refusal of mismatching caches.

Logic branches run with a tiny deterministic stand-in generator; the acceptance path (real MobileSAM on
real panoramas, killed and resumed, sharded) runs the real generator on small resized images.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from goodsam.commands import masks as masks_cmd
from goodsam.errors import ConfigError, GoodSAMError, ImageError
from goodsam.imageio import target_size
from goodsam.panorama.windows import sliding_windows
from goodsam.sam import folder as masks_stage
from goodsam.sam.base import AMGSettings, MaskGenerator, MaskSet
from goodsam.sam.cache import (
    MaskCacheError,
    PanoramaMasks,
    cache_path,
    load_panorama_masks,
    read_meta,
    save_panorama_masks,
)
from goodsam.sam.folder import compute_masks, parse_shard

# a tiny point grid; relaxed filters so that every small window keeps a few masks
TINY = AMGSettings(points_per_side=3, points_per_batch=9, pred_iou_thresh=0.5, stability_score_thresh=0.8)
SIZE = {"height": 96, "width": 384, "window": 256, "stride": 128}  # 2 windows + 1 overlap per image


class FakeGenerator(MaskGenerator):
    """Deterministic stand-in: one mask per grey-level tercile of the crop."""

    model_name = "mobile_sam"
    impl = "fast"
    settings = TINY

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, image: np.ndarray) -> MaskSet:
        self.calls += 1
        grey = image.mean(axis=2)
        edges = np.quantile(grey, [1 / 3, 2 / 3])
        bins = np.digitize(grey, edges)
        masks = np.stack([bins == k for k in range(3)])
        ys, xs = np.nonzero(masks[0])
        boxes = np.array([[xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]] * 3)
        return MaskSet(masks, masks.sum((1, 2)), np.full(3, 0.9, np.float32), np.full(3, 0.95, np.float32),
                       boxes.astype(np.int64))


@pytest.fixture()
def two_panoramas(tmp_path: Path, assets_dir: Path) -> Path:
    folder = tmp_path / "panos"
    folder.mkdir()
    for name in ("pass_1027U_0.png", "pass_7100U_1.png"):
        shutil.copy(assets_dir / "panoramas" / name, folder / name)
    return folder


def _fake_run(folder: Path, out: Path, generator: FakeGenerator | None = None, **options):
    return compute_masks(folder, out, settings=TINY, generator=generator or FakeGenerator(), progress=False,
                     **{**SIZE, **options})


def test_round_trip_and_metadata(two_panoramas: Path, tmp_path: Path) -> None:
    generator = FakeGenerator()
    summary = _fake_run(two_panoramas, tmp_path / "cache", generator)
    assert (summary.done, summary.skipped, summary.windows, summary.masks) == (2, 0, 6, 18)
    assert generator.calls == 6
    path = cache_path(tmp_path / "cache", two_panoramas / "pass_1027U_0.png")
    loaded = load_panorama_masks(path)
    assert loaded.layout == sliding_windows(96, 384, 256, 128)
    assert len(loaded.windows) == 2 and len(loaded.overlaps) == 1
    assert loaded.windows[0].masks.shape == (3, 96, 256) and loaded.overlaps[0].masks.shape == (3, 96, 128)
    # the cached masks are exactly what the generator returns for that crop
    image = np.asarray(Image.open(two_panoramas / "pass_1027U_0.png").convert("RGB").resize((384, 96),
                                                                                            Image.BILINEAR))
    expected = FakeGenerator().generate(np.ascontiguousarray(image[:, 128:256]))
    assert np.array_equal(loaded.overlaps[0].masks, expected.masks)
    assert np.array_equal(loaded.overlaps[0].boxes, expected.boxes)
    meta = loaded.meta
    assert meta["sam"]["model"] == "mobile_sam" and meta["sam"]["impl"] == "fast"
    assert meta["sam"]["settings"] == TINY.as_dict() and len(meta["sam"]["weights_sha256"]) == 64
    assert meta["image"]["name"] == "pass_1027U_0.png" and len(meta["image"]["sha256"]) == 64
    assert (meta["image"]["source_height"], meta["image"]["source_width"]) == (692, 2048)
    assert meta["layout"]["window_width"] == 256 and meta["counts"]["masks"] == 9


def test_second_run_skips_and_mismatch_is_refused(two_panoramas: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    _fake_run(two_panoramas, out)
    generator = FakeGenerator()
    summary = _fake_run(two_panoramas, out, generator)
    assert (summary.done, summary.skipped, generator.calls) == (0, 2, 0)
    with pytest.raises(MaskCacheError, match="points_per_side=3 \\(requested 8\\).*--overwrite"):
        compute_masks(two_panoramas, out, settings=AMGSettings(points_per_side=8, points_per_batch=4),
                  generator=FakeGenerator(), progress=False, **SIZE)
    with pytest.raises(MaskCacheError, match="layout.stride=128 \\(requested 64\\)"):
        _fake_run(two_panoramas, out, stride=64)
    with pytest.raises(MaskCacheError, match="impl=fast \\(requested reference\\)"):
        _fake_run(two_panoramas, out, impl="reference")
    summary = _fake_run(two_panoramas, out, stride=64, overwrite=True)
    assert summary.done == 2 and read_meta(cache_path(out, two_panoramas / "pass_7100U_1.png"))["layout"][
        "stride"] == 64


def test_interrupted_write_never_counts(two_panoramas: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cache"
    real_savez = np.savez_compressed

    def dying_savez(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", dying_savez)
    with pytest.raises(KeyboardInterrupt):
        _fake_run(two_panoramas, out)
    assert list(out.iterdir()) == []  # no final file, temporary removed
    (out / ".pass_1027U_0.png.npz.999.tmp").write_bytes(b"garbage from a killed process")
    monkeypatch.setattr(np, "savez_compressed", real_savez)
    assert _fake_run(two_panoramas, out).done == 2
    assert sorted(p.name for p in out.iterdir()) == ["pass_1027U_0.png.npz", "pass_7100U_1.png.npz"]


def test_damaged_cache_file_is_recomputed(two_panoramas: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    _fake_run(two_panoramas, out)
    target = cache_path(out, two_panoramas / "pass_7100U_1.png")
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(MaskCacheError, match="not a readable mask cache"):
        load_panorama_masks(target)
    summary = _fake_run(two_panoramas, out)
    assert (summary.done, summary.skipped, summary.recomputed) == (1, 1, 1)
    assert len(load_panorama_masks(target).windows) == 2


def test_save_load_empty_masksets(tmp_path: Path) -> None:
    layout = sliding_windows(5, 12, 8, 4)
    masks = PanoramaMasks(layout, [MaskSet.empty(5, 8)] * 2, [MaskSet.empty(5, 4)], {"note": "x"})
    loaded = load_panorama_masks(save_panorama_masks(tmp_path / "a.npz", masks))
    assert loaded.num_masks == 0 and loaded.overlaps[0].masks.shape == (0, 5, 4)
    with pytest.raises(MaskCacheError, match="run `goodsam masks` first"):
        load_panorama_masks(tmp_path / "absent.npz")


def test_bad_inputs(two_panoramas: Path, tmp_path: Path) -> None:
    for spec in ("2/2", "1", "a/b", "0/0", "-1/3"):
        with pytest.raises(ConfigError, match="bad --shard"):
            parse_shard(spec)
    assert parse_shard("1/3") == (1, 3) and parse_shard(None) == (0, 1)
    assert target_size(400, 2048, None, 1024) == (200, 1024) and target_size(10, 20, None, None) == (10, 20)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageError, match="no images"):
        _fake_run(empty, tmp_path / "c1")
    with pytest.raises(ConfigError, match="impl"):
        _fake_run(two_panoramas, tmp_path / "c3", impl="turbo")
    with pytest.raises(GoodSAMError, match="stride"):
        _fake_run(two_panoramas, tmp_path / "c4", stride=300)
    (two_panoramas / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageError, match="broken.png"):
        _fake_run(two_panoramas, tmp_path / "c2", strict=True)


def test_cli_bad_shard_is_one_line(tmp_path: Path, two_panoramas: Path) -> None:
    args = ["masks", str(two_panoramas), "--out", str(tmp_path / "c"), "--shard", "3/2"]
    result = subprocess.run([sys.executable, "-m", "goodsam.cli", *args], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["goodsam: error: bad --shard '3/2': need 0 <= k < n"]


# ---------------------------------------------------------------- real MobileSAM (acceptance)


def _cli_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "goodsam.cli", "masks", str(folder), "--out", str(out),
            "--points-per-side", "3", "--points-per-batch", "9", "--pred-iou-thresh", "0.5",
            "--stability-score-thresh", "0.8", "--height", "96", "--width", "384",
            "--window", "256", "--stride", "128", *extra]


def _cli(folder: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_cli_args(folder, out, *extra), capture_output=True, text=True, timeout=600)


def _cli_process(folder: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(_cli_args(folder, out, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _assert_same_caches(a: Path, b: Path) -> None:
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for path in a.iterdir():
        x, y = load_panorama_masks(path), load_panorama_masks(b / path.name)
        assert x.layout == y.layout and x.meta["sam"] == y.meta["sam"]
        for mx, my in zip(x.windows + x.overlaps, y.windows + y.overlaps, strict=True):
            assert np.array_equal(mx.masks, my.masks) and np.array_equal(mx.area, my.area)


@pytest.mark.slow
def test_real_sam_kill_resume_and_shards(two_panoramas: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """12 MobileSAM calls in all: one run (killed after its first image, then resumed) vs two shards."""
    pytest.importorskip("goodsam.sam.registry")
    options = {"settings": TINY, "progress": False, **SIZE}
    # one run, killed after its first image; a half-written second file is left behind
    run = tmp_path / "run"
    process = _cli_process(two_panoramas, run)
    deadline = time.monotonic() + 600
    while not list(run.glob("*.npz")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # killed from outside, right after its first image was written
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read()
    assert [p.name for p in run.glob("*.npz")] == ["pass_1027U_0.png.npz"]
    (run / ".pass_7100U_1.png.npz.12345.tmp").write_bytes(b"PK half-written")
    resumed = compute_masks(two_panoramas, run, **options)
    assert (resumed.done, resumed.skipped, resumed.windows) == (1, 1, 3) and resumed.masks > 0
    assert sorted(p.name for p in run.iterdir()) == ["pass_1027U_0.png.npz", "pass_7100U_1.png.npz"]
    # a further run does no SAM work: the generator is never even built
    monkeypatch.setattr(masks_stage, "build_generator", lambda *a, **k: pytest.fail("SAM was run again"))
    again = compute_masks(two_panoramas, run, **options)
    assert (again.done, again.skipped) == (0, 2)
    monkeypatch.undo()
    # the same images as two shards (one in a separate process) give the same files and masks
    shards = tmp_path / "shards"
    assert compute_masks(two_panoramas, shards, shard="0/2", **options).done == 1
    result = _cli(two_panoramas, shards, "--shard", "1/2")
    assert result.returncode == 0, result.stderr
    assert "1 image(s) done, 0 skipped" in result.stdout
    _assert_same_caches(run, shards)


def test_masks_cli_takes_sam_settings_from_a_training_config(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``goodsam masks --config``: the config's sam.*, windows and size, unless given explicitly."""
    from typer.testing import CliRunner

    from goodsam.cli import app
    from goodsam.train.config import load_config
    from goodsam.train.pipeline import mask_options

    calls: dict = {}

    class Done:
        def line(self) -> str:
            return "done"

    def fake_run_masks(folder, out, **kwargs):
        calls.update(kwargs)
        return Done()

    monkeypatch.setattr(masks_cmd, "compute_masks", fake_run_masks)
    args = ["masks", str(tmp_path), "--out", str(tmp_path / "m"), "--config", "nano-s0.5", "--stride", "128"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = load_config("nano-s0.5")
    assert calls["settings"] == AMGSettings(**cfg.sam.settings)  # e.g. 10x10 points, IoU 0.86
    assert (calls["model"], calls["impl"], calls["window"], calls["height"], calls["width"]) == \
        ("mobile_sam", "fast", 512, 400, 2048)
    assert calls["stride"] == 128  # given on the command line: wins over the config's 256
    bad = CliRunner().invoke(app, ["masks", str(tmp_path), "--out", str(tmp_path / "m"), "--config", "x9"])
    assert bad.exit_code != 0
    # masks made this way are what training accepts: the masks stage gets what `goodsam train` passes it
    options = mask_options(cfg)
    options.pop("stride")
    assert {key: calls[key] for key in options} == options
