"""The evidence report: issue 12's acceptance lines are computed from the stage results, and the oracle
diagnosis targets put the ground truth where it is labelled and nothing else changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from goodsam.experiments.evidence import ONE_PROCESS, Evidence, write_oracle_targets
from goodsam.experiments.evidence_report import acceptance_lines, summary_json, write_report
from goodsam.experiments.evidence_restore import restored_record
from goodsam.fileio import save_tensors
from goodsam.imageio import save_png
from goodsam.panorama.windows import sliding_windows


def _scores(miou: float, **per_class: float) -> dict:
    return {"miou": miou, "pixel_accuracy": 90.0, "per_class": per_class}


def _run(what: str, proxy: float, cvrg: float, val: float, **extra) -> dict:
    name = extra.pop("name")
    results = {f"proxy/student_{name}": _scores(proxy), f"cvrg/student_{name}": _scores(cvrg)}
    results.update(extra.pop("results", {}))
    return {"what": what, "overrides": ["student.scale=2", "loss.eq4_erp=1"], "steps": 60,
            "train_seconds": 600.0, "student_scale": "2", "results": results,
            "validation": [{"step": 0, "student": 38.0}, {"step": 60, "student": val}], **extra}


def _state() -> dict:
    before = {"proxy/ta_whole_s1": _scores(23.6), "cvrg/ta_whole_s1": _scores(59.7),
              "proxy/ta_windows_s1": _scores(24.3, road=90.0, pole=14.0, bus=7.0),
              "cvrg/ta_windows_s1": _scores(59.5), "proxy/ta_windows_chosen": _scores(40.2),
              "cvrg/ta_windows_chosen": _scores(20.5), "proxy/student_before": _scores(22.6),
              "cvrg/student_before": _scores(45.7)}
    ta_results = {"proxy/ta_ta_adapt_scale1": _scores(25.0, road=91.0, pole=6.0, bus=1.0),
                  "cvrg/ta_ta_adapt_scale1": _scores(60.0)}
    return {
        "scale_sweep": {"val_miou": {"1": 32.2, "3": 48.4}, "chosen": "3", "rule": "best"},
        "student_scale": {"val_miou": {"1": 32.4, "2": 38.3}, "chosen": "2", "rule": "best", "seconds": 10,
                          "results": {"proxy/student_before_chosen_scale": _scores(27.8),
                                      "cvrg/student_before_chosen_scale": _scores(42.8)}},
        "fusion_select": {"chosen": {"name": "CTCF + both (0.7)"}, "rows": {}},
        "fusion_eval": {"rows": {"CTCF + both (0.7)": {"miou": 40.6, "miou_own": 38.0, "ta_miou_own": 37.4}}},
        "eval_before": before,
        "run_eq4": _run("eq. 4 only", 29.4, 50.7, 38.7, name="eq4"),
        "run_eq45": _run("eq. 4 + 5", 29.9, 51.6, 38.9, name="eq45"),
        "run_full": _run("full", 32.0, 51.1, 39.0, name="full"),
        "run_full_ssa": _run("full, SSA", 30.0, 52.0, 38.0, name="full_ssa"),
        "run_ta_adapt_scale1": _run("TA adaptation", 24.0, 45.0, 33.0, name="ta_adapt_scale1", ta_scale="1",
                                    results=ta_results),
    }


def _row(lines: list[str], start: str) -> list[str]:
    row = next(line for line in lines if line.startswith(f"| {start}"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_acceptance_lines_are_computed_from_the_stage_results() -> None:
    state = _state()
    data = summary_json(state)
    assert data["proxy"]["student_after"] == 32.0 and data["proxy"]["student_before"] == 27.8
    assert data["proxy"]["ta_before"] == 24.3 and data["proxy"]["ta_after"] == 25.0  # same mode: windows s1
    lines = acceptance_lines(data, state)
    assert _row(lines, "student after (full run) vs TA whole")[1:] == [">= 31.6", "32.0", "yes"]
    assert _row(lines, "student after vs TA windows")[1:] == [">= 38.2", "32.0", "no"]
    assert _row(lines, "TA after its adaptation")[1:] == [">= 24.3", "25.0", "yes"]
    # pole 14 -> 6 falls below half; bus (7 before) is under the 10-IoU bar, road holds.
    assert _row(lines, "no class the TA scored")[2:] == ["pole 14.0 → 6.0", "no"]
    assert _row(lines, "CTCF as the headline trains on it")[1:] == ["> 37.4", "38.0", "yes"]
    assert _row(lines, "CVRG: student after")[1:] == [">= 42.8 and >= 59.7", "51.1", "no"]
    assert _row(lines, "eq. 5 lowers")[-1] == "yes"
    assert _row(lines, "CTCF over SSA")[-1] == "no (no seed spread measured)"  # CVRG 51.1 < 52.0
    assert _row(lines, "(beside) fusion safeguards")[-1] == "not run"


def test_seed_repeats_give_the_spread_the_component_lines_are_read_with(tmp_path: Path) -> None:
    """The largest |seed 1 - seed 0| per number; a shortfall within it is said to be, one beyond it named."""
    state = {**_state(), "run_eq4_seed1": _run("eq. 4 only, seed 1", 29.0, 51.9, 38.5, name="eq4_seed1"),
             "run_full_seed1": _run("full, seed 1", 31.5, 51.0, 39.3, name="full_seed1")}
    data = summary_json(state)
    spread = data["seed_spread"]
    assert spread["pairs"] == ["eq4_seed1 vs eq4", "full_seed1 vs full"]
    assert spread["proxy"] == pytest.approx(0.5) and spread["cvrg"] == pytest.approx(1.2)
    assert spread["val"] == pytest.approx(0.3)
    lines = acceptance_lines(data, state)
    # full_ssa: CVRG 52.0 vs full 51.1 (0.9 < 1.2), val 38.0 < 39.0: the only shortfall is within the spread
    assert _row(lines, "CTCF over SSA")[-1] == "no (every shortfall within the seed spread)"
    state["run_full_ssa"] = _run("full, SSA", 30.0, 53.0, 38.0, name="full_ssa")  # now 1.9 > 1.2
    lines = acceptance_lines(summary_json(state), state)
    assert _row(lines, "CTCF over SSA")[-1] == "no (cvrg -1.90 > spread 1.20)"
    text = write_report(tmp_path, state, tmp_path).read_text()
    assert "| eq4 | 29.4 / 50.7 / 38.7 | 29.0 / 51.9 / 38.5 | 0.4 / 1.2 / 0.2 |" in text
    assert "| **spread** (the largest) | | | 0.5 / 1.2 / 0.3 |" in text
    # both runs repeated: the means of the two seeds (full 31.75 / 51.05 / 39.15, eq4 29.2 / 51.3 / 38.6)
    gain = text[text.index("What GoodSAM's student terms add"):].splitlines()[0]
    assert gain.startswith("What GoodSAM's student terms add over eq. 4 alone at the same student scale "
                           "(`full` against `eq4`, mean of seeds 0 and 1): +2.55 proxy (spread 0.50)")
    assert "CVRG (spread 1.20)" in gain and gain.endswith("(spread 0.30): beyond the seed noise on proxy, "
                                                           "validation.")


def test_report_writes_markdown_json_and_the_acceptance_section(tmp_path: Path) -> None:
    path = write_report(tmp_path, _state(), tmp_path)
    text = path.read_text()
    assert "## Issue 12 acceptance, as measured" in text
    assert "| TA after: TA adaptation | windows, scale 1 |" in text
    data = json.loads((tmp_path / "results.json").read_text())
    for key in ("ta_whole_scale1", "ta_windows_chosen_scale", "ta_before", "ta_after", "student_before",
                "student_after", "ctcf_own", "ta_own"):
        assert key in data["proxy"] and key in data["cvrg"]
    assert (tmp_path / "results" / "validation_curves.png").stat().st_size > 1000


def test_long_oracle_is_reported_against_the_long_full_run(tmp_path: Path) -> None:
    state = {**_state(), "run_full_long": _run("full, 240 steps", 31.0, 52.0, 39.5, name="full_long"),
             "oracle_long": _run("oracle, 240 steps", 33.0, 50.0, 42.0, name="oracle_eq4_long")}
    text = write_report(tmp_path, state, tmp_path).read_text()
    assert "(`oracle_eq4_long`; same student, scale, learning rate, 60 steps) goes 38.0 → 42.0" in text
    assert "against 38.0 → 39.5 for `full_long`" in text
    assert "| student after: oracle, 240 steps | whole, scale 2 | 33.0 | 50.0 |" in text
    assert json.loads((tmp_path / "results.json").read_text())["runs"]["oracle_eq4_long"]["proxy"] == 33.0


def test_the_scale3_oracle_is_reported_at_its_scale_against_the_scale3_run(tmp_path: Path) -> None:
    name = "full_paper_boundary_student_scale3"
    state = {**_state(), f"run_{name}": _run("full, student scale 3", 33.2, 52.1, 44.6, name=name,
                                             student_scale="3"),
             "oracle_scale3": _run("oracle, student at scale 3", 35.0, 50.0, 46.0, name="oracle_eq4_scale3",
                                   student_scale="3")}
    text = write_report(tmp_path, state, tmp_path).read_text()
    assert "| student after: oracle, student at scale 3 | whole, scale 3 | 35.0 | 50.0 |" in text
    assert "(`oracle_eq4_scale3`; same student, scale 3, learning rate; the run beside it adds" in text
    assert f"against 38.0 → 44.6 for `{name}` on the TA's targets" in text


def test_a_run_with_another_student_shows_that_student_before_training(tmp_path: Path) -> None:
    run = _run("full, student s1.0", 33.5, 55.0, 41.0, name="full_student_s1.0",
               results={"proxy/student_before_full_student_s1.0": _scores(30.1),
                        "cvrg/student_before_full_student_s1.0": _scores(47.0)})
    text = write_report(tmp_path, {**_state(), "run_full_student_s1.0": run}, tmp_path).read_text()
    assert "| student before: full, student s1.0 | whole, scale 2 | 30.1 | 47.0 |" in text
    assert "| student after: full, student s1.0 | whole, scale 2 | 33.5 | 55.0 |" in text
    assert "student, `full_student_s1.0`) vs both bars | >= 31.6 / >= 38.2 | 33.5 | yes / no |" in text
    assert "(beside: `full_student_s1.0`) CVRG, its student after vs before (same scale) and TA as-is | " \
           ">= 47.0 and >= " in text


def test_the_larger_student_at_scale_3_stands_beside_the_headline_never_as_it(tmp_path: Path) -> None:
    name = "full_paper_boundary_student_s1.0_scale3"
    before = {f"proxy/student_before_{name}": _scores(31.0), f"cvrg/student_before_{name}": _scores(40.0)}
    run = _run("s1.0 at scale 3", 39.0, 50.0, 60.0, name=name, student_scale="3", results=before)
    state = {**_state(), f"run_{name}": run}
    text = write_report(tmp_path, state, tmp_path).read_text()
    assert f"student, `{name}`) vs both bars | >= 31.6 / >= 38.2 | 39.0 | yes / yes |" in text
    assert "| student before: s1.0 at scale 3 | whole, scale 3 | 31.0 | 40.0 |" in text
    assert f"student after ({name} run)" not in text  # the highest validation, yet not the headline


def test_oracle_targets_put_the_labels_where_known_and_keep_the_ta_elsewhere(tmp_path: Path) -> None:
    layout = sliding_windows(32, 128, 64, 32)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(layout.num_windows, 19, 32, 64, generator=generator)
    save_tensors(tmp_path / "ta" / "train_a_0000.safetensors", {"logits": logits}, metadata={"identity": "x"})
    label = np.random.default_rng(0).integers(0, 19, (32, 128)).astype(np.uint8)
    label[:, :10] = 255  # unlabelled
    save_png(tmp_path / "proxy" / "train_a" / "labels" / "train_a_0000_trainIds.png", label)
    out = write_oracle_targets(tmp_path / "ta", tmp_path / "proxy", tmp_path / "oracle", layout)
    with safe_open(str(out / "train_a_0000.safetensors"), framework="pt") as handle:
        oracle, metadata = handle.get_tensor("logits"), handle.metadata()
    assert metadata == {"identity": "x"}  # read by goodsam train as the same TA's targets
    for k in range(layout.num_windows):
        crop = torch.from_numpy(label[:, layout.window_columns(k)].astype(np.int64))
        known = crop < 19
        assert torch.equal(oracle[k].argmax(0)[known], crop[known])
        assert torch.equal(oracle[k][:, ~known], logits[k][:, ~known])


def test_finished_stages_are_recorded_and_restored_in_a_new_work_folder(tmp_path: Path, monkeypatch) -> None:
    calls: list[str] = []

    def stage_scale_sweep(self, record: list) -> dict:
        calls.append("scale_sweep")
        record.append({"command": f"goodsam eval --out {tmp_path}/outputs/eval", "seconds": 1.0, "rc": 0})
        return {"val_miou": {"1": 30.0, "3": 40.0}, "chosen": "3"}

    monkeypatch.setattr(Evidence, "stage_scale_sweep", stage_scale_sweep)
    docs = tmp_path / "docs"
    first = Evidence(tmp_path / "work_a", docs, root=tmp_path)
    first.run_stages(only=["scale_sweep"])
    records = json.loads((docs / "results" / "stages.json").read_text())
    assert calls == ["scale_sweep"] and records["scale_sweep"]["chosen"] == "3"
    assert records["scale_sweep"]["commands"][0]["seconds"] == 1.0
    # no path of the checkout that made it: another checkout's report shows the same command
    assert records["scale_sweep"]["commands"][0]["command"] == "goodsam eval --out outputs/eval"
    # A fresh checkout (new work folder, the committed records): restored, not rerun; data is never restored.
    records["data"] = {"train_panoramas": 20}
    (docs / "results" / "stages.json").write_text(json.dumps(records))
    second = Evidence(tmp_path / "work_b", docs, root=tmp_path)
    state = second.run_stages(only=["scale_sweep"])
    assert calls == ["scale_sweep"] and state["scale_sweep"] == records["scale_sweep"]
    # data's files are not here: never restored (it would run if asked); its record only lists its commands
    assert state["data"] == records["data"] and not (tmp_path / "work_b" / "stages" / "data.json").exists()
    second.run_stages(only=["scale_sweep"], redo=["scale_sweep"])  # redo: measured again
    assert calls == ["scale_sweep", "scale_sweep"]


def test_run_records_come_back_from_the_report_they_wrote(tmp_path: Path) -> None:
    state = _state()
    state["run_full"]["commands"] = [
        {"command": "goodsam train --out runs/full", "seconds": 840.0, "rc": 0},
        {"command": "goodsam eval x --out eval/proxy/student_full ", "seconds": 12.0, "rc": 0}]
    write_report(tmp_path, state, tmp_path)
    summary = json.loads((tmp_path / "results.json").read_text())
    markdown = (tmp_path / "results.md").read_text()
    full = restored_record("run_full", summary, markdown, tmp_path, "test")
    for key in ("what", "overrides", "steps", "train_seconds", "validation", "student_scale"):
        assert full[key] == state["run_full"][key]
    assert full["results"]["proxy/student_full"]["miou"] == 32.0 and full["restored"] == "test"
    assert [c["seconds"] for c in full["commands"]] == [840.0, 12.0]
    per_class = (tmp_path / "results" / "per_class_all.md").read_text()
    ta = restored_record("run_ta_adapt_scale1", summary, markdown, tmp_path, "test", per_class)
    assert ta["ta_scale"] == "1" and ta["results"]["proxy/ta_ta_adapt_scale1"]["miou"] == 25.0
    assert ta["results"]["proxy/ta_ta_adapt_scale1"]["per_class"] == {"road": 91.0, "pole": 6.0, "bus": 1.0}
    # The restored records make the same report lines.
    again = {**state, "run_full": full, "run_ta_adapt_scale1": ta}
    assert acceptance_lines(summary_json(again), again) == acceptance_lines(summary, state)


def test_the_trained_students_validation_chooses_the_corner_and_its_component_lines(tmp_path: Path) -> None:
    """Fusion x boundary form: the corner of the highest final validation mIoU is the headline; eq. 5, eq. 7
    and CTCF-over-SSA are then read at that corner (not run there: said so), the safeguarded ones beside."""
    state = {**_state(),
             "run_full_paper_fusion": _run("paper fusion", 31.0, 55.0, 39.2, name="full_paper_fusion"),
             "run_full_paper_boundary": _run("paper boundary", 30.0, 56.0, 40.1, name="full_paper_boundary"),
             "run_full_paper": _run("paper both", 30.5, 57.0, 40.5, name="full_paper"),
             "run_eq45_paper_fusion": _run("eq. 4 + 5, paper fusion", 30.0, 54.0, 39.5,
                                           name="eq45_paper_fusion")}
    data = summary_json(state)
    assert data["proxy"]["student_after_run"] == "full_paper" and data["proxy"]["student_after"] == 30.5
    assert data["proxy"]["student_after_forms"] == {"fusion": "paper CTCF", "boundary_form": "paper"}
    lines = acceptance_lines(data, state)
    assert _row(lines, "eq. 7 at the chosen corner `full_paper`")[2:] == [
        "proxy 30.5 vs 30.0, cvrg 57.0 vs 54.0, val 40.5 vs 39.5", "yes"]
    eq5 = _row(lines, "eq. 5 at the chosen corner")[2]
    assert eq5 == "proxy 30.0 vs 29.4, cvrg 54.0 vs 50.7, val 39.5 vs 38.7"
    assert _row(lines, "CTCF over SSA at the chosen corner")[-1] == "not run"  # full_paper_ssa missing
    assert _row(lines, "(beside) eq. 7 lowers no number (full vs eq45)")[2].startswith("proxy 32.0 vs 29.9")
    text = write_report(tmp_path, state, tmp_path).read_text()
    row = "| paper CTCF | `full_paper_fusion`: 39.2 (31.0 / 55.0) | `full_paper`: **40.5** (30.5 / 57.0) |"
    assert row in text
    assert "Chosen: **paper CTCF, boundary form `paper`** (`full_paper`)" in text
    # A longer schedule of the safeguarded corner that wins on validation: headline, read at its corner.
    state["run_full_long"] = _run("full, 240 steps", 29.0, 50.0, 41.0, name="full_long")
    data = summary_json(state)
    assert data["proxy"]["student_after_run"] == "full_long"
    assert data["proxy"]["student_after_forms"]["fusion"] == "safeguards"
    assert _row(acceptance_lines(data, state), "eq. 7 lowers")[2].startswith("proxy 32.0 vs 29.9")


def test_a_one_process_run_trains_in_one_process_with_both_threads(tmp_path: Path, monkeypatch) -> None:
    """The runs in ``ONE_PROCESS`` (too large for two training processes in this machine's memory) launch
    ``torchrun --nproc_per_node=1`` with two threads; the others two processes of one thread each."""
    launched: list[tuple[str, int]] = []
    masked: list[tuple[str, int]] = []
    settings: list[dict[str, str]] = []

    def fake_run(self, args: list[str], log: Path, record: list, threads: int = 1) -> float:
        out = Path(args[args.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "validation.jsonl"):
            (out / name).write_text("")
        launched.append((next(a for a in args if a.startswith("--nproc_per_node=")), threads))
        settings.append(dict(args[k + 1].split("=", 1) for k, a in enumerate(args) if a == "--set"))
        return 0.0

    monkeypatch.setattr(Evidence, "run", fake_run)
    # every run first fills its mask cache at its grid (resumable: nothing to do in a full work folder)
    monkeypatch.setattr(Evidence, "compute_masks",
                        lambda self, split, record, points=16: masked.append((split, points)))
    scored: list[list[str]] = []
    monkeypatch.setattr(Evidence, "run_evals",
                        lambda self, jobs, name, record: scored.append([job[0] for job in jobs]) or {})
    work = Evidence(tmp_path / "work", tmp_path / "docs", root=tmp_path)
    work.state = {"lr_select": {"chosen": "2e-4"}, "scale_sweep": {"chosen": "3"},
                  "student_scale": {"chosen": "2"},
                  "fusion_select": {"chosen": {"ta_confidence": 0.7, "uncertain": "ta"}}}
    big = "full_paper_boundary_student_scale3"
    assert {big, "oracle_eq4_scale3", "full_paper_boundary_student_s1.0_scale3",
            "full_paper_boundary_student_scale3_objects", "full_paper_boundary_student_scale3_objects_seed1",
            "ta_adapt", "full_paper_boundary_student_scale3_objects_soft_eq4", "eq4_scale3",
            "eq4_scale3_seed1", "full_paper_boundary_student_scale3_objects_detail",
            "full_paper_boundary_student_scale3_objects_detail_seed1"} == ONE_PROCESS
    # ta_adapt: the TA's checkpointed windows need one process; the others: the student at scale 3
    assert work.stage_run([], big)["student_scale"] == "3"
    work.stage_run([], "full")
    oracle = work.stage_oracle_scale3([])
    assert launched == [("--nproc_per_node=1", 2), ("--nproc_per_node=2", 1), ("--nproc_per_node=1", 2)]
    assert masked == [("train", 16)] * 3
    # the untrained student at a candidate scale is student_before_scales' to score, not the run's
    assert scored[0] == [f"proxy/student_{big}", f"cvrg/student_{big}"]
    assert scored[1] == ["proxy/student_full", "cvrg/student_full"]
    # the oracle at scale 3: eq. 4 only on the ground-truth targets, the student at scale 3
    assert settings[2]["student.scale"] == "3" and settings[2]["loss.eq5_student_ensemble"] == "0"
    assert settings[2]["train.target_cache"].endswith("targets_oracle") and oracle["student_scale"] == "3"
    assert oracle["what"].endswith(", student at scale 3")
    # a scale outside the candidates: the run scores its untrained student at that scale itself
    full_overrides = [f"{k}={v}" for k, v in settings[1].items()]
    work.train_and_score("odd", [*full_overrides, "student.scale=4"], "full at scale 4", "4", [])
    assert scored[-1] == ["proxy/student_odd", "cvrg/student_odd", "proxy/student_before_odd",
                          "cvrg/student_before_odd"]


def test_a_headline_at_its_own_scale_is_compared_with_its_own_untrained_student() -> None:
    """The headline run at another student scale than the chosen one: "student before" is that run's
    untrained student at its scale, and the student scale reported is the run's."""
    name = "full_paper_boundary_student_scale3"
    run = _run("full, student scale 3", 33.2, 52.1, 44.6, name=name, student_scale="3",
               results={f"proxy/student_before_{name}": _scores(26.0),
                        f"cvrg/student_before_{name}": _scores(44.0)})
    data = summary_json({**_state(), f"run_{name}": run})
    assert data["proxy"]["student_after_run"] == name
    assert (data["proxy"]["student_before"], data["cvrg"]["student_before"]) == (26.0, 44.0)
    assert data["proxy"]["student_scale"] == "3"


def test_a_headline_at_another_scale_is_compared_with_the_untrained_student_at_that_scale() -> None:
    """Without its own "before", a headline at a scale neither eval_before (1) nor student_scale (the
    chosen, 2) scored reads the ``student_before_scales`` stage at its scale, never another scale's."""
    name = "full_paper_boundary_student_scale3"
    run = _run("full, student scale 3", 33.2, 52.1, 44.6, name=name, student_scale="3")
    state = {**_state(), f"run_{name}": run}
    assert summary_json(state)["proxy"]["student_before"] is None  # not measured at scale 3: not 27.8
    state["student_before_scales"] = {"scales": ["3"],
                                      "results": {"proxy/student_before_s3": _scores(27.3),
                                                  "cvrg/student_before_s3": _scores(33.1)}}
    data = summary_json(state)
    assert (data["proxy"]["student_before"], data["cvrg"]["student_before"]) == (27.3, 33.1)
    assert _row(acceptance_lines(data, state), "CVRG: student after")[1:] == [">= 33.1 and >= 59.7", "52.1",
                                                                             "no"]


def test_the_sam_point_grids_are_compared_variant_by_variant(tmp_path: Path) -> None:
    """Section 3b sets each variant's pseudo-labels at 16x16 points (fusion_select / fusion_eval) beside
    the 32x32 ones of the ``sam_points`` stage; absent before that stage runs."""
    state = _state()
    assert "### 3b. SAM point grid" not in write_report(tmp_path, state, tmp_path).read_text()
    row = {"miou": 40.6, "miou_own": 38.0, "ta_miou_own": 37.4, "labelled": 86.9}
    state["fusion_select"]["rows"] = {"CTCF + both (0.7)": {**row, "miou": 49.0, "miou_own": 50.0}}
    state["fusion_eval"]["rows"]["CTCF + both (0.7)"]["labelled"] = 86.9
    state["sam_points"] = {"points": 32, "chosen": 32, "variant": "CTCF + both (0.7)", "rule": "val",
                           "rows": {"val": {"CTCF + both (0.7)": {**row, "miou": 49.5, "miou_own": 51.0}},
                                    "eval": {"CTCF + both (0.7)": {**row, "miou": 41.0, "labelled": 90.0}}},
                           "commands": [{"command": "goodsam.cli masks a --shard 0/2", "seconds": 300.0},
                                        {"command": "goodsam.cli masks a --shard 1/2", "seconds": 300.0},
                                        {"command": "python benchmarks/evidence.py --only sam_points",
                                         "seconds": 90.0}]}
    text = write_report(tmp_path, state, tmp_path).read_text()
    assert ("| CTCF + both (0.7) | 49.0 → 49.5 | 50.0 (37.4) → 51.0 (37.4) | 40.6 → 41.0 | 38.0 (37.4) → "
            "38.0 (37.4) | 86.9 → 90.0 % |" in text)
    assert "Chosen grid: **32x32**" in text and "5.0 min on the two cores" in text


@pytest.mark.parametrize(("at32", "chosen"), [(49.5, 32), (48.0, 16)])
def test_the_sam_point_grid_is_chosen_on_validation(tmp_path: Path, monkeypatch, at32: float,
                                                    chosen: int) -> None:
    """The ``sam_points`` stage computes 32x32 masks of the validation and evaluation panoramas, scores
    every variant on both, and keeps 32x32 only where the chosen variant scores higher on validation."""
    launched: list[list[str]] = []
    monkeypatch.setattr(Evidence, "parallel", lambda self, batch, log, record: launched.extend(batch))
    scored: list[tuple[str, Path]] = []

    def fake_score(self, split: str, scale: str, masks: Path | None = None) -> dict:
        scored.append((split, masks))
        return {"CTCF + both (0.7)": {"miou": at32 if split == "val" else 10.0}}

    monkeypatch.setattr(Evidence, "score_pseudo_labels", fake_score)
    work = Evidence(tmp_path / "work", tmp_path / "docs", root=tmp_path)
    work.state = {"scale_sweep": {"chosen": "3"},
                  "fusion_select": {"chosen": {"name": "CTCF + both (0.7)"},
                                    "rows": {"CTCF + both (0.7)": {"miou": 49.0}}}}
    result = work.stage_sam_points([])
    assert result["chosen"] == chosen
    assert all(args[args.index("--points-per-side") + 1] == "32" for args in launched) and len(launched) == 4
    assert scored == [("val", work.work / "masks_32" / "val"), ("eval", work.work / "masks_32" / "eval")]


def test_fusion_own_section_shows_the_gap_per_panorama_and_per_class(tmp_path: Path) -> None:
    variant = "CTCF + both (0.7)"

    def row(own: float, ta: float, road: tuple[float, float]) -> dict:
        per_class, ta_class = [None] * 19, [None] * 19
        per_class[0], ta_class[0] = road
        return {variant: {"miou": 40.0, "miou_own": own, "ta_miou_own": ta, "labelled": 80.0,
                          "per_class_own": per_class, "ta_per_class_own": ta_class}}

    command = {"command": "python benchmarks/evidence.py --only fusion_own (TA scale 3)", "seconds": 42.0,
               "rc": 0}
    stage = {"variant": variant, "seconds": 60.0, "commands": [command],
             "rows": {"val": {"all": row(50.0, 48.0, (90.0, 88.0)), "a_0": row(52.0, 47.5, (91.0, 88.0))},
                      "eval": {"all": row(36.1, 37.4, (85.0, 86.5))}}}
    text = write_report(tmp_path, {**_state(), "fusion_own": stage}, tmp_path).read_text()
    assert "### 3c. Where 'CTCF + both (0.7)' decides" in text
    assert "| aachen validation | **all** | 50.0 (48.0) | +2.0 | 80.0 % |" in text
    assert "| aachen validation | `a_0` | 52.0 (47.5) | +4.5 | 80.0 % |" in text
    assert "| frankfurt proxy | **all** | 36.1 (37.4) | -1.3 | 80.0 % |" in text
    assert "| road | 90.0 (88.0) | +2.0 | 85.0 (86.5) | -1.5 |" in text
    assert "| sidewalk | — (—) |" not in text  # absent in both splits: no row
    assert json.loads((tmp_path / "results.json").read_text())["fusion_own"]["variant"] == variant


def test_split_gap_section_reads_seen_against_unseen_frames(tmp_path: Path) -> None:
    stage = {"models": ["espnetv2-s2.0", "espnetv2-s0.5"], "seconds": 30.0,
             "commands": [{"command": "python -m goodsam.cli eval espnetv2-s2.0 --out x/eval/split_gap/a",
                           "seconds": 20.0, "rc": 0}, {"command": "b", "seconds": 20.0, "rc": 0}],
             "results": {"val/espnetv2-s2.0": _scores(70.0), "eval/espnetv2-s2.0": _scores(55.5),
                         "val/espnetv2-s0.5": _scores(60.0)}}
    text = write_report(tmp_path, {**_state(), "split_gap": stage}, tmp_path).read_text()
    assert "### 1c. The pretrained models on the pinhole frames" in text
    assert "| espnetv2-s2.0 | 70.0 | 55.5 | +14.5 |" in text
    assert "| espnetv2-s0.5 | 60.0 | — | — |" in text
    assert json.loads((tmp_path / "results.json").read_text())["split_gap"]["models"][0] == "espnetv2-s2.0"


def test_class_safeguard_section_and_its_acceptance_line(tmp_path: Path) -> None:
    base, variant = "CTCF + both (0.7)", "CTCF + both (0.7) + TA on pole/light/sign"

    def row(miou: float, own: float, ta: float, pole: float) -> dict:
        per_class = [None] * 19
        per_class[5], per_class[6], per_class[7] = pole, 10.0, 40.0
        return {"miou": miou, "miou_own": own, "ta_miou_own": ta, "labelled": 85.0,
                "per_class_own": per_class, "ta_per_class_own": per_class}

    stage = {"base": base, "variant": variant, "classes": [5, 6, 7], "seconds": 85.0,
             "commands": [{"command": "python benchmarks/evidence.py --only fusion_objects (TA scale 3)",
                           "seconds": 85.0, "rc": 0}],
             "rows": {"val": {base: row(49.0, 50.0, 48.0, 20.2), variant: row(49.5, 50.8, 48.0, 26.7)},
                      "eval": {base: row(40.6, 36.1, 37.4, 18.6), variant: row(41.4, 37.8, 37.4, 26.9)}}}
    text = write_report(tmp_path, {**_state(), "fusion_objects": stage}, tmp_path).read_text()
    assert "### 3d. The class safeguard: the TA keeps pole, traffic light, traffic sign" in text
    cells = "| 49.5 | 50.8 (48.0) | 41.4 | 37.8 (37.4) | 26.7 / 26.9 | 10.0 / 10.0 | 40.0 / 40.0 |"
    assert f"| {variant} {cells}" in text
    assert f"| (beside: {variant}) vs TA on the pixels it decides | > 37.4 | 37.8 | yes |" in text
    # a headline trained with the class safeguard: its fusion is the line, the chosen variant stands beside
    name = "full_paper_boundary_student_scale3_objects"
    run = _run("with the class safeguard", 33.5, 52.1, 60.0, name=name, student_scale="3")
    run["overrides"] = [*run["overrides"], "fusion.ta_classes=[5, 6, 7]"]
    state = {**_state(), "fusion_objects": stage, f"run_{name}": run}
    text = write_report(tmp_path, state, tmp_path).read_text()
    line = f"| CTCF as the headline trains on it ({variant}) vs TA on the pixels CTCF decides |"
    assert f"{line} > 37.4 | 37.8 | yes |" in text
    assert f"| (beside: {base}) vs TA on the pixels it decides | > 37.4 | 38.0 | yes |" in text
    data = json.loads((tmp_path / "results.json").read_text())["proxy"]
    assert (data["ctcf_own"], data["ctcf_own_variant"]) == (37.8, variant)


def test_the_papers_run_gets_its_own_ta_lines_and_the_ta_adaptation_component_line() -> None:
    """``paper_scale1`` (the TA adapting on its own targets) stands beside the acceptance run's TA lines,
    and against ``paper_ta_frozen_scale1`` it gives the component line of the TA's own adaptation."""
    state = _state()
    ta = {"proxy/ta_paper_scale1": _scores(13.4, road=80.0, pole=0.0, bus=0.0),
          "cvrg/ta_paper_scale1": _scores(41.2)}
    state["run_paper_scale1"] = _run("paper", 11.3, 46.8, 12.9, name="paper_scale1", ta_scale="1", results=ta)
    state["run_paper_ta_frozen_scale1"] = _run("paper, TA frozen", 23.6, 48.8, 27.9,
                                               name="paper_ta_frozen_scale1")
    lines = acceptance_lines(summary_json(state), state)
    assert _row(lines, "TA after its adaptation")[1:] == [">= 24.3", "25.0", "yes"]  # the line: ta_adapt
    assert _row(lines, "(beside: `paper_scale1`) TA after")[1:] == [">= 24.3", "13.4", "no"]
    assert _row(lines, "(beside: `paper_scale1`) no class")[2:] == ["pole 14.0 → 0.0", "no"]
    row = _row(lines, "(beside) the TA's own adaptation as the paper runs it")
    assert row[2] == "proxy 11.3 vs 23.6, cvrg 46.8 vs 48.8, val 12.9 vs 27.9" and row[3].startswith("no")
    safeguarded = _row(lines, "the TA's own adaptation (eq. 6 + 1 + 2 with the safeguards")
    assert safeguarded[2:] == ["not run", "not run"]


def test_the_safeguarded_ta_adaptation_is_the_component_line_and_the_glance_counts_the_lines(
        tmp_path: Path) -> None:
    """The TA adapting as the shipped method trains it (``ta_adapt``: safeguards, chosen scale) against the
    frozen-TA run with the same student terms (``full``) is the component line; the report opens with the
    headline numbers and the count of the issue's own lines (the ``(beside)`` rows not counted)."""
    state = _state()
    ta = {"proxy/ta_ta_adapt": _scores(40.4, road=93.0, pole=30.0), "cvrg/ta_ta_adapt": _scores(24.0)}
    state["run_ta_adapt"] = _run("TA adaptation, chosen scale", 32.5, 51.5, 39.5, name="ta_adapt",
                                 ta_scale="3", results=ta)
    lines = acceptance_lines(summary_json(state), state)
    row = _row(lines, "the TA's own adaptation (eq. 6 + 1 + 2 with the safeguards")
    assert row[2:] == ["proxy 32.5 vs 32.0, cvrg 51.5 vs 51.1, val 39.5 vs 39.0", "yes"]
    text = write_report(tmp_path, state, tmp_path).read_text()
    glance = text[text.index("## At a glance"):text.index("## 1. TA input scale")]
    assert "| TA as-is | windows, scale 3 | 40.2 | 20.5 |" in glance
    assert "| student after `full`: full | whole, scale 2 | 32.0 | 51.1 |" in glance
    assert ("| TA before → after its adaptation (`ta_adapt`) | windows, scale 3 | 40.2 → 40.4 | "
            "20.5 → 24.0 |") in glance
    # own lines: +8 yes, -2 no, TA after yes, pole falls no, CTCF yes, CVRG no, eq. 5 yes, eq. 7 no,
    # CTCF over SSA no, the safeguarded TA adaptation yes; the (beside) rows are not counted
    assert ("**5 of 10 of the issue's acceptance lines hold**; 5 do not hold: student after vs TA "
            "windows") in glance


def test_inference_modes_section_and_its_reason_in_the_glance(tmp_path: Path) -> None:
    stage = {"models": ["espnetv2-s2.0", "espnetv2-s0.5"], "scale": "3",
             "commands": [{"command": "python -m goodsam.cli eval espnetv2-s2.0 --out "
                                      "x/eval/inference_modes/a", "seconds": 40.0, "rc": 0}],
             "results": {"val/espnetv2-s2.0/whole": _scores(47.0),
                         "val/espnetv2-s2.0/windows": _scores(48.4),
                         "proxy/espnetv2-s2.0/windows": _scores(40.2),
                         "val/espnetv2-s0.5/whole": _scores(37.1),
                         "val/espnetv2-s0.5/windows": _scores(37.2)}}
    text = write_report(tmp_path, {**_state(), "inference_modes": stage}, tmp_path).read_text()
    assert "### 1d. Whole panorama against sliding windows at scale 3, before any training" in text
    assert "| espnetv2-s2.0 | 47.0 | 48.4 | — | 40.2 |" in text
    assert "| espnetv2-s0.5 | 37.1 | 37.2 | — | — |" in text
    assert "espnetv2-s0.5 37.1 / 37.2 on validation, — / — on the proxy" in text


def test_a_component_line_reads_the_mean_of_two_seeds_when_both_runs_were_repeated() -> None:
    state = _state()
    state["run_eq4_seed1"] = _run("eq. 4 only, seed 1", 29.0, 51.0, 38.5, name="eq4_seed1")
    state["run_eq45_seed1"] = _run("eq. 4 + 5, seed 1", 29.5, 52.0, 39.3, name="eq45_seed1")
    lines = acceptance_lines(summary_json(state), state)
    # eq45: (29.9 + 29.5) / 2 = 29.7, (51.6 + 52.0) / 2 = 51.8, (38.9 + 39.3) / 2 = 39.1;
    # eq4: (29.4 + 29.0) / 2 = 29.2, (50.7 + 51.0) / 2 = 50.85, (38.7 + 38.5) / 2 = 38.6
    assert _row(lines, "eq. 5 lowers no number (eq45 vs eq4), mean of seeds 0 and 1")[2:] == [
        "proxy 29.7 vs 29.2, cvrg 51.8 vs 50.9, val 39.1 vs 38.6", "yes"]
    assert _row(lines, "(beside) eq. 5 lowers no number (eq45 vs eq4), seed 0 alone")[2] == \
        "proxy 29.9 vs 29.4, cvrg 51.6 vs 50.7, val 38.9 vs 38.7"
    assert _row(lines, "eq. 7 lowers no number (full vs eq45)")[-1].startswith("no")  # full: no repeat here


def test_the_glance_reads_the_soft_eq4_run_against_the_same_run_with_hard_targets(tmp_path: Path) -> None:
    hard = "full_paper_boundary_student_scale3_objects"
    soft = f"{hard}_soft_eq4"
    state = {**_state(), f"run_{hard}": _run("headline", 33.5, 52.1, 44.9, name=hard),
             f"run_{soft}": _run("headline, soft eq. 4", 33.2, 52.3, 44.2, name=soft)}
    text = write_report(tmp_path, state, tmp_path).read_text()
    assert ("instead of its argmax: 33.2 on the proxy and 44.2 on validation, against 33.5 and 44.9 with "
            f"the paper's hard targets (`{hard}`).") in text
    assert summary_json(state)["proxy"]["student_after_run"] == hard  # validation keeps the hard targets


def test_sharpness_section_and_the_cvrg_reason_in_the_glance(tmp_path: Path) -> None:
    def scales(*values: float) -> dict:
        return dict(zip(("1", "2", "3"), values, strict=True))
    val = {"espnetv2-s2.0": {"1": {"1.00": 32.4, "1.23": 28.9}, "2": {"1.00": 44.0, "1.23": 30.0},
                             "3": {"1.00": 48.1, "1.23": 27.9}},
           "espnetv2-s0.5": {"1": {"1.00": 32.0, "1.23": 30.0}}}
    def flat(*values: float) -> dict:
        return {s: {"all": v, "inside": v, "outside": v} for s, v in scales(*values).items()}
    cvrg = {"espnetv2-s2.0": {s: {"all": v, "inside": v + 1, "outside": v - 1}
                              for s, v in scales(59.7, 25.6, 20.6).items()},
            "espnetv2-s0.5": flat(45.7, 42.8, 33.1), "student_full": flat(50.7, 55.5, 52.3)}
    stage = {"factors": ["1.00", "1.23"], "scales": ["1", "2", "3"], "rows": [127, 272], "headline": "full",
             "val": val, "cvrg": cvrg, "commands": [{"command": "x", "seconds": 300.0, "rc": 0}]}
    text = write_report(tmp_path, {**_state(), "sharpness": stage}, tmp_path).read_text()
    assert "The remedy this suggests" not in text  # its run not measured
    headline = "full_paper_boundary_student_scale3_objects"
    detail = f"{headline}_detail"
    runs = {f"run_{headline}": _run("headline", 33.5, 52.1, 44.9, name=headline),
            f"run_{detail}": _run("detail", 33.0, 56.0, 44.0, name=detail),
            "run_eq4_seed1": _run("eq. 4 only, seed 1", 29.0, 51.0, 38.5, name="eq4_seed1")}
    text = write_report(tmp_path, {**_state(), "sharpness": stage, **runs}, tmp_path).read_text()
    assert (f"`{detail}`): proxy 33.0, CVRG 56.0, validation 44.0, against proxy 33.5, CVRG 52.1, "
            "validation 44.9 without it: proxy -0.5 (beyond the seed spread 0.4), CVRG +3.9 (beyond the "
            "seed spread 0.3), validation -0.9 (beyond the seed spread 0.2)." in text)
    for name, numbers in ((headline, (34.5, 52.1, 45.1)), (detail, (34.0, 55.0, 44.2))):
        runs[f"run_{name}_seed1"] = _run("seed 1", *numbers, name=f"{name}_seed1")
    text = write_report(tmp_path, {**_state(), "sharpness": stage, **runs}, tmp_path).read_text()
    assert (f"`{detail}`, means of seeds 0 and 1): proxy 33.5, CVRG 55.5, validation 44.1, against proxy "
            "34.0, CVRG 52.1, validation 45.0 without it: proxy -0.5" in text)
    assert "A label-free lead" not in text  # the mask_purity stage not run
    purity = {"model": "espnetv2-s2.0", "scales": ["1", "2", "3"], "factor": "1.23",
              "purity": {"val": scales(63.4, 66.4, 78.2), "val_resampled": scales(60.4, 72.7, 78.0),
                         "cvrg": scales(88.5, 72.7, 69.6)},
              "commands": [{"command": "x", "seconds": 113.0, "rc": 0}]}
    state = {**_state(), "sharpness": stage, "mask_purity": purity}
    text = write_report(tmp_path, state, tmp_path).read_text()
    assert "| aachen validation | 63.4 / 32.4 | 66.4 / 44.0 | 78.2 / 48.1 |" in text
    assert ("| aachen validation with the CVRG band's detail | 60.4 / 28.9 | 72.7 / 30.0 | 78.0 / 27.9 |"
            in text)
    assert "| CVRG | 88.5 / 59.7 | 72.7 / 25.6 | 69.6 / 20.6 |" in text
    assert ("aachen validation with the CVRG band's detail 60.4 / 72.7 / 78.0 (first: scale 3; by mIoU: 2)"
            in text)
    assert "so it fails as a rule" in text
    purity["purity"].pop("val_resampled")
    text = write_report(tmp_path, state, tmp_path).read_text()
    assert "It puts first the scale the labels put first everywhere" in text
    assert "### 1e. Scale and sharpness" in text
    assert "| espnetv2-s2.0 | 3 | 48.1 | 27.9 |" in text
    assert "| espnetv2-s0.5 | 1 | 32.0 | 30.0 |" in text
    assert "inside / outside rows 127-271" in text
    assert "| espnetv2-s2.0 | 1 | 59.7 | 60.7 | 58.7 |" in text
    assert ("whole panorama at scale 1 / 2 / 3 59.7 / 25.6 / 20.6 (aachen validation: 32.4 / 44.0 / 48.1)"
            in text)
    assert "the TA at scale 3 48.1 -> 27.9, at scale 1 32.4 -> 28.9" in text
    assert "on CVRG 50.7 / 55.5 / 52.3, against the TA's 59.7 / 25.6 / 20.6" in text
    assert "it trails the TA by 14.0" in text
