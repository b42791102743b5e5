"""The rules that must agree in several places, each in one module: atomic writes (goodsam.fileio),
resize rules (goodsam.imageio), devices (goodsam.devices) and the exported-model folder
(goodsam.model_format)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from goodsam.devices import auto_device, resolve_device
from goodsam.errors import AssetError, ConfigError
from goodsam.fileio import (
    atomic_directory,
    atomic_write,
    atomic_write_text,
    save_tensors,
    stale_temporaries,
    temporary_path,
)
from goodsam.imageio import resize_label, resize_rgb, target_size
from goodsam.model_format import MODEL_CONFIG, MODEL_WEIGHTS, export_model, load_exported_model
from goodsam.sam.cache import stale_temporaries as cache_stale_temporaries
from goodsam.segmenters.base import load_state_checked


def test_atomic_write_replaces_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.bin"
    with atomic_write(target) as handle:
        handle.write(b"one")
        assert temporary_path(target).is_file() and not target.exists()
    assert target.read_bytes() == b"one"
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"one" and not list(target.parent.glob(".*"))
    atomic_write_text(target, "two\n")
    assert target.read_text() == "two\n"


def test_one_temporary_name_scheme(tmp_path: Path) -> None:
    target = tmp_path / "pano.png.npz"
    assert temporary_path(target).name == f".pano.png.npz.{os.getpid()}.tmp"
    leftover = tmp_path / ".pano.png.npz.999.tmp"
    leftover.write_bytes(b"from a killed process")
    assert stale_temporaries(target) == cache_stale_temporaries(target) == [leftover]


def test_atomic_directory_swaps_whole_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"
    for text in ("old", "new"):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text(text)
    assert (target / "a.txt").read_text() == "new"
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("broken")
        raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_save_tensors_copies_shared_storage(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    base = torch.arange(6.0)
    save_tensors(tmp_path / "t.safetensors", {"a": base, "b": base[:3]}, {"k": "v"})
    loaded = load_file(str(tmp_path / "t.safetensors"))
    assert torch.equal(loaded["a"], base) and torch.equal(loaded["b"], base[:3])


def test_size_rule_and_resizes() -> None:
    assert target_size(400, 2048, None, None) == (400, 2048)
    assert target_size(400, 2048, 200, None) == (200, 1024)
    assert target_size(400, 2048, None, 1000) == (195, 1000)
    assert target_size(400, 2048, 10, 20) == (10, 20)
    with pytest.raises(ConfigError, match="--height must be positive"):
        target_size(400, 2048, 0, None)
    image = np.random.default_rng(0).integers(0, 256, (40, 80, 3), dtype=np.uint8)
    assert resize_rgb(image, 40, 80) is image
    assert resize_rgb(image, 20, 30).shape == (20, 30, 3)
    label = np.random.default_rng(1).integers(0, 19, (40, 80), dtype=np.uint8)
    small = resize_label(label, 20, 40)
    assert small.shape == (20, 40) and set(np.unique(small)) <= set(np.unique(label))


def test_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("tpu", "meta", 3.5):
        with pytest.raises(ConfigError, match="device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda:0")
        assert auto_device("auto", local_rank=3) == torch.device("cpu")
    else:
        assert auto_device("auto", local_rank=0) == torch.device("cuda", 0)
    assert auto_device("cpu") == torch.device("cpu")


def test_state_dict_check_names_the_problem() -> None:
    model = torch.nn.Linear(3, 2)
    state = {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}
    with pytest.raises(AssetError, match="w.pt does not match linear: 0 missing, 0 unexpected and 1 "
                                         "mis-shaped tensors"):
        load_state_checked(model, state, "w.pt", "linear")
    load_state_checked(model, {"weight": torch.ones(2, 3), "bias": torch.ones(2)}, "w.pt", "linear")
    assert torch.equal(model.weight, torch.ones(2, 3))


def test_exported_model_round_trip(tmp_path: Path) -> None:
    from goodsam.segmenters import build_segmenter

    torch.manual_seed(0)
    model = build_segmenter("espnetv2-s0.5", pretrained=False)
    out = export_model(model, tmp_path / "student", "espnetv2-s0.5", source="test", extra={"step": 3})
    assert sorted(p.name for p in out.iterdir()) == sorted([MODEL_CONFIG, MODEL_WEIGHTS])
    loaded = load_exported_model(out)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_large_file_digests_persist_across_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import json

    from goodsam import assets

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "_VERIFIED", {})
    big = tmp_path / "weights.pt"
    big.write_bytes(os.urandom(1024) * (assets.PERSISTENT_DIGEST_BYTES // 1024))
    real = hashlib.sha256(big.read_bytes()).hexdigest()
    assert assets.sha256_file(big) == real
    memo_path = tmp_path / "cache" / "goodsam" / "sha256.json"
    memo = json.loads(memo_path.read_text())
    assert list(memo.values()) == [real]
    # A new process (empty in-process memo) takes the digest from the file, without reading the weights.
    memo = {key: "0" * 64 for key in memo}
    memo_path.write_text(json.dumps(memo))
    monkeypatch.setattr(assets, "_VERIFIED", {})
    assert assets.sha256_file(big) == "0" * 64
    # Touching the file (new modification time) makes it read again.
    stat = big.stat()
    os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert assets.sha256_file(big) == real
    small = tmp_path / "image.png"
    small.write_bytes(b"x" * 100)
    assert assets.sha256_file(small) == hashlib.sha256(b"x" * 100).hexdigest()
    assert len(json.loads(memo_path.read_text())) == 2  # small files stay out of the memo
