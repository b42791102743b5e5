"""Evaluation: confusion matrix, class maps, dataset layouts, reports, the CLI and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CodedSegmenter
from PIL import Image

from goodsam import classes
from goodsam.errors import ConfigError, ImageError
from goodsam.evaluation import (
    ConfusionMatrix,
    LabelError,
    evaluate,
    get_class_map,
    markdown_table,
    open_labelled_set,
    write_report,
)
from goodsam.evaluation.datasets import detect_layout
from goodsam.evaluation.pseudo_labels import PseudoLabelScorer
from goodsam.export import export_onnx
from goodsam.imageio import load_label, save_png
from goodsam.inference import resize_label
from goodsam.segmenters.base import Segmenter, SegmenterOutput

GOODSAM = [sys.executable, "-m", "goodsam.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*GOODSAM, *map(str, args)], capture_output=True, text=True, timeout=600)


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("goodsam: error:"), result.stderr
    assert "Traceback" not in result.stderr
    assert fragment in lines[0], lines[0]






class FixedLogits(Segmenter):
    """Returns the same logits whatever the input (which must have their size)."""

    name = "fixed"

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("fixed", logits, persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> SegmenterOutput:
        assert pixel_values.shape[-2:] == self.fixed.shape[-2:]
        return SegmenterOutput(self.fixed.expand(pixel_values.shape[0], -1, -1, -1))


def coded_image(prediction: np.ndarray) -> np.ndarray:
    image = np.full((*prediction.shape, 3), 90, dtype=np.uint8)
    image[..., 0] = prediction * 10
    return image


# Hand-made DensePASS fixture: two 4x6 panoramas, predictions P and labels L (255 = ignore).
P1 = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1], [2] * 6, [2] * 6], dtype=np.uint8)
L1 = np.array([[0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [2, 2, 2, 2, 255, 255], [2, 2, 2, 2, 255, 255]],
              dtype=np.uint8)
P2 = np.array([[10] * 6, [10] * 6, [0] * 6, [0, 0, 0, 0, 0, 3]], dtype=np.uint8)
L2 = np.array([[10] * 6, [10] * 6, [0] * 6, [0, 0, 0, 0, 13, 13]], dtype=np.uint8)
# road: TP 4+10, FP 2 (sidewalk) + 1 (car), FN 0 -> 14/17; sidewalk: TP 6, FN 2 -> 6/8; building 8/8;
# sky 12/12; car: TP 0, FN 2 -> 0; wall: predicted once, never labelled -> absent. mIoU over the 5
# labelled classes; pixel accuracy 40/44.
HAND_IOU = {"road": 14 / 17, "sidewalk": 6 / 8, "building": 1.0, "sky": 1.0, "car": 0.0}
HAND_MIOU = 100 * sum(HAND_IOU.values()) / 5
HAND_MIOU_UNION = 100 * sum(HAND_IOU.values()) / 6  # wall counted as 0
HAND_PIXEL_ACC = 100 * 40 / 44


@pytest.fixture()
def densepass_root(tmp_path: Path) -> Path:
    root = tmp_path / "DensePASS"
    for index, (prediction, label) in enumerate(((P1, L1), (P2, L2)), start=1):
        save_png(root / "leftImg8bit" / "val" / "cs" / f"{index}_.png", coded_image(prediction))
        save_png(root / "gtFine" / "val" / "cs" / f"{index}_labelTrainIds.png", label)
    return root


# --- metrics ---------------------------------------------------------------------------------------------

def test_confusion_matrix_counts_ignores_and_unmapped() -> None:
    matrix = ConfusionMatrix(3)
    target = torch.tensor([0, 0, 1, 1, 2, 255, 2])
    prediction = torch.tensor([0, 1, 1, 255, 2, 0, 7])
    matrix.update(target, prediction)
    matrix.update(np.array([[2]]), np.array([[2]]))
    assert matrix.matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 2]]
    assert matrix.unmapped.tolist() == [0, 1, 1]  # predictions outside the class set: misses
    scores = matrix.compute()
    np.testing.assert_allclose(scores.iou, [1 / 2, 1 / 3, 2 / 3])
    assert scores.pixel_accuracy == pytest.approx(4 / 7)
    other = ConfusionMatrix(3)
    other.merge(matrix)
    assert other.matrix.tolist() == matrix.matrix.tolist()


def test_absent_classes_are_nan_and_left_out_of_the_mean() -> None:
    matrix = ConfusionMatrix(4)
    matrix.update(np.array([0, 0, 1, 1]), np.array([0, 0, 3, 1]))
    scores = matrix.compute()
    assert np.isnan(scores.iou[2])  # neither labelled nor predicted
    assert np.isnan(scores.iou[3]) and scores.predicted_only.tolist() == [False, False, False, True]
    assert scores.num_present == 2
    assert scores.miou == pytest.approx((1.0 + 0.5) / 2)  # over the classes present in the labels
    assert scores.miou_union == pytest.approx((1.0 + 0.5 + 0.0) / 3)  # predicted-only class as 0


# --- class maps ------------------------------------------------------------------------------------------

def test_builtin_class_maps() -> None:
    categories = get_class_map("categories7")
    train_ids = np.arange(19, dtype=np.uint8)
    assert categories.map_prediction(train_ids).tolist() == [c - 1 for c in classes.TRAINID_TO_CATEGORY]
    assert categories.map_label(np.array([0, 1, 7, 255], dtype=np.uint8)).tolist() == [255, 0, 6, 255]
    with pytest.raises(LabelError, match="out of range for class map 'categories7'"):
        categories.map_label(np.array([3, 8], dtype=np.uint8))
    dense = get_class_map("densepass13")
    assert dense.num_classes == 13
    assert dense.map_label(np.array([12, 14, 16, 18], dtype=np.uint8)).tolist() == [11, 12, 255, 12]
    assert dense.map_prediction(np.array([12, 16])).tolist() == [11, 255]
    city = get_class_map("cityscapes19")
    with pytest.raises(LabelError, match=r"label values 19, 40 are out of range"):
        city.map_label(np.array([0, 19, 40], dtype=np.uint8))


def test_class_map_files(tmp_path: Path) -> None:
    spec = {"names": ["ground", "thing"], "ids": [3, 9], "ignore": [0],
            "train_id_to_target": [3, 3] + [9] * 16 + [None]}
    path = tmp_path / "two.json"
    path.write_text(json.dumps(spec))
    mapping = get_class_map(path)
    assert mapping.names == ("ground", "thing")
    assert mapping.map_prediction(np.array([0, 5, 18])).tolist() == [0, 1, 255]
    assert mapping.map_label(np.array([3, 9, 0, 255], dtype=np.uint8)).tolist() == [0, 1, 255, 255]
    yaml_path = tmp_path / "bad.yaml"
    yaml_path.write_text("names: [a]\ntrain_id_to_target: [0, 0]\n")
    with pytest.raises(ConfigError, match="must list 19 target ids"):
        get_class_map(yaml_path)
    with pytest.raises(ConfigError, match="unknown class map 'nope'"):
        get_class_map("nope")


# --- dataset layouts -------------------------------------------------------------------------------------


def test_fusion_scorer_falls_back_to_the_ta() -> None:
    gt = torch.tensor([[0, 1, 255, 2]])
    ta = torch.tensor([[0, 1, 1, 0]])
    own = torch.tensor([[0, 255, 255, 2]])  # the method labels two scored pixels, both right
    scorer = PseudoLabelScorer(("TA alone", "SEPL"))
    scorer.add("TA alone", gt, ta, ta)
    scorer.add("SEPL", gt, ta, own)
    rows = scorer.rows()
    assert rows["SEPL"]["labelled"] == pytest.approx(100 * 2 / 3)
    assert rows["SEPL"]["miou_own"] == pytest.approx(100.0)
    assert rows["SEPL"]["miou"] > rows["TA alone"]["miou"]  # pixel 3 corrected, pixel 1 from the TA
    # per class on SEPL's own pixels (0 and 3): SEPL right on both; the TA right on 0, wrong (0) on 3
    assert rows["SEPL"]["per_class_own"][:3] == [100.0, None, 100.0]
    assert rows["SEPL"]["ta_per_class_own"][:3] == [50.0, None, 0.0]

def test_cityscapes_layout_converts_label_ids(tmp_path: Path) -> None:
    image_dir, label_dir = tmp_path / "leftImg8bit" / "val" / "ulm", tmp_path / "gtFine" / "val" / "ulm"
    save_png(image_dir / "ulm_000000_000019_leftImg8bit.png", np.zeros((2, 3, 3), np.uint8))
    label_ids = np.array([[7, 26, 0], [11, 24, 33]], np.uint8)
    save_png(label_dir / "ulm_000000_000019_gtFine_labelIds.png", label_ids)
    assert detect_layout(tmp_path, "val") == "cityscapes"
    labelled = open_labelled_set(tmp_path)
    _, label = labelled.load(labelled.samples[0])
    assert label.tolist() == [[0, 13, 255], [2, 11, 18]]


def test_folder_pair_layout(tmp_path: Path) -> None:
    for stem in ("b", "a"):
        save_png(tmp_path / "img" / f"{stem}.png", np.zeros((2, 3, 3), np.uint8))
        save_png(tmp_path / "lab" / f"{stem}.png", np.ones((2, 3), np.uint8))
    labelled = open_labelled_set(images=tmp_path / "img", labels=tmp_path / "lab")
    assert labelled.layout == "folder" and [s.name for s in labelled.samples] == ["a", "b"]
    assert labelled.load(labelled.samples[0])[1].tolist() == [[1, 1, 1], [1, 1, 1]]
    with pytest.raises(ConfigError, match="names the image .* itself as its label"):
        open_labelled_set(images=tmp_path / "img", labels=tmp_path / "img")


def test_wildpass_and_densepass_layouts(tmp_path: Path, densepass_root: Path) -> None:
    assert open_labelled_set(densepass_root).layout == "densepass"
    root = tmp_path / "WildPASS"
    save_png(root / "leftImg8bit" / "val" / "Oslo" / "pano_1.png", np.zeros((2, 4, 3), np.uint8))
    save_png(root / "gtFine" / "val" / "Oslo" / "pano_1.png", np.zeros((2, 4), np.uint8))
    labelled = open_labelled_set(root)
    assert labelled.layout == "wildpass" and labelled.samples[0].label.parent.name == "Oslo"


# --- evaluation ------------------------------------------------------------------------------------------

def test_densepass_fixture_hand_computed_miou(densepass_root: Path) -> None:
    labelled = open_labelled_set(densepass_root, layout="densepass")
    for window in (None, 4):  # the toy model is per-pixel, so sliding windows change nothing
        result = evaluate(CodedSegmenter().eval(), labelled, get_class_map("cityscapes19"), window=window,
                          stride=2)
        report = result.to_json()
        assert report["miou"] == pytest.approx(HAND_MIOU)
        assert report["pixel_accuracy"] == pytest.approx(HAND_PIXEL_ACC)
        assert report["n_images"] == 2 and report["classes_present"] == 5
        assert report["predicted_only"] == ["wall"]
        assert report["miou_union"] == pytest.approx(HAND_MIOU_UNION)
        for name, iou in HAND_IOU.items():
            assert report["per_class"][name] == pytest.approx(100 * iou)
        assert report["per_class"]["wall"] is None
    table = markdown_table(result, "toy")
    header, _, row = table.splitlines()[:3]
    assert header.startswith("| Method | mIoU | road | sidewalk | building | wall |")
    assert row.startswith(f"| toy | {HAND_MIOU:.1f} | 82.4 | 75.0 | 100.0 | — |")
    assert "Predicted but never labelled (left out of the mean): wall" in table


def test_eval_cli_on_onnx_model(tmp_path: Path, densepass_root: Path) -> None:
    onnx_path = export_onnx(CodedSegmenter().eval(), tmp_path / "coded.onnx", height=4, width=6)
    out = tmp_path / "report"
    result = run_cli("eval", onnx_path, "--dataset", densepass_root, "--window", 4, "--stride", 2,
                     "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "results.json").read_text())
    assert report["miou"] == pytest.approx(HAND_MIOU)
    assert report["config"]["inference"] == {"mode": "sliding", "window": 4, "stride": 2, "wrap": False}
    assert report["config"]["dataset"]["layout"] == "densepass"
    assert f"| {HAND_MIOU:.1f} |" in (out / "results.md").read_text() and "| — |" in result.stdout
    png = np.asarray(Image.open(out / "confusion.png").convert("L"))
    assert png.shape[0] > 200 and png.std() > 10


def test_cvrg_panorama_categories7_void_ignored(assets_dir: Path) -> None:
    folder = assets_dir / "labelled_panorama"
    labelled = open_labelled_set(images=folder, labels=folder, label_pattern="{stem}_categoryIds.png")
    assert [s.image.name for s in labelled.samples] == ["cvrg_pano_0000.png"]  # label file not an image
    categories = load_label(labelled.samples[0].label)
    assert set(np.unique(categories)) <= set(range(8))
    size = (208, 416)
    small = resize_label(categories, *size)
    # An oracle in trainIds (one representative trainId per category), wrong on every void pixel.
    representative = np.array([10, 0, 2, 5, 8, 10, 11, 13], dtype=np.int64)
    oracle = representative[small]
    oracle[small == 0] = 18
    logits = torch.nn.functional.one_hot(torch.from_numpy(oracle), 19).permute(2, 0, 1)[None].float()
    result = evaluate(FixedLogits(logits).eval(), labelled, get_class_map("categories7"), size=size)
    present = [classes.CATEGORY_NAMES[c - 1] for c in np.unique(small) if c > 0]
    report = result.to_json()
    assert report["miou"] == pytest.approx(100.0)
    assert [k for k, v in report["per_class"].items() if v is not None] == present
    assert len(present) >= 5


@pytest.mark.slow
def test_frankfurt_espnetv2_s2_matches_original(assets_dir: Path, tmp_path: Path) -> None:
    city = assets_dir / "cityscapes"
    result = run_cli("eval", "espnetv2-s2.0", "--images", city / "images", "--labels", city / "labels",
                     "--label-pattern", "{stem}_trainIds.png", "--include", "frankfurt_*",
                     "--height", 512, "--width", 1024, "--threads", 1, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["n_images"] == 10
    assert report["miou"] == pytest.approx(57.1, abs=0.5)  # the original ESPNetv2 code's figure
    assert report["pixel_accuracy"] == pytest.approx(94.7, abs=0.5)


@pytest.mark.slow
def test_cvrg_panorama_espnetv2_cli(assets_dir: Path, tmp_path: Path) -> None:
    folder = assets_dir / "labelled_panorama"
    result = run_cli("eval", "espnetv2-s0.5", "--images", folder / "cvrg_pano_0000.png", "--labels", folder,
                     "--label-pattern", "{stem}_categoryIds.png", "--class-map", "categories7",
                     "--height", 416, "--width", 832, "--window", 416, "--stride", 208, "--threads", 1,
                     "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "results.json").read_text())
    assert list(report["per_class"]) == list(classes.CATEGORY_NAMES)
    assert 20.0 < report["miou"] < 95.0


# --- bad inputs: one line, exit 2, before any model is loaded ---------------------------------------------

def _bad_inputs(tmp_path: Path, case: str) -> tuple[list, str]:
    root = tmp_path / "DensePASS"
    image_dir, label_dir = root / "leftImg8bit" / "val" / "cs", root / "gtFine" / "val" / "cs"
    image = np.zeros((4, 6, 3), np.uint8)
    if case == "size":
        save_png(image_dir / "1_.png", image)
        save_png(label_dir / "1_labelTrainIds.png", np.zeros((4, 5), np.uint8))
        return ["--dataset", root], "is 5x4 but image"
    if case == "missing":
        save_png(image_dir / "1_.png", image)
        label_dir.mkdir(parents=True)
        return ["--dataset", root, "--layout", "densepass"], "no label for image"
    if case == "range":
        save_png(image_dir / "1_.png", image)
        save_png(label_dir / "1_labelTrainIds.png", np.full((4, 6), 40, np.uint8))
        return ["--dataset", root], "label values 40 are out of range for class map 'cityscapes19'"
    if case == "empty":
        (tmp_path / "empty").mkdir()
        return ["--images", tmp_path / "empty", "--labels", tmp_path / "empty"], "no images"
    if case == "layout":
        (tmp_path / "plain").mkdir()
        return ["--dataset", tmp_path / "plain"], "cannot tell the layout"
    if case == "layout-name":
        return ["--dataset", tmp_path, "--layout", "mapillary"], "unknown layout 'mapillary'"
    return ["--dataset", tmp_path, "--class-map", "ade20k"], "unknown class map 'ade20k'"


@pytest.mark.parametrize("case", ["size", "missing", "range", "empty", "layout", "layout-name", "class-map"])
def test_bad_inputs_give_one_line_errors(tmp_path: Path, case: str) -> None:
    args, fragment = _bad_inputs(tmp_path, case)
    assert_one_line_error(run_cli("eval", "espnetv2-s0.5", *args, "--out", tmp_path / "out"), fragment)


def test_api_errors(tmp_path: Path, densepass_root: Path) -> None:
    with pytest.raises(ConfigError, match="needs both --images and --labels"):
        open_labelled_set(images=tmp_path)
    with pytest.raises(ImageError, match="no labelled images found .* matching 'x\\*'"):
        open_labelled_set(densepass_root, include="x*")
    with pytest.raises(ConfigError, match="must contain \\{stem\\}"):
        open_labelled_set(images=densepass_root, labels=densepass_root, label_pattern="label.png")
    labelled = open_labelled_set(densepass_root)
    result = evaluate(CodedSegmenter().eval(), labelled, get_class_map("densepass13"))
    paths = write_report(result, tmp_path / "r", "toy")
    assert json.loads(paths["json"].read_text())["miou"] == pytest.approx(HAND_MIOU)


def test_pseudo_labels_scored_per_image_add_up_to_the_whole_set(tmp_path: Path) -> None:
    """``score_labelled_images``: each image's rows are that image scored alone, and ``all`` is the set's
    (``score_labelled_set``), with a toy TA (class = red / 10) and a hand-made mask cache."""
    from goodsam.evaluation import LabelledSample, LabelledSet
    from goodsam.evaluation.pseudo_labels import FusionVariant, score_labelled_images, score_labelled_set
    from goodsam.panorama.windows import sliding_windows
    from goodsam.sam.base import MaskSet
    from goodsam.sam.cache import PanoramaMasks, cache_path, save_panorama_masks

    ta = CodedSegmenter().eval()
    layout = sliding_windows(64, 256, 128, 64)
    rng = np.random.default_rng(0)
    samples = []
    for k in range(2):
        image = save_png(tmp_path / f"p{k}.png", rng.integers(0, 30, (64, 256, 3), dtype=np.uint8))
        label = rng.integers(0, 3, (64, 256)).astype(np.uint8)
        label[:8] = 255
        samples.append(LabelledSample(f"p{k}", image, save_png(tmp_path / f"p{k}_trainIds.png", label)))
        mask = np.zeros((1, 64, 128), bool)
        mask[0, :, : 40 + 20 * k] = True  # one SAM mask per window, another size per image
        window = MaskSet(mask, mask.sum((1, 2)), np.ones(1, np.float32), np.ones(1, np.float32))
        save_panorama_masks(cache_path(tmp_path / "masks", image), PanoramaMasks(
            layout, [window] * layout.num_windows, [MaskSet.empty(64, 64)] * (layout.num_windows - 1)))
    variants = (FusionVariant("TA alone", "ta"), FusionVariant("CTCF", "ctcf"))
    both = LabelledSet("folder", "x", tuple(samples))
    scored = score_labelled_images(ta, both, tmp_path / "masks", variants)
    assert set(scored) == {"all", "p0", "p1"}
    assert scored["all"] == score_labelled_set(ta, both, tmp_path / "masks", variants)
    for k, sample in enumerate(samples):
        alone = score_labelled_set(ta, LabelledSet("folder", "x", (sample,)), tmp_path / "masks", variants)
        assert scored[f"p{k}"] == alone
    assert scored["p0"]["CTCF"]["labelled"] != scored["p1"]["CTCF"]["labelled"]
