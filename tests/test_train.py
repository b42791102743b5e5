"""Training: configs, data order, checkpoints, and real nano runs (loss decreases, kill + resume is
bit-exact, 2-process gloo DDP equals one process, paper configs run a step with random-init SegFormer).

Real runs use the real ESPNetv2 weights on real panoramas at reduced size (64x256, windows 128 wide
every 64 columns: 3 windows, 2 overlaps) with stand-in SAM masks written through the masks stage. Torch
runs single-threaded here and in the subprocesses: identical reductions everywhere, and no slowdown from
thread oversubscription on a shared CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import StandInSAM
from PIL import Image
from safetensors.torch import load_file

from goodsam.errors import ConfigError
from goodsam.sam.base import AMGSettings
from goodsam.sam.folder import compute_masks
from goodsam.train import augment
from goodsam.train.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from goodsam.train.config import available_configs, load_config
from goodsam.train.data import (
    erp_band_rows,
    fit_erp_band,
    fit_erp_band_labelled,
    global_indices,
    rank_indices,
)
from goodsam.train.pipeline import ensure_masks
from goodsam.train.trainer import Trainer, lr_factor

SMALL = ["data.height=64", "data.width=256", "windows.width=128", "windows.stride=64",
         "data.batch_size=1", "train.checkpoint_every=1", "train.progress=false",
         "sam.settings.points_per_side=2"]
TINY_SAM = AMGSettings(**{**load_config("nano-s0.5").sam.settings, "points_per_side": 2,
                          "points_per_batch": 4})  # the nano config's settings, with SMALL's point grid
GOODSAM = [sys.executable, "-m", "goodsam.cli"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def nano_data(tmp_path_factory: pytest.TempPathFactory, assets_dir: Path) -> tuple[Path, Path]:
    """Two real panoramas (as files) and their stand-in mask cache at the reduced training size."""
    root = tmp_path_factory.mktemp("nano")
    data = root / "data"
    data.mkdir()
    for name in ("pass_1027U_0.png", "pass_1210U_1.png"):
        shutil.copy(assets_dir / "panoramas" / name, data / name)
    compute_masks(data, root / "masks", settings=TINY_SAM, generator=StandInSAM(), height=64, width=256,
              window=128, stride=64, progress=False)
    return data, root / "masks"


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=atol, rtol=0.0, msg=key)


# --------------------------------------------------------------------------------------- configs
def test_bundled_configs() -> None:
    assert {"nano-s0.5", "nano-s1.0", "goodsam-t", "goodsam-s", "goodsam-m"} <= set(available_configs())
    nano = load_config("nano-s1.0")
    assert (nano.ta.architecture, nano.student.architecture, nano.sam.model) == \
        ("espnetv2-s2.0", "espnetv2-s1.0", "mobile_sam")
    students = {"goodsam-m": "segformer-b0", "goodsam-t": "segformer-b1", "goodsam-s": "segformer-b2"}
    for name, student in students.items():
        paper = load_config(name)
        assert paper.student.architecture == student and paper.ta.architecture == "segformer-b5"
        assert paper.ta.weights == "nvidia/segformer-b5-finetuned-cityscapes-1024-1024"
        geometry = (paper.windows.width, paper.windows.stride, paper.data.height, paper.data.width)
        assert geometry == (512, 256, 400, 2048)
        assert paper.loss.high_conf_lambda == 0.2


def test_overrides_errors_and_hash(tmp_path: Path) -> None:
    base = load_config("nano-s0.5")
    cfg = load_config("nano-s0.5", ["optim.student.lr=1e-3", "loss.eq7_student_boundary=0",
                                    "ta.weights=null"])
    assert cfg.optim.student.lr == 1e-3 and cfg.loss.eq7_student_boundary == 0.0
    assert cfg.hash() != base.hash()
    assert load_config("nano-s0.5", ["train.steps=5", "train.log_every=3"]).hash() == base.hash()
    with pytest.raises(ConfigError, match="unknown config key.*optim.student.lrr"):
        load_config("nano-s0.5", ["optim.student.lrr=1"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config("nano-s0.5", ["train.steps=many"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config("nano-s0.5", ["train.steps"])
    with pytest.raises(ConfigError, match="unknown config 'nano-s9'"):
        load_config("nano-s9")
    own = tmp_path / "mine.yaml"
    own.write_text("base: nano-s0.5\nname: mine\ntrain: {steps: 7}\n")
    mine = load_config(own)
    assert mine.name == "mine" and mine.train.steps == 7 and mine.student.architecture == "espnetv2-s0.5"


def test_schedule_and_batches() -> None:
    cfg = load_config("goodsam-t", ["train.steps=100", "optim.warmup_steps=10"])
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(55, cfg) == pytest.approx(0.5) and lr_factor(100, cfg) == 0.0
    first = [global_indices(s, 2, 5, seed=3) for s in range(5)]
    assert first == [global_indices(s, 2, 5, seed=3) for s in range(5)]
    flat = sum(first, [])
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))  # epochs
    assert rank_indices([4, 1, 3, 0], 0, 2) == [4, 1] and rank_indices([4, 1, 3, 0], 1, 2) == [3, 0]
    with pytest.raises(ConfigError, match="multiple"):
        rank_indices([1, 2, 3], 0, 2)


def test_fit_erp_band() -> None:
    full = np.zeros((1024, 2048, 3), np.uint8)
    full[:312] = 255  # above the 70.3 degree band: cropped away
    full[712:] = 128
    band = fit_erp_band(full, 400, 2048)
    assert band.shape == (400, 2048, 3) and band.max() == 0
    pass_like = np.full((692, 2048, 3), 7, np.uint8)
    assert fit_erp_band(pass_like, 400, 2048).shape == (400, 2048, 3)



def test_band_cut_matches_fit_erp_band_rows() -> None:
    assert erp_band_rows(832, 1664, 400, 2048) == (253, 325)
    assert erp_band_rows(692, 2048, 400, 2048) == (0, 692)  # not 2:1: kept whole
    image = np.zeros((832, 1664, 3), np.uint8)
    label = np.zeros((832, 1664), np.uint8)
    label[:253] = 5  # sky above the band is cut away
    label[253:578] = np.arange(1664)[None, :] % 8
    out_image, out_label = fit_erp_band_labelled(image, label, 400, 2048)
    assert out_image.shape == (400, 2048, 3) and out_label.shape == (400, 2048)
    assert set(np.unique(out_label)) <= set(range(8))  # nearest neighbour: no blended ids

def test_augmentation_round_trip_on_logits() -> None:
    logits = torch.randn(1, 19, 4, 32, requires_grad=True)
    aug = augment.sample_augmentation(32, seed=0, step=1, sample=0)
    back = augment.invert(augment.apply(logits, aug), aug)
    assert torch.equal(back, logits)
    back.sum().backward()
    assert torch.equal(logits.grad, torch.ones_like(logits))


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    ta, student = torch.nn.Linear(3, 2), torch.nn.Linear(3, 4)
    optimizers = {"student": torch.optim.AdamW(student.parameters()),
                  "ta": torch.optim.AdamW(ta.parameters())}
    for model, optimizer in ((ta, optimizers["ta"]), (student, optimizers["student"])):
        model(torch.randn(5, 3)).sum().backward()
        optimizer.step()
    np.random.seed(5)
    path = save_checkpoint(tmp_path, 3, "abc", ta, student, optimizers)
    expected = (torch.rand(3), np.random.rand(3))
    (tmp_path / "checkpoints" / ".step_000004.999.tmp").mkdir()  # a write killed midway
    assert latest_checkpoint(tmp_path) == path
    ckpt = load_checkpoint(path)
    assert ckpt.step == 3 and ckpt.config_hash == "abc"
    set_rng_state(ckpt.rng_info, ckpt.rng_tensors)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    state = optimizers["ta"].state_dict()
    restored = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters())
    restored.load_state_dict(ckpt.optimizers["ta"])
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    assert torch.equal(ckpt.student["weight"], student.weight.detach())
    for step in (4, 5):
        save_checkpoint(tmp_path, step, "abc", ta, student, optimizers, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_000004", "step_000005"]


# ------------------------------------------------------------------------------------- real runs
def test_nano_three_steps_decrease_loss(nano_data: tuple[Path, Path], tmp_path: Path) -> None:
    data, masks = nano_data
    cfg = load_config("nano-s0.5", SMALL)
    trainer = Trainer(cfg, data, masks, tmp_path / "run", progress=False, tensorboard=False)
    before = trainer.evaluate([0])
    result = trainer.fit(3)
    after = trainer.evaluate([0])
    trainer.close()
    assert result.step == 3 and len(result.history) == 3
    assert after["total"] < before["total"], (before, after)
    for term in ("eq4_erp", "eq5_student_ensemble", "eq7_student_boundary", "eq6_ta_ensemble",
                 "eq1_consistency", "eq2_boundary_enhanced"):
        assert np.isfinite(before[term]) and before[term] >= 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and "lr_student" in records[0]
    assert (tmp_path / "run" / "loss_curve.png").is_file()
    info = json.loads((tmp_path / "run" / "student" / "goodsam_model.json").read_text())
    assert info["architecture"] == "espnetv2-s0.5" and info["num_classes"] == 19

    # The export is what predict/eval load, and it is the trained student.
    from goodsam.inference import load_model

    model = load_model(tmp_path / "run" / "student")
    image = trainer.dataset[0].image[None]
    with torch.no_grad():
        trained = trainer.student_module.eval()
        torch.testing.assert_close(model.segment(image).logits, trained.segment(image).logits)


def test_ta_checkpointing_gives_the_same_step(nano_data: tuple[Path, Path], tmp_path: Path) -> None:
    """``train.ta_checkpointing`` (the TA's windows one at a time, recomputed in the backward) trains the
    same step: equal loss terms and TA gradients up to float rounding, and the same config hash."""
    data, masks = nano_data
    overrides = [*SMALL, "ta.scale=1.5", "train.ta_ema=null"]  # the TA adapts on its own targets
    runs = {}
    for flag in ("false", "true"):
        cfg = load_config("nano-s0.5", [*overrides, f"train.ta_checkpointing={flag}"])
        trainer = Trainer(cfg, data, masks, tmp_path / flag, progress=False, tensorboard=False)
        terms = trainer.train_step(0)
        grads = [p.grad.clone() for p in trainer.ta_module.parameters() if p.grad is not None]
        runs[flag] = (cfg.hash(), terms, grads)
        trainer.close()
    (hash_a, terms_a, grads_a), (hash_b, terms_b, grads_b) = runs["false"], runs["true"]
    assert hash_a == hash_b and terms_a.keys() == terms_b.keys() and terms_a["eq6_ta_ensemble"] > 0
    for key in terms_a:
        assert terms_b[key] == pytest.approx(terms_a[key], rel=1e-4, abs=1e-6), key
    assert len(grads_a) == len(grads_b) > 100
    for a, b in zip(grads_a, grads_b, strict=True):  # rounding (batches of one window) moves a few pixels
        assert float((a - b).norm()) <= 1e-3 * float(a.norm()) + 1e-9


def test_changed_config_refuses_resume(nano_data: tuple[Path, Path], tmp_path: Path) -> None:
    data, masks = nano_data
    cfg = load_config("nano-s0.5", SMALL)
    Trainer(cfg, data, masks, tmp_path, progress=False, tensorboard=False).fit(1)
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(cfg, data, masks, tmp_path, progress=False, tensorboard=False)
    changed = load_config("nano-s0.5", [*SMALL, "optim.student.lr=1e-3"])
    with pytest.raises(ConfigError, match="configuration differs"):
        Trainer(changed, data, masks, tmp_path, resume=True, progress=False, tensorboard=False)
    forced = Trainer(changed, data, masks, tmp_path, resume=True, force_resume=True, progress=False,
                     tensorboard=False)
    assert forced.step == 1
    other_model = load_config("nano-s0.5", [*SMALL, "student.architecture=espnetv2-s1.0"])
    with pytest.raises(CheckpointError, match="does not fit these models"):
        Trainer(other_model, data, masks, tmp_path, resume=True, force_resume=True, progress=False,
                tensorboard=False)


def test_kill_and_resume_is_bit_exact(nano_data: tuple[Path, Path], tmp_path: Path) -> None:
    data, masks = nano_data
    steps = 8
    args = [*GOODSAM, "train", "--config", "nano-s0.5", "--data", str(data), "--masks", str(masks),
            "--out", str(tmp_path / "killed"), "--steps", str(steps), "--no-progress"]
    for item in SMALL:
        args += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        found = latest_checkpoint(tmp_path / "killed")
        if found is not None and int(found.name.split("_")[1]) >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    assert not (tmp_path / "killed" / "run.json").exists()  # it really stopped midway
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"trained to step {steps}" in resumed.stdout

    cfg = load_config("nano-s0.5", [*SMALL, f"train.steps={steps}"])  # what --steps does (LR horizon)
    reference = Trainer(cfg, data, masks, tmp_path / "straight", progress=False, tensorboard=False)
    reference.fit(steps)
    reference.close()
    _assert_same_weights(tmp_path / "killed" / "student", tmp_path / "straight" / "student")
    _assert_same_weights(tmp_path / "killed" / "ta", tmp_path / "straight" / "ta")
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, steps + 1))


def test_ddp_two_processes_match_one(nano_data: tuple[Path, Path], tmp_path: Path) -> None:
    data, masks = nano_data
    overrides = [*SMALL, "data.batch_size=2"]
    args = ["--config", "nano-s0.5", "--data", str(data), "--masks", str(masks), "--steps", "2",
            "--no-progress", "--device", "cpu"]
    for item in overrides:
        args += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "goodsam.cli", "train", *args, "--out", str(tmp_path / "ddp")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    cfg = load_config("nano-s0.5", [*overrides, "train.steps=2"])
    single = Trainer(cfg, data, masks, tmp_path / "single", device="cpu", progress=False, tensorboard=False)
    single.fit()
    single.close()
    _assert_same_weights(tmp_path / "ddp" / "student", tmp_path / "single" / "student", atol=1e-6)
    _assert_same_weights(tmp_path / "ddp" / "ta", tmp_path / "single" / "ta", atol=1e-6)
    a = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    assert [r["total"] for r in a] == pytest.approx([r["total"] for r in b], rel=1e-5)


@pytest.mark.parametrize("name", ["goodsam-t", "goodsam-m"])
def test_paper_config_one_step_random_segformer(name: str, nano_data: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    data, masks = nano_data
    cfg = load_config(name, [*SMALL, "ta.weights=null", "data.batch_size=1"])  # random-init SegFormers
    trainer = Trainer(cfg, data, masks, tmp_path, device="cpu", progress=False, tensorboard=False)
    before = {k: v.clone() for k, v in trainer.student_module.state_dict().items()}
    scalars = trainer.train_step(0)
    trainer.close()
    assert np.isfinite(scalars["total"]) and scalars["lr_student"] > 0
    after = trainer.student_module.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert trainer.student_module.name == cfg.student.architecture


def test_void_colour_config_and_one_step(nano_data: tuple[Path, Path], tmp_path: Path) -> None:
    """``data.void_rgb`` validates as an RGB triple and a run with it trains and records it."""
    with pytest.raises(ConfigError, match="RGB triple"):
        load_config("nano-s0.5", ["data.void_rgb=[0, 0]"])
    data, masks = nano_data
    cfg = load_config("nano-s0.5", [*SMALL, "data.void_rgb=[0, 0, 0]"])
    assert cfg.data.void_rgb == (0, 0, 0) and cfg.hash() != load_config("nano-s0.5", SMALL).hash()
    trainer = Trainer(cfg, data, masks, tmp_path, device="cpu", progress=False, tensorboard=False)
    scalars = trainer.train_step(0)
    trainer.save(final=True)
    trainer.close()
    assert np.isfinite(scalars["total"])
    assert "void_rgb" in (tmp_path / "config.yaml").read_text()


def test_masks_made_with_other_sam_settings_are_refused(nano_data: tuple[Path, Path]) -> None:
    data, masks = nano_data
    batching_only = load_config("nano-s0.5", [*SMALL, "sam.settings.points_per_batch=64"])
    assert ensure_masks(batching_only, data, masks) == 0  # batching does not change masks: accepted
    with pytest.raises(ConfigError, match=r"points_per_side=2 \(config 3\)"):
        ensure_masks(load_config("nano-s0.5", [*SMALL, "sam.settings.points_per_side=3"]), data, masks)
    with pytest.raises(ConfigError, match="model=mobile_sam"):
        ensure_masks(load_config("nano-s0.5", [*SMALL, "sam.model=sam_vit_b"]), data, masks)


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    result = subprocess.run([*GOODSAM, "train", "--config", "nano-s7", "--data", str(tmp_path), "--masks",
                             str(tmp_path / "m"), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("goodsam: error: unknown config 'nano-s7'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_train_computes_missing_masks_first(assets_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from goodsam.sam import folder as masks_stage
    from goodsam.train.pipeline import run_training

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(assets_dir / "panoramas" / "pass_7100U_1.png", data / "pass_7100U_1.png")
    calls = []

    def stand_in(model, weights, settings, impl, device):
        calls.append((model, impl, settings))
        return StandInSAM()

    monkeypatch.setattr(masks_stage, "build_generator", stand_in)
    result = run_training("nano-s0.5", data, tmp_path / "masks", tmp_path / "run", steps=1, overrides=SMALL,
                       device="cpu", progress=False, tensorboard=False)
    assert result.step == 1 and (tmp_path / "masks" / "pass_7100U_1.png.npz").is_file()
    assert calls and calls[0][0] == "mobile_sam" and calls[0][2].points_per_side == 2
    assert (tmp_path / "run" / "student" / "model.safetensors").is_file()


def test_demo_pipeline_small(assets_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``goodsam demo`` end to end at toy size (stand-in SAM, 1 step, one process), then resumed."""
    from goodsam.demo import run_demo
    from goodsam.sam import folder as masks_stage

    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(assets_dir / "panoramas" / "amsterdam_pano_0005_001111_2048x1024.jpg", source)
    monkeypatch.setattr(masks_stage, "build_generator", lambda *args: StandInSAM())
    out = tmp_path / "demo"
    summary = run_demo(out, steps=1, overrides=tuple(SMALL), device="cpu", progress=False, panoramas=source,
                       workers=1)
    assert summary["steps"] == 1 and summary["first"]["total"] > 0
    band = np.asarray(Image.open(out / "panoramas" / "amsterdam_pano_0005_001111_2048x1024.png"))
    assert band.shape == (64, 256, 3)
    assert (out / "predictions" / "overlays" / "amsterdam_pano_0005_001111_2048x1024.png").is_file()
    assert (out / "predictions_before" / "index.html").is_file()
    # nano-s0.5's frozen target TA (train.ta_ema: 1.0): its window logits cached once per panorama
    cached = [path.name for path in (out / "targets").iterdir()]
    assert cached == ["amsterdam_pano_0005_001111_2048x1024.safetensors"]
    again = run_demo(out, steps=2, overrides=tuple(SMALL), device="cpu", progress=False, panoramas=source,
                     workers=1)
    assert again["steps"] == 2


def test_demo_workers_launch_through_torchrun(nano_data: tuple[Path, Path], tmp_path: Path) -> None:
    """``goodsam demo --workers 2``: masks and training run under ``torch.distributed.run`` (2 gloo ranks)
    and train as one process does; a worker's error ends the demo with one line."""
    from goodsam.demo import _launch, run_demo
    from goodsam.errors import GoodSAMError

    data, masks = nano_data
    out = tmp_path / "demo"
    shutil.copytree(data, out / "panoramas")  # already fitted; their stand-in masks: no SAM in the workers
    shutil.copytree(masks, out / "masks")
    overrides = (*SMALL, "data.batch_size=2")
    summary = run_demo(out, steps=1, overrides=overrides, device="cpu", progress=False, panoramas=data,
                       workers=2)
    assert summary["workers"] == 2 and summary["steps"] == 1
    assert (out / "run" / "loss_curve.png").is_file() and (out / "predictions" / "index.html").is_file()
    cfg = load_config("nano-s0.5", [*overrides, "train.steps=1"])
    single = Trainer(cfg, out / "panoramas", out / "masks", tmp_path / "single", device="cpu", progress=False,
                     tensorboard=False)
    result = single.fit()
    single.close()
    _assert_same_weights(out / "run" / "student", tmp_path / "single" / "student", atol=1e-6)
    assert summary["first"]["total"] == pytest.approx(result.history[0]["total"], rel=1e-5)
    with pytest.raises(GoodSAMError, match=r"^the masks stage failed in a worker process: no such file or "
                                           r"folder: .*nothing.panoramas; rerun to resume$"):
        _launch("masks", cfg.to_dict(), tmp_path / "nothing", 2, False, "the masks stage")


def test_curves_are_drawn_by_matplotlib(tmp_path: Path) -> None:
    """``loss_curve.png`` (800x420, non-finite losses left out) and the validation curve share one helper."""
    from goodsam.train.monitor import plot_loss_curve
    from goodsam.train.validation import plot_validation_curve

    records = [{"step": s, "total": 3.0 - 0.1 * s, "student": 2.0, "ta": float("nan") if s == 2 else 1.0}
               for s in range(1, 6)]
    for name, rows in (("loss_curve.png", records), ("one.png", records[:1]), ("empty.png", [])):
        path = plot_loss_curve(rows, tmp_path / name)
        with Image.open(path) as image:
            assert image.size == (800, 420) and image.format == "PNG"
    path = plot_validation_curve([{"step": 0, "val/student_miou": 20.0}, {"step": 5, "val/ta_miou": 30.0}],
                                 tmp_path / "validation_curve.png")
    with Image.open(path) as image:
        assert image.size == (770, 396)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.png", "loss_curve.png", "one.png",
                                                           "validation_curve.png"]  # no temporary files
