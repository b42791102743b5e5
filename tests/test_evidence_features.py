"""Issue 12's pieces: the TA input scale rule, the fusion and boundary safeguards on hand-made cases,
the moving-average TA, and validation during training (logged, plotted, resumable)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CodedSegmenter, StandInSAM
from PIL import Image

from goodsam.dar import boundary_disagreement_loss, soft_boundary_map
from goodsam.dar.fusion import IGNORE_INDEX, ctcf_fusion
from goodsam.dar.safeguards import (
    apply_safeguards,
    keep_confident_ta,
    keep_ta_classes,
    ta_labels_where_uncertain,
)
from goodsam.errors import ConfigError
from goodsam.inference import predict_logits
from goodsam.sam.folder import compute_masks
from goodsam.segmenters.scale import (
    TRAINING_PIXELS_PER_DEGREE,
    auto_scale,
    forward_at_scale,
    parse_scale,
    resolve_scale,
)
from goodsam.train.config import load_config
from goodsam.train.trainer import Trainer
from goodsam.train.validation import Validation

SMALL = ["data.height=64", "data.width=256", "windows.width=128", "windows.stride=64",
         "data.batch_size=1", "train.checkpoint_every=1", "train.progress=false",
         "sam.settings.points_per_side=2"]


# ------------------------------------------------------------------------------------- scale rule
def test_auto_scale_is_the_density_ratio() -> None:
    # A Cityscapes frame at 1024 px: fx = 2262.52 / 2 px per radian -> 19.74 px/deg; 2048 px over 360°.
    espnet = TRAINING_PIXELS_PER_DEGREE["espnetv2-s2.0"]
    assert espnet == pytest.approx(1131.26 * math.pi / 180, rel=1e-6)
    assert auto_scale("espnetv2-s2.0", 2048) == pytest.approx(espnet / (2048 / 360))
    assert auto_scale("espnetv2-s2.0", 2048) == pytest.approx(3.4705, abs=1e-3)
    # Twice the panorama width halves the scale; SegFormer trained at full 2048-px frames doubles it.
    assert auto_scale("espnetv2-s0.5", 4096) == pytest.approx(auto_scale("espnetv2-s0.5", 2048) / 2)
    assert auto_scale("segformer-b5", 2048) == pytest.approx(2 * auto_scale("espnetv2-s2.0", 2048))
    # A panorama whose density equals the training density needs no scaling.
    width = round(360 * espnet)
    assert auto_scale("espnetv2-s1.0", width) == pytest.approx(1.0, abs=2e-3)
    assert resolve_scale("auto", "espnetv2-s2.0", 2048) == auto_scale("espnetv2-s2.0", 2048)
    assert resolve_scale(2, None, 2048) == 2.0


def test_scale_setting_errors() -> None:
    assert parse_scale("auto") == "auto" and parse_scale("2.5") == 2.5 and parse_scale(1) == 1.0
    for bad in ("big", 0, -1, float("nan"), True):
        with pytest.raises(ConfigError, match="scale must be a positive number or 'auto'"):
            parse_scale(bad)
    with pytest.raises(ConfigError, match="training pixel density of 'mystery'"):
        auto_scale("mystery", 2048)
    assert load_config("nano-s0.5", ["ta.scale=auto"]).ta.scale == "auto"
    assert load_config("nano-s0.5", ["ta.scale=2.5"]).ta.scale == 2.5
    with pytest.raises(ConfigError, match="scale must be"):
        load_config("nano-s0.5", ["ta.scale=huge"])
    with pytest.raises(ConfigError, match="training pixel density of 'my-net'"):  # before any masks
        load_config("nano-s0.5", ["ta.scale=auto", "ta.architecture=my-net"])
    # New keys at their defaults leave the config hash (and so resuming older runs) unchanged.
    base = load_config("nano-s0.5-paper")
    assert load_config("nano-s0.5-paper", ["ta.scale=1", "fusion.uncertain=paper"]).hash() == base.hash()
    assert load_config("nano-s0.5-paper", ["ta.scale=2"]).hash() != base.hash()


def test_forward_at_scale_returns_window_size_logits() -> None:
    seen = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[-2:]))
        return x[:, :2] * 2.0  # "logits" that keep the image's content

    images = torch.rand(3, 3, 40, 64) * 255
    out = forward_at_scale(forward, images, 2.5)
    assert seen == [(100, 160)] and out.shape == (3, 2, 40, 64)
    # Up and down again is close to the identity on smooth content; scale 1 is exactly the identity.
    smooth = torch.linspace(0, 255, 64).expand(1, 3, 40, 64).contiguous()
    back = forward_at_scale(forward, smooth, 2.0)
    torch.testing.assert_close(back[..., 2:-2], (smooth[:, :2] * 2)[..., 2:-2], atol=0.5, rtol=0)
    assert torch.equal(forward_at_scale(forward, images, 1.0), images[:, :2] * 2.0)
    assert forward_at_scale(forward, images, 0.5).shape == (3, 2, 40, 64)


def test_predict_logits_with_scale_and_windows() -> None:
    model = CodedSegmenter()
    image = np.zeros((32, 96, 3), np.uint8)
    image[:, :, 0] = 50  # class 5 everywhere
    for scale in (1.0, 2.0, 0.75):
        logits = predict_logits(model, image, window=32, stride=16, scale=scale)
        assert logits.shape == (19, 32, 96)
        assert (logits.argmax(0) == 5).all()


# --------------------------------------------------------------------------------- fusion safeguards
def _logits_from(labels: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """(C, H, W) logits whose argmax is ``labels`` with top probability ~``confidence``."""
    logits = torch.zeros(19, *labels.shape)
    gap = torch.log(confidence / (1 - confidence) * 18)
    logits.scatter_(0, labels[None], gap[None])
    return logits


def test_confident_ta_is_never_overridden_by_a_mask() -> None:
    # One SAM mask covers a road area (class 0) with a thin pole (class 5) the TA sees confidently.
    ta = torch.zeros(8, 8, dtype=torch.long)
    ta[:, 3] = 5
    conf = torch.full((8, 8), 0.6)
    conf[:, 3] = 0.95
    logits = _logits_from(ta, conf)
    mask = torch.ones(1, 8, 8, dtype=torch.bool)
    mask[0, :, 7] = False  # the last column is outside every mask
    fused = ctcf_fusion(mask, logits)
    assert (fused.labels[:, :7] == 0).all() and fused.mask_weights[0] == 1.0  # paper: the pole is erased
    labels, weights = keep_confident_ta(fused.labels, fused.weights, logits, 0.9)
    assert (labels[:, 3] == 5).all() and (weights[:, 3] == 0).all()  # the pole is kept, out of E_H
    assert (labels[:, :3] == 0).all() and (weights[:, :3] == 1).all()  # unsure pixels follow the mask
    assert (labels[:, 7] == IGNORE_INDEX).all()  # no mask, no label
    same = apply_safeguards(fused.labels, fused.weights, logits)
    assert torch.equal(same[0], fused.labels) and torch.equal(same[1], fused.weights)


def test_uncertain_masks_take_the_ta_labels() -> None:
    ta = torch.zeros(8, 8, dtype=torch.long)
    ta[:, 4:] = 8  # half road, half vegetation: coverage 0.5 < theta 0.7 (set for this 64-px mask)
    logits = _logits_from(ta, torch.full((8, 8), 0.7))
    mask = torch.ones(1, 8, 8, dtype=torch.bool)
    fused = ctcf_fusion(mask, logits, theta_small=0.7)
    assert fused.mask_weights[0] == 0.0 and len(fused.labels.unique()) == 1  # one label for all
    labels, weights = ta_labels_where_uncertain(fused.labels, fused.weights, logits)
    assert torch.equal(labels, ta) and torch.equal(weights, fused.weights)
    with pytest.raises(ValueError, match="uncertain"):
        apply_safeguards(fused.labels, fused.weights, logits, uncertain="maybe")


def test_ta_classes_keep_a_thin_pole_the_ta_is_unsure_of() -> None:
    # The pole (class 5) at 0.6 confidence: below keep_confident_ta's 0.9, so only the class rule keeps it.
    ta = torch.zeros(8, 8, dtype=torch.long)
    ta[:, 3] = 5
    ta[:, 5] = 2  # a building column, not a kept class
    logits = _logits_from(ta, torch.full((8, 8), 0.6))
    mask = torch.ones(1, 8, 8, dtype=torch.bool)
    mask[0, :, 7] = False
    fused = ctcf_fusion(mask, logits)
    assert (fused.labels[:, :7] == 0).all()  # paper: the mask's road label everywhere
    assert torch.equal(apply_safeguards(fused.labels, fused.weights, logits, ta_confidence=0.9)[0],
                       fused.labels)  # unsure pole: the confidence rule does not keep it
    labels, weights = keep_ta_classes(fused.labels, fused.weights, logits, (5, 6, 7))
    assert (labels[:, 3] == 5).all() and (weights[:, 3] == 0).all()  # kept, out of E_H
    assert (labels[:, 5] == 0).all() and (weights[:, 5] == fused.weights[:, 5]).all()  # not a kept class
    assert (labels[:, 7] == IGNORE_INDEX).all()  # no mask, no label
    both = apply_safeguards(fused.labels, fused.weights, logits, ta_confidence=0.9, ta_classes=(5, 6, 7))
    assert torch.equal(both[0], labels) and torch.equal(both[1], weights)


def test_ta_classes_config_is_checked_and_reaches_the_targets() -> None:
    config = load_config("nano-s0.5", ["fusion.ta_classes=[5, 6, 7]"])
    assert config.fusion.ta_classes == (5, 6, 7)
    assert load_config("nano-s0.5").fusion.ta_classes is None
    for bad in ("[5, 5]", "[19]", "pole"):
        with pytest.raises(ConfigError, match="fusion.ta_classes"):
            load_config("nano-s0.5", [f"fusion.ta_classes={bad}"])
    # the default (null) leaves the config hash as it was, so older runs still resume
    assert load_config("nano-s0.5").hash() == load_config("nano-s0.5", ["fusion.ta_classes=null"]).hash()
    assert config.hash() != load_config("nano-s0.5").hash()
    assert "ta_classes:\n  - 5\n  - 6\n  - 7" in config.to_yaml()


# ------------------------------------------------------------------------------- boundary safeguard
def test_boundary_disagreement_loss_acts_only_where_boundaries_differ() -> None:
    # A confident thin pole that B_ref agrees with: the paper's L1 still penalises the uncertain
    # background; the disagreement form is exactly zero there.
    labels = torch.zeros(10, 10, dtype=torch.long)
    labels[:, 4] = 5
    conf = 0.4 + 0.3 * torch.rand(10, 10, generator=torch.Generator().manual_seed(0))  # unsure background
    conf[:, 4] = 0.99
    logits = _logits_from(labels, conf).requires_grad_(True)
    hard = torch.zeros(10, 10, dtype=torch.bool)
    hard[:, 3:6] = True  # the pole's boundary pixels (both sides of each label change)
    soft = soft_boundary_map(logits)
    paper = (hard.float() - soft).abs().sum() / hard.sum()
    assert float(paper.detach()) > 0.1, float(paper.detach())
    agree = boundary_disagreement_loss(hard, [soft], [hard])
    assert float(agree.detach()) == 0.0
    # B_ref moved the boundary one column right: only the columns that differ carry loss.
    moved = torch.zeros_like(hard)
    moved[:, 4:7] = True
    loss = boundary_disagreement_loss(moved, [soft], [hard])
    loss.backward()
    where = logits.grad.abs().sum(0) > 0
    assert float(loss.detach()) > 0 and not where[:, :2].any() and not where[:, 8:].any()
    expected = ((moved.float() - soft).abs() * (moved ^ hard)).sum() / (moved ^ hard).sum()
    torch.testing.assert_close(loss, expected)


# ------------------------------------------------------------------------------ training features
@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory, assets_dir: Path) -> dict[str, Path]:
    """Two real panoramas with stand-in masks, and a labelled validation set of two panorama bands
    made from real Cityscapes frames (image + trainIds)."""
    from goodsam.sam.base import AMGSettings

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evidence")
    data = root / "data"
    data.mkdir()
    for name in ("pass_1027U_0.png", "pass_1210U_1.png"):
        shutil.copy(assets_dir / "panoramas" / name, data / name)
    settings = AMGSettings(**{**load_config("nano-s0.5").sam.settings, "points_per_side": 2,
                              "points_per_batch": 4})
    compute_masks(data, root / "masks", settings=settings, generator=StandInSAM(), height=64, width=256,
              window=128, stride=64, progress=False)
    images, labels = root / "val" / "images", root / "val" / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    frames = sorted((assets_dir / "cityscapes" / "images").glob("aachen_*.jpg"))[:2]
    for frame in frames:
        Image.open(frame).convert("RGB").resize((256, 64)).save(images / f"{frame.stem}.png")
        label = Image.open(assets_dir / "cityscapes" / "labels" / f"{frame.stem}_trainIds.png")
        label.resize((256, 64), Image.NEAREST).save(labels / f"{frame.stem}_trainIds.png")
    return {"data": data, "masks": root / "masks", "val_images": images, "val_labels": labels}


def test_validation_is_logged_plotted_and_resumes(small_data: dict[str, Path], tmp_path: Path) -> None:
    cfg = load_config("nano-s0.5", [*SMALL, "ta.scale=1.5"])
    validation = Validation.from_folders(small_data["val_images"], small_data["val_labels"],
                                         "{stem}_trainIds.png", "cityscapes19", every=2)
    run = tmp_path / "run"
    trainer = Trainer(cfg, small_data["data"], small_data["masks"], run, progress=False, tensorboard=True,
                      validation=validation)
    trainer.fit(3)
    trainer.close()
    lines = [json.loads(x) for x in (run / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 2, 3]
    for record in lines:
        for model in ("student", "ta"):
            assert 0.0 <= record[model]["miou"] <= 100.0 and "road" in record[model]["per_class"]
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val_steps = [r["step"] for r in metrics if "val/student_miou" in r]
    assert val_steps == [0, 2, 3] and all("val/ta_miou" in r for r in metrics if "val/student_miou" in r)
    assert (run / "validation_curve.png").stat().st_size > 1000
    assert any((run / "tensorboard").iterdir())
    # The validation of the untrained models equals `goodsam eval`'s code on the same models.
    from goodsam.evaluation import evaluate, get_class_map, open_labelled_set

    fresh = Trainer(load_config("nano-s0.5", [*SMALL, "ta.scale=1.5"]), small_data["data"],
                    small_data["masks"], tmp_path / "other", progress=False, tensorboard=False)
    dataset = open_labelled_set(images=small_data["val_images"], labels=small_data["val_labels"],
                                label_pattern="{stem}_trainIds.png")
    ta_eval = evaluate(fresh.ta_module.eval(), dataset, get_class_map("cityscapes19"), window=128, stride=64,
                       scale=1.5)
    assert lines[0]["ta"]["miou"] == pytest.approx(100 * ta_eval.scores.miou)
    fresh.close()
    first_run = json.loads((run / "run.json").read_text())
    assert first_run["total_seconds"] == pytest.approx(first_run["seconds"])
    # Resuming from the step-2 checkpoint drops the step-3 records and writes them again.
    for old in sorted((run / "checkpoints").glob("step_*"))[-1:]:
        shutil.rmtree(old)
    (run / "checkpoints" / "latest").unlink()
    again = Trainer(cfg, small_data["data"], small_data["masks"], run, resume=True, progress=False,
                    tensorboard=False, validation=validation)
    assert again.step == 2
    checkpointed = again.seconds_before
    assert 0.0 < checkpointed < first_run["seconds"]  # the wall up to the step-2 checkpoint
    again.fit(3)
    again.close()
    lines = [json.loads(x) for x in (run / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 2, 3]
    # The run's training wall adds the invocations up (run.json: this one's and the total).
    second_run = json.loads((run / "run.json").read_text())
    assert second_run["total_seconds"] == pytest.approx(checkpointed + second_run["seconds"], abs=0.05)
    # A checkpoint from before ``train_seconds`` existed: the wall comes from run.json at its step.
    state_file = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip() / "state.json"
    state = json.loads(state_file.read_text())
    state["extra"].pop("train_seconds")
    state_file.write_text(json.dumps(state))
    old = Trainer(cfg, small_data["data"], small_data["masks"], run, resume=True, progress=False,
                  tensorboard=False)
    assert old.seconds_before == pytest.approx(second_run["total_seconds"])
    old.close()


def test_moving_average_ta_makes_the_targets_and_resumes(small_data: dict[str, Path], tmp_path: Path) -> None:
    overrides = [*SMALL, "train.ta_ema=0.5", "optim.ta.lr=1e-3", "loss.boundary_form=disagreement",
                 "fusion.ta_confidence=0.9", "fusion.uncertain=ta"]
    run = tmp_path / "ema"
    trainer = Trainer(load_config("nano-s0.5", overrides), small_data["data"], small_data["masks"], run,
                      progress=False, tensorboard=False)
    start = {k: v.clone() for k, v in trainer.ta_module.state_dict().items()}
    trainer.fit(2)
    ema, live = trainer.ta_ema.state_dict(), trainer.ta_module.state_dict()
    key = next(k for k, v in start.items() if v.is_floating_point() and not torch.equal(v, live[k]))
    # Two steps of decay 0.5 from the same start: the average lies strictly between start and now.
    assert not torch.equal(ema[key], live[key]) and not torch.equal(ema[key], start[key])
    trainer.close()
    resumed = Trainer(load_config("nano-s0.5", overrides), small_data["data"], small_data["masks"], run,
                      resume=True, progress=False, tensorboard=False)
    for name, value in resumed.ta_ema.state_dict().items():
        torch.testing.assert_close(value, ema[name], rtol=0, atol=0)
    resumed.close()
    frozen = Trainer(load_config("nano-s0.5", [*SMALL, "train.ta_ema=1.0", "optim.ta.lr=1e-3"]),
                     small_data["data"], small_data["masks"], tmp_path / "frozen", progress=False,
                     tensorboard=False)
    first = {k: v.clone() for k, v in frozen.ta_ema.state_dict().items()}
    frozen.fit(1)
    for name, value in frozen.ta_ema.state_dict().items():
        assert torch.equal(value, first[name]), name
    frozen.close()


def test_train_cli_validation_options(small_data: dict[str, Path], tmp_path: Path) -> None:
    from goodsam.train.pipeline import run_training

    with pytest.raises(ConfigError, match="both --val-images and --val-labels"):
        run_training("nano-s0.5", small_data["data"], small_data["masks"], tmp_path / "r",
                  val_images=small_data["val_images"])


def test_frozen_target_logits_are_cached_exactly(small_data: dict[str, Path], tmp_path: Path) -> None:
    # Student terms only, targets from the frozen initial TA: with and without the cache, the same run.
    overrides = [*SMALL, "train.ta_ema=1.0", "ta.scale=1.5", "loss.eq6_ta_ensemble=0",
                 "loss.eq1_consistency=0", "loss.eq2_boundary_enhanced=0"]
    cache = tmp_path / "targets"
    runs = {}
    for name, extra in (("plain", []), ("cached", [f"train.target_cache={cache}"]),
                        ("again", [f"train.target_cache={cache}"])):
        trainer = Trainer(load_config("nano-s0.5", [*overrides, *extra]), small_data["data"],
                          small_data["masks"], tmp_path / name, progress=False, tensorboard=False)
        runs[name] = [h["student"] for h in trainer.fit(2).history]
        states = trainer.ta_module.state_dict().values(), trainer.ta_ema.state_dict().values()
        pairs = zip(*states, strict=True)
        ta_unchanged = all(torch.equal(a, b) for a, b in pairs)
        assert ta_unchanged  # no TA term: the TA is not trained
        trainer.close()
    assert runs["plain"] == runs["cached"] == runs["again"]
    assert sorted(p.name for p in cache.glob("*.safetensors")) == ["pass_1027U_0.safetensors",
                                                                  "pass_1210U_1.safetensors"]
    # Another scale is another identity: the files are recomputed, not reused.
    stamp = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.safetensors")}
    other = [o if not o.startswith("ta.scale") else "ta.scale=1.25" for o in overrides]
    trainer = Trainer(load_config("nano-s0.5", [*other, f"train.target_cache={cache}"]), small_data["data"],
                      small_data["masks"], tmp_path / "other", progress=False, tensorboard=False)
    trainer.fit(2)
    trainer.close()
    assert all(p.stat().st_mtime_ns != stamp[p.name] for p in cache.glob("*.safetensors"))


def test_frozen_targets_are_made_once_per_panorama_while_the_ta_adapts(small_data: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    """The nano default (targets from the frozen initial TA, the TA adapting with eq. 6 + 1 + 2): a
    panorama's fused targets, B_ref and tiling are made on its first visit and kept; the losses, both
    models' gradients and weights equal those of the run that makes them every step."""
    runs = {}
    for name, memoize in (("every_step", False), ("once", True)):
        trainer = Trainer(load_config("nano-s0.5", SMALL), small_data["data"], small_data["masks"],
                          tmp_path / name, progress=False, tensorboard=False)
        assert trainer.ta_terms_on and trainer.memoize_targets
        trainer.memoize_targets = memoize
        history = trainer.fit(3).history  # two panoramas: steps 2 and 3 revisit them
        runs[name] = ([(h["student"], h["ta"], h["grad_norm_ta"]) for h in history],
                      [v.clone() for v in trainer.ta_module.state_dict().values()],
                      len(trainer._frozen_targets))
        trainer.close()
    assert runs["once"][0] == runs["every_step"][0]
    assert all(torch.equal(a, b) for a, b in zip(runs["once"][1], runs["every_step"][1], strict=True))
    assert (runs["once"][2], runs["every_step"][2]) == (2, 0)


