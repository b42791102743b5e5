"""The pure parts of ``benchmarks/ablations.py``: plan, settings guard, band cut, PNG budget, scoring, report.

The end-to-end ``--quick`` run (SAM, training, evaluation) takes minutes on a shared CPU and is not run
here; these tests cover everything around it in a few seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from goodsam.evaluation.pseudo_labels import PseudoLabelScorer

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.append(str(BENCHMARKS))

import ablation_data  # noqa: E402
import ablation_eval  # noqa: E402
import ablation_images  # noqa: E402
import ablation_report  # noqa: E402
import ablations  # noqa: E402
from ablation_common import Settings, quick_settings, write_json  # noqa: E402


@pytest.fixture()
def quick(tmp_path: Path) -> Settings:
    return quick_settings(tmp_path / "work", tmp_path / "docs")


def test_plan_lists_every_stage_and_runs_nothing(tmp_path: Path, capsys) -> None:
    ablations.main(["--quick", "--plan", "--work", str(tmp_path / "w")])
    out = capsys.readouterr().out
    for name in ("data", "masks", "eval_pretrained", "fusion_pretrained", "train_eq4", "train_eq45",
                 "train_full", "eval_trained", "fusion_trained", "overlays", "report"):
        assert f"  {name} " in out
    assert "ETA" in out and not (tmp_path / "w").exists()


def test_full_plan_fits_the_budget(tmp_path: Path) -> None:
    settings = Settings(work=tmp_path, docs=tmp_path)
    estimates = ablations.estimates(settings)
    assert ablations.panorama_counts(settings) == (13, 2)
    assert ablations.sam_calls_per_panorama(settings) == 13  # 7 windows + 6 overlaps at 2048 / 512 / 256
    assert sum(estimates.values()) < 120 * 60  # aim: ~90 min; hard limit 3 h


def test_done_stages_are_skipped_except_the_report(quick: Settings) -> None:
    stages = ablations.build_stages(quick)
    write_json(quick.work / "stages" / "data.json", {"wall_s": 1.0})
    write_json(quick.work / "stages" / "report.json", {"wall_s": 1.0})
    todo = [s.name for s in ablations.pending(stages, quick, None)]
    assert "data" not in todo and "report" in todo
    assert [s.name for s in ablations.pending(stages, quick, {"masks"})] == ["masks"]


def test_work_dir_made_with_other_settings_is_refused(quick: Settings) -> None:
    ablations.check_settings(quick)
    quick.threads = 1  # not semantic: fine
    ablations.check_settings(quick)
    quick.steps = 99
    with pytest.raises(SystemExit, match="steps"):
        ablations.check_settings(quick)


def test_train_args_switch_only_the_student_terms(quick: Settings) -> None:
    full = ablations.train_args("full", quick)
    eq4 = ablations.train_args("eq4", quick)
    assert "loss.eq5_student_ensemble=0" in eq4 and "loss.eq7_student_boundary=0" in eq4
    assert not any(a.startswith("loss.") for a in full)
    assert "--resume" in full and "data.height=200" in full and "sam.settings.points_per_side=4" in full
    assert full[full.index("--config") + 1] == "nano-s0.5"


def test_band_cut_matches_fit_erp_band_rows() -> None:
    assert ablation_data.band_rows(832, 1664, 400, 2048) == (253, 325)
    assert ablation_data.band_rows(692, 2048, 400, 2048) == (0, 692)  # not 2:1: kept whole
    image = np.zeros((832, 1664, 3), np.uint8)
    label = np.zeros((832, 1664), np.uint8)
    label[:253] = 5  # sky above the band is cut away
    label[253:578] = np.arange(1664)[None, :] % 8
    out_image, out_label = ablation_data.labelled_band(image, label, 400, 2048)
    assert out_image.shape == (400, 2048, 3) and out_label.shape == (400, 2048)
    assert set(np.unique(out_label)) <= set(range(8))  # nearest neighbour: no blended ids


def test_overlay_png_stays_under_budget(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 1024, 3), dtype=np.uint8)  # noise: the worst case for PNG
    info = ablation_images.save_small_png(image, tmp_path / "x.png", max_bytes=20_000)
    assert (tmp_path / "x.png").stat().st_size == info["bytes"] <= 20_000
    assert info["width"] < 1024  # had to shrink
    assert Image.open(tmp_path / "x.png").width == info["width"]


def test_category_display_ids() -> None:
    cats = np.array([[0, 1, 2, 3, 4, 5, 6, 7]], np.uint8)
    assert ablation_images.categories_as_train_ids(cats).tolist() == [[255, 0, 2, 5, 8, 10, 11, 13]]
    train_ids = np.array([[0, 1, 2, 8, 10, 11, 13, 18]], np.uint8)
    assert ablation_images.train_ids_as_categories(train_ids).tolist() == [[0, 0, 2, 8, 10, 11, 13, 13]]
    assert ablation_images.CATEGORY_LEGEND[13] == "vehicle"


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


def fake_job(miou: float) -> dict:
    return {"miou": miou, "pixel_accuracy": 90.0, "per_class": {"road": 95.0, "flat": 90.0},
            "command": f"goodsam eval m{miou}", "wall_s": 12.0}


def test_report_renders_numbers_paper_and_missing_stages(quick: Settings) -> None:
    stages = quick.work / "stages"
    write_json(stages / "data.json", {"wall_s": 5.0, "splits": {
        "train": {"panoramas": 1, "mean_coverage": 0.36, "frames": 8},
        "eval": {"panoramas": 1, "mean_coverage": 0.3, "frames": 4}}})
    jobs = {name: fake_job(value) for name, value in (("ta_pinhole", 57.0), ("ta_whole", 40.0),
                                                       ("ta_sliding", 40.2), ("student_before", 30.0))}
    write_json(stages / "eval_pretrained.json", {"wall_s": 60.0, "jobs": jobs})
    rows = {m: {"miou": 40.0, "pixel_accuracy": 90.0, "labelled": 80.0, "miou_own": 45.0,
                "ta_miou_own": 44.0} for m in ablation_eval.FUSION_METHODS}
    write_json(stages / "fusion_pretrained.json", {"wall_s": 3.0, "rows": rows})
    path = Path(ablation_report.write_report(quick)["path"])
    text = path.read_text()
    assert "Quick mode" in text
    assert "| sliding windows 512/256 | 40.2 | 90.0 | 53.86 |" in text
    assert "27.62" in text and "| Tab. 5 ¹ |" in text and "| Tab. 3 ¹ |" in text
    assert text.count(ablation_report.PAPER_NOTE) == 2  # why the Tab. 3 / Tab. 5 values are not quoted
    assert "does not help here" in text  # +0.2 mIoU: within the noise
    assert "`goodsam eval m40.2`" in text  # numbered command list
    assert f"| {quick.student} after training | eq. 4 (L_ERP) | — |" in text  # not trained yet


def test_commands_are_numbered_once() -> None:
    commands = ablation_report.Commands()
    assert commands.cite("a") == "[1]" and commands.cite("b") == "[2]" and commands.cite("a") == "[1]"
    assert commands.cite(None) == "—"
    assert commands.markdown() == ["1. `a`", "2. `b`"]
