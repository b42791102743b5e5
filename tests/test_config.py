"""Training configs on pydantic: same values, same hashes, one-line errors naming the key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from goodsam.errors import ConfigError
from goodsam.mka.losses import LossWeights
from goodsam.sam.base import AMGSettings
from goodsam.train.config import (
    LossSection,
    SAMSettings,
    available_configs,
    config_from_dict,
    load_config,
)

# Pre-pydantic hashes: computed with the dataclass config code (before the move to pydantic). A run's
# checkpoints hold this hash; if it changed, every existing run would refuse to resume.
PRE_PYDANTIC_HASHES = {
    "goodsam-m": "c15c6762b5b1c277",
    "goodsam-s": "3fd177dfa8255ef5",
    "goodsam-t": "3a9ee981a4a0413d",
    "nano-s0.5-paper": "ac8411eba1585464",  # until session 13 named nano-s0.5 (name is not semantic)
}
# The nano configs with the safeguards as defaults (session 13): other semantics, so other hashes.
SAFEGUARDED_HASHES = {"nano-s0.5": "49903dd9e4600425", "nano-s1.0": "bd51e6e23ea7f6eb"}
# The same, for overridden configs (lists, null, 1e-4, keys added to sam.settings/fusion.options, an
# int given for a float AMG setting, non-semantic keys, 'auto' scale).
OVERRIDES = {
    "c128438ae795ce08": ["optim.student.lr=1e-4", "data.void_rgb=[0,0,0]", "ta.weights=null",
                         "train.ta_ema=0.99", "sam.settings.box_nms_thresh=0.5", "fusion.options.top_k=2",
                         "ta.scale=auto", "train.target_cache=/tmp/x", "loss.boundary_form=disagreement",
                         "fusion.ta_confidence=0.9"],
    "c5568d762c2e41c6": ["ta.scale=2", "fusion.method=sepl", "fusion.options.min_coverage=0.6",
                         "optim.grad_clip=1", "sam.settings.stability_score_offset=1", "optim.decay_steps=30",
                         "name=foo"],
}


def test_bundled_config_hashes_are_unchanged() -> None:
    assert set(available_configs()) == {*PRE_PYDANTIC_HASHES, *SAFEGUARDED_HASHES}
    for name, expected in {**PRE_PYDANTIC_HASHES, **SAFEGUARDED_HASHES}.items():
        assert load_config(name).hash() == expected, name


def test_nano_defaults_are_the_paper_config_with_the_safeguards() -> None:
    """``nano-s0.5`` = ``nano-s0.5-paper`` + the four safeguards measured to hold (docs/results.md)."""
    safeguards = ["fusion.ta_confidence=0.7", "fusion.uncertain=ta", "loss.boundary_form=disagreement",
                  "train.ta_ema=1.0"]
    assert load_config("nano-s0.5").hash() == load_config("nano-s0.5-paper", safeguards).hash()
    paper = load_config("nano-s0.5-paper")
    assert (paper.fusion.ta_confidence, paper.fusion.uncertain, paper.loss.boundary_form,
            paper.train.ta_ema) == (None, "paper", "paper", None)


@pytest.mark.parametrize("expected", sorted(OVERRIDES))
def test_overridden_config_hashes_are_unchanged(expected: str) -> None:
    assert load_config("nano-s0.5-paper", OVERRIDES[expected]).hash() == expected


def test_soft_eq4_target_is_semantic_and_checked() -> None:
    """``loss.eq4_target`` (added in session 15): 'hard' (the paper's) keeps every earlier hash, 'soft'
    is another config, anything else a one-line ConfigError."""
    paper = load_config("nano-s0.5-paper")
    assert paper.loss.eq4_target == "hard"
    assert load_config("nano-s0.5-paper", ["loss.eq4_target=hard"]).hash() == paper.hash()
    assert load_config("nano-s0.5-paper", ["loss.eq4_target=soft"]).hash() != paper.hash()
    with pytest.raises(ConfigError, match="loss.eq4_target must be hard or soft"):
        load_config("nano-s0.5-paper", ["loss.eq4_target=kl"])


def test_values_and_round_trip() -> None:
    semantic = ["data.void_rgb=[0,0,0]", "optim.student.lr=1e-4", "ta.weights=null"]
    cfg = load_config("nano-s0.5-paper", [*semantic, "train.target_cache=/tmp/cache"])
    expected = load_config("nano-s0.5-paper", semantic).hash()
    assert cfg.data.void_rgb == (0, 0, 0) and cfg.optim.student.lr == 1e-4 and cfg.ta.weights is None
    assert cfg.optim.ta.betas == (0.9, 0.999) and cfg.ta.scale == 1.0
    assert isinstance(cfg.loss, LossWeights) and cfg.loss.high_conf_lambda == 0.2
    assert cfg.hash() == expected != PRE_PYDANTIC_HASHES["nano-s0.5-paper"]  # target_cache is not semantic
    again = config_from_dict(json.loads(json.dumps(cfg.to_dict())))  # how the demo's workers get it
    assert again == cfg and again.hash() == cfg.hash() and again.to_yaml() == cfg.to_yaml()
    cfg.train.steps = 5
    assert cfg.train.steps == 5 and cfg.hash() == expected


def test_sam_settings_are_typed_and_read_as_the_given_mapping() -> None:
    cfg = load_config("nano-s0.5", ["sam.settings.points_per_side=2"])
    given = {"points_per_side": 2, "points_per_batch": 100, "pred_iou_thresh": 0.86,
             "stability_score_thresh": 0.92}
    assert dict(cfg.sam.settings) == given and cfg.to_dict()["sam"]["settings"] == given
    assert cfg.sam.settings.box_nms_thresh == AMGSettings().box_nms_thresh  # not given: AMG's default
    assert cfg.sam.amg_settings() == AMGSettings(**given) == AMGSettings(**cfg.sam.settings)
    with pytest.raises(ConfigError, match="unknown config key.*sam.settings.points; known in this section: "
                                          "box_nms_thresh"):
        load_config("nano-s0.5", ["sam.settings.points=3"])
    with pytest.raises(ConfigError, match="config key 'sam.settings.points_per_side' must be an integer, "
                                          "got 2.5"):
        load_config("nano-s0.5", ["sam.settings.points_per_side=2.5"])


def test_mirrored_sections_match_their_dataclasses() -> None:
    for section, dataclass in ((SAMSettings, AMGSettings), (LossSection, LossWeights)):
        defaults = {f.name: f.default for f in dataclasses.fields(dataclass)}
        assert {name: info.default for name, info in section.model_fields.items()} == defaults


def test_fusion_options_are_checked_against_the_method() -> None:
    cfg = load_config("nano-s0.5", ["fusion.method=sepl", "fusion.options.min_coverage=0.6"])
    assert dict(cfg.fusion.options) == {"min_coverage": 0.6}
    assert dict(load_config("nano-s0.5").fusion.options) == {}
    with pytest.raises(ConfigError, match="fusion.options min_coverage not taken by ctcf"):
        load_config("nano-s0.5", ["fusion.options.min_coverage=0.6"])
    with pytest.raises(ConfigError, match="config key 'fusion.options.top_k' must be an integer, got 'x'"):
        load_config("nano-s0.5", ["fusion.options.top_k=x"])


@pytest.mark.parametrize(("override", "message"), [
    ("train.steps=true", "config key 'train.steps' must be an integer, got True"),
    ("optim.student.lr=fast", "config key 'optim.student.lr' must be a number, got 'fast'"),
    ("optim.student.lr=null", "config key 'optim.student.lr' must not be null"),
    ("optim.ta.betas=[0.9]", "config key 'optim.ta.betas' must be a pair of numbers, got [0.9]"),
    ("data.flip=1", "config key 'data.flip' must be true or false, got 1"),
    ("data.void_rgb=[0,0,256]", "config key 'data.void_rgb' must be an RGB triple like [0, 0, 0], "
                                "got [0, 0, 256]"),
    ("ta.scale=huge", "config key 'ta.scale': scale must be a positive number or 'auto', got 'huge'"),
    ("windows=3", "config section 'windows' must be a mapping, got 3"),
    ("sam.settings=3", "config key 'sam.settings' must be a mapping, got 3"),
    ("train.amp=fp8", "nano-s0.5: train.amp must be auto, bf16, fp16 or off"),
])
def test_errors_are_one_line_with_key_value_and_expectation(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("nano-s0.5", [override])
    assert str(info.value) == message


def test_unknown_keys_everywhere(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) extra, more; known in this section: d"):
        load_config("nano-s0.5", ["extra=1", "more=2"])
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) loss\.eq9; known in this section: "):
        load_config("nano-s0.5", ["loss.eq9=1"])
    own = tmp_path / "mine.yaml"
    own.write_text("base: nano-s1.0\ntrain: {steps: 3}\nta:\n  scale: 1.5\noptim:\n  student: {lr: 1e-3}\n")
    mine = load_config(own)
    assert (mine.name, mine.train.steps, mine.ta.scale, mine.optim.student.lr) == ("nano-s1.0", 3, 1.5, 1e-3)
    assert mine.student.architecture == "espnetv2-s1.0"