def test_student_input_scale_trains_validates_and_travels_with_the_export(small_data: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """``student.scale``: the student sees the panorama resized by it (logits back at panorama size), is
    validated at it, and the exported student records it for `goodsam eval` / `predict`."""
    from goodsam.evaluation import evaluate, get_class_map, open_labelled_set
    from goodsam.inference import default_scale, load_model

    plain = load_config("nano-s0.5", SMALL)
    scaled = load_config("nano-s0.5", [*SMALL, "student.scale=2"])
    assert plain.hash() == load_config("nano-s0.5", [*SMALL, "student.scale=1"]).hash() != scaled.hash()
    with pytest.raises(ConfigError, match="scale"):
        load_config("nano-s0.5", [*SMALL, "student.scale=0"])
    seen = []
    trainer = Trainer(scaled, small_data["data"], small_data["masks"], tmp_path / "run", progress=False,
                      tensorboard=False, validation=Validation.from_folders(
                          small_data["val_images"], small_data["val_labels"], "{stem}_trainIds.png",
                          "cityscapes19", every=1))
    trainer.student_module.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    scalars = trainer.train_step(0)
    assert np.isfinite(scalars["eq4_erp"]) and seen[0] == (128, 512)  # 64x256 panorama at scale 2
    record = trainer.validate()
    exported = trainer.export()
    trainer.close()
    student = load_model(exported)
    assert student.input_scale == 2.0 and default_scale(student, None) == 2.0
    assert default_scale(student, 1.5) == 1.5
    assert default_scale(load_model("espnetv2-s0.5"), None) == 1.0
    dataset = open_labelled_set(images=small_data["val_images"], labels=small_data["val_labels"],
                                label_pattern="{stem}_trainIds.png")
    scored = evaluate(student, dataset, get_class_map("cityscapes19"), scale=2.0)  # the same weights
    assert record["val/student_miou"] == pytest.approx(100 * scored.scores.miou)


def test_detail_augmentation_resamples_the_students_input_only(small_data: dict[str, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``data.resample_max``: the student sees the panorama stored smaller and upscaled (a factor drawn per
    panorama and step in [1, max]); the TA's targets come from the panorama itself; off (1) it draws
    nothing and the run is the one without the key (same config hash)."""
    from goodsam.imageio import resample
    from goodsam.train import augment

    overrides = [*SMALL, "train.ta_ema=1.0", "loss.eq6_ta_ensemble=0", "loss.eq1_consistency=0",
                 "loss.eq2_boundary_enhanced=0"]
    assert load_config("nano-s0.5", [*overrides, "data.resample_max=1"]).hash() == \
        load_config("nano-s0.5", overrides).hash()
    assert load_config("nano-s0.5", [*overrides, "data.resample_max=2"]).hash() != \
        load_config("nano-s0.5", overrides).hash()
    with pytest.raises(ConfigError, match="data.resample_max must be >= 1"):
        load_config("nano-s0.5", [*overrides, "data.resample_max=0.5"])
    factors = [augment.sample_detail_factor(0, step, 0, 2.0) for step in range(20)]
    assert all(1.0 <= f <= 2.0 for f in factors) and len(set(factors)) == 20
    assert augment.sample_detail_factor(0, 3, 0, 2.0) == factors[3]
    assert augment.sample_detail_factor(0, 3, 0, 1.0) == 1.0

    seen: list[torch.Tensor] = []
    apply = augment.apply
    monkeypatch.setattr(augment, "apply", lambda x, aug: seen.append(x.clone()) or apply(x, aug))
    losses, targets = {}, {}
    for name, maximum in (("plain", 1.0), ("resampled", 2.0)):
        trainer = Trainer(load_config("nano-s0.5", [*overrides, f"data.resample_max={maximum}"]),
                          small_data["data"], small_data["masks"], tmp_path / name, progress=False,
                          tensorboard=False)
        sample = trainer.dataset[0]
        losses[name] = trainer.sample_losses(sample, step=3)
        targets[name] = trainer._frozen_targets[sample.index]
        trainer.close()
    original = trainer.dataset[0].image
    assert torch.equal(seen[0][0], original.float())
    factor = augment.sample_detail_factor(0, 3, 0, 2.0)
    expected = resample(np.ascontiguousarray(original.permute(1, 2, 0).numpy()), factor)
    assert torch.equal(seen[1][0], torch.from_numpy(expected).permute(2, 0, 1).float())
    assert torch.equal(targets["plain"].labels, targets["resampled"].labels)  # targets from the panorama
    assert not torch.equal(losses["plain"]["eq4_erp"], losses["resampled"]["eq4_erp"])
