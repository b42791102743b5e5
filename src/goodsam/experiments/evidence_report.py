"""``docs/results.md`` + ``docs/results.json`` from the stage results of :mod:`goodsam.experiments.evidence`.

Only formats what the stages measured; a stage that has not run shows as *not run*.
"""

from __future__ import annotations

import json
import platform
import re
import time
from pathlib import Path
from typing import NamedTuple

from goodsam.classes import CITYSCAPES_CLASSES


def _f(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def portable(tree: dict, root: Path) -> dict:
    """A JSON-able stage record or state with no path of the checkout ``root`` in it (paths made relative),
    so that records and reports are the same whichever checkout made them."""
    return json.loads(json.dumps(tree, default=str).replace(str(root) + "/", ""))


def _shown(command: str, root: Path) -> str:
    """A recorded command as a user types it: ``goodsam …``, paths relative to the checkout ``root``."""
    for prefix in ("goodsam.cli ", "-m goodsam.cli "):
        if command.startswith(prefix):
            command = "goodsam " + command[len(prefix):]
    command = command.replace(str(root) + "/", "")
    return re.sub(r"^\S*python3? -m torch\.distributed\.run", "torchrun", command)


def _command(stage: dict, needle: str, root: Path) -> tuple[str, float | None]:
    for item in stage.get("commands", []):
        if needle in item["command"]:
            return _shown(item["command"], root), item["seconds"]
    return "", None


def override_values(overrides: list[str]) -> dict[str, str]:
    """``--set`` items (``key=value``) as a mapping; the last value of a key wins, as in training."""
    return dict(item.split("=", 1) for item in overrides)


def _runs(state: dict) -> dict[str, dict]:
    return {k[4:]: v for k, v in state.items() if k.startswith("run_")}


def _oracles(state: dict) -> dict[str, dict]:
    """The diagnosis runs on ground-truth targets (run name -> stage record), those that have run."""
    return {name: state[stage] for stage, name in ORACLE_STAGES.items() if state.get(stage)}


ORACLE_STAGES = {"oracle": "oracle_eq4", "oracle_long": "oracle_eq4_long",  # stage -> its run's name
                 "oracle_scale3": "oracle_eq4_scale3"}
# oracle run -> (the run on the TA's targets it is read against, what the two share)
ORACLE_AGAINST = {
    "oracle_eq4": ("eq4", "same student, scale, learning rate"),
    "oracle_eq4_long": ("full_long", "same student, scale, learning rate"),
    "oracle_eq4_scale3": ("full_paper_boundary_student_scale3",
                          "same student, scale 3, learning rate; the run beside it adds eq. 5 and 7, which "
                          "change nothing measurable at scale 2"),
}
TA_RUN = "ta_adapt_scale1"  # the run in which the TA adapts (eq. 6 + 1 + 2)
# The TA adapting as the headline's method trains it (safeguards, chosen scale) beside the frozen-TA run with
# the same student terms (``full``): the component line of the TA's own adaptation.
SAFEGUARDED_TA_RUN = "ta_adapt"
# The paper's GoodSAM as `nano-s0.5-paper` runs it (the TA adapts on its own targets) and the same run
# without the TA's adaptation: the paper's own test of that component, at scale 1.
PAPER_RUN, PAPER_TA_FROZEN = "paper_scale1", "paper_ta_frozen_scale1"
# the runs whose adapted TA the acceptance table reads (first: the line; the others beside it)
TA_RUNS = (TA_RUN, PAPER_RUN, "ta_adapt_headline_forms_scale1", "ta_adapt")
# The runs with the next zoo student (ESPNetv2-s1.0), beside the 0.08M student and never the
# headline: the safeguarded corner at scale 2, and the headline run (chosen corner, scale 3) with it.
LARGER_STUDENT_RUNS = ("full_student_s1.0", "full_paper_boundary_student_s1.0_scale3")
# The eq. 4 + 5 + 7 runs at the four corners of fusion (chosen safeguards / paper CTCF) x boundary form
# (``disagreement`` / ``paper``): run -> (fusion, boundary form). The trained student's final aachen-
# validation mIoU chooses the corner; ``full_long`` is the ``full`` corner at four times the schedule.
FORM_SQUARE = {"full": ("safeguards", "disagreement"), "full_paper_fusion": ("paper CTCF", "disagreement"),
               "full_paper_boundary": ("safeguards", "paper"), "full_paper": ("paper CTCF", "paper")}
# a run at another schedule, student input scale or SAM grid -> the corner (losses and fusion) it belongs to
SOFT_EQ4_RUN = "full_paper_boundary_student_scale3_objects_soft_eq4"  # the headline run, eq. 4 soft targets
SOFT_EQ4_AGAINST = "full_paper_boundary_student_scale3_objects"  # the same with the paper's hard targets
# the headline run with the student's input resampled (``data.resample_max: 2``), session 16
DETAIL_RUN = "full_paper_boundary_student_scale3_objects_detail"
POINTS_RUN = "full_paper_boundary_points32"  # the corner with the paper's 32x32 SAM grid (others: 16x16)
# (or with the class safeguard, ``fusion.ta_classes``, on top of the corner's fusion)
CORNER_OF = {"full_long": "full", "full_paper_boundary_student_scale3": "full_paper_boundary",
             POINTS_RUN: "full_paper_boundary",
             "full_paper_boundary_student_scale3_objects": "full_paper_boundary",
             SOFT_EQ4_RUN: "full_paper_boundary", DETAIL_RUN: "full_paper_boundary"}
HEADLINE_RUNS = (*FORM_SQUARE, *CORNER_OF)
# The component runs at each corner: (the eq. 4 + 5 run with the corner's fusion, the corner with SSA).
COMPONENTS_AT = {"full": ("eq45", "full_ssa"),
                 "full_paper_fusion": ("eq45_paper_fusion", "full_paper_fusion_ssa"),
                 "full_paper_boundary": ("eq45", "full_paper_boundary_ssa"),
                 "full_paper": ("eq45_paper_fusion", "full_paper_ssa")}
REPEAT_SEED = 1  # the training seed of the repeated runs (every other run: the config's, 0)
HEADLINE_SEED1 = "full_paper_boundary_student_scale3_objects_seed1"
SEED_REPEATS = {"eq4_seed1": "eq4", "full_seed1": "full",  # repeat -> the run it repeats at seed 0
                HEADLINE_SEED1: "full_paper_boundary_student_scale3_objects", "eq45_seed1": "eq45",
                "full_paper_boundary_seed1": "full_paper_boundary",
                "full_paper_boundary_ssa_seed1": "full_paper_boundary_ssa", "eq4_scale3_seed1": "eq4_scale3",
                f"{DETAIL_RUN}_seed{REPEAT_SEED}": DETAIL_RUN}
REPEATED = {original: repeat for repeat, original in SEED_REPEATS.items()}  # run -> its seed-1 repeat


def headline_run(state: dict) -> str:
    """The eq. 4 + 5 + 7 run ("student after") with the highest final aachen-validation mIoU: over the
    fusion x boundary-form corners (:data:`FORM_SQUARE`) and the longer schedule (:data:`CORNER_OF`)."""
    runs = _runs(state)
    done = [name for name in HEADLINE_RUNS if runs.get(name, {}).get("validation")]
    return max(done, key=lambda name: runs[name]["validation"][-1]["student"]) if done else "full"


def headline_corner(state: dict) -> str:
    """The corner of :data:`FORM_SQUARE` the headline run belongs to (its component runs are read there)."""
    headline = headline_run(state)
    return CORNER_OF.get(headline, headline)


def student_before(state: dict, run: str, split: str) -> float | None:
    """The untrained student's mIoU on ``split`` in run ``run``'s inference mode (whole panorama, the run's
    input scale): the run's own score of it where it has one, else the stage that scored the untrained
    student at that scale (``eval_before`` at 1, ``student_scale`` at the chosen scale,
    ``student_before_scales`` at the others); None where none did (never a score at another scale)."""
    record = _runs(state).get(run, {})
    own = record.get("results", {}).get(f"{split}/student_before_{run}")
    if own:
        return own.get("miou")
    scale = record.get("student_scale") or "1"
    chosen = state.get("student_scale", {})
    if scale == "1":
        results, key = state.get("eval_before", {}), "student_before"
    elif scale == chosen.get("chosen"):
        results, key = chosen.get("results", {}), "student_before_chosen_scale"
    else:
        results, key = state.get("student_before_scales", {}).get("results", {}), f"student_before_s{scale}"
    return results.get(f"{split}/{key}", {}).get("miou")


def _fusion_rows(state: dict) -> dict[str | None, dict]:
    """Frankfurt pseudo-label rows by variant name: the chosen variant (``fusion_eval``) and, once measured,
    it with the class safeguard (``fusion_objects``); ``{}`` for a variant not scored."""
    chosen = state.get("fusion_select", {}).get("chosen", {}).get("name")
    rows = {chosen: state.get("fusion_eval", {}).get("rows", {}).get(chosen, {})}
    objects = state.get("fusion_objects")
    if objects:
        rows[objects["variant"]] = objects["rows"]["eval"].get(objects["variant"], {})
    return rows


def headline_fusion(state: dict) -> tuple[str | None, dict]:
    """The pseudo-labels the headline run trains on, scored on frankfurt: (variant name, its row). The
    chosen variant, or it with the class safeguard when the headline run sets ``fusion.ta_classes``."""
    run = _runs(state).get(headline_run(state), {})
    objects = state.get("fusion_objects")
    rows = _fusion_rows(state)
    if objects and override_values(run.get("overrides", [])).get("fusion.ta_classes") not in (None, "null"):
        return objects["variant"], rows[objects["variant"]]
    chosen = state.get("fusion_select", {}).get("chosen", {}).get("name")
    return chosen, rows[chosen]


def _ta_before_key(run: dict) -> str:
    """The ``eval_before`` TA score a TA-adapting run is compared with: its windows at the run's scale."""
    return "ta_windows_s1" if run.get("ta_scale") in ("1", None) else "ta_windows_chosen"


def summary_json(state: dict) -> dict:
    """The numbers of every table (mIoU %), including the keys issue 12 names.

    ``student_before`` is the untrained student at the input scale the trained one runs at (the same
    inference mode); ``student_before_scale1`` at the paper's scale 1. ``ta_before``/``ta_after`` are the
    TA with sliding windows at the scale it adapted at, before and after (the same inference mode)."""
    before = state.get("eval_before", {})
    runs = _runs(state)
    headline = headline_run(state)
    full = runs.get(headline, {}).get("results", {})
    chosen_scale = state.get("student_scale", {}).get("chosen")
    ta_run = runs.get(TA_RUN, {})
    fusion = state.get("fusion_eval", {}).get("rows", {})
    own_name, own_row = headline_fusion(state)
    out: dict = {"scale_sweep": state.get("scale_sweep"), "student_scale": state.get("student_scale"),
                 "fusion_select": state.get("fusion_select", {}), "lr_select": state.get("lr_select"),
                 "fusion_eval": fusion, "fusion_own": state.get("fusion_own"),
                 "split_gap": state.get("split_gap"), "fusion_objects": state.get("fusion_objects"),
                 "inference_modes": state.get("inference_modes"), "sharpness": state.get("sharpness"),
                 "runs": {}}
    ta_before_key = _ta_before_key(ta_run)
    for split in ("proxy", "cvrg"):
        def score(key: str, results: dict = before, split: str = split):
            return results.get(f"{split}/{key}", {}).get("miou")

        out[split] = {
            "ta_whole_scale1": score("ta_whole_s1"), "ta_windows_scale1": score("ta_windows_s1"),
            "ta_windows_chosen_scale": score("ta_windows_chosen"),
            "ta_before": score(ta_before_key) if ta_run else None,
            "ta_after": score(f"ta_{TA_RUN}", ta_run.get("results", {})) if ta_run else None,
            "ta_adaptation_scale": ta_run.get("ta_scale"),
            "student_before_scale1": score("student_before"),
            "student_before": student_before(state, headline, split),
            "student_after": score(f"student_{headline}", full), "student_after_run": headline,
            "student_after_forms": dict(zip(("fusion", "boundary_form"), FORM_SQUARE[headline_corner(state)],
                                            strict=True)),
            "student_scale": runs.get(headline, {}).get("student_scale") or chosen_scale,
            "ctcf_own": own_row.get("miou_own") if split == "proxy" else None,
            "ta_own": own_row.get("ta_miou_own") if split == "proxy" else None,
            "ctcf_own_variant": own_name if split == "proxy" else None,
        }
    for name, run in [*runs.items(), *_oracles(state).items()]:
        out["runs"][name] = {"what": run["what"], "overrides": run["overrides"], "steps": run["steps"],
                             "train_seconds": run["train_seconds"],
                             "proxy": run["results"].get(f"proxy/student_{name}", {}).get("miou"),
                             "cvrg": run["results"].get(f"cvrg/student_{name}", {}).get("miou"),
                             "validation": run["validation"]}
    out["seed_spread"] = seed_spread(out["runs"])
    return out


NUMBER_NAMES = {"proxy": "proxy", "cvrg": "CVRG", "val": "validation"}  # a run's numbers, as text names them


def _final_val(run: dict) -> float | None:
    return run["validation"][-1]["student"] if run.get("validation") else None


def _run_numbers(run: dict) -> dict[str, float | None]:
    """A run's student on the frankfurt proxy, CVRG and (last point) aachen validation."""
    return {"proxy": run.get("proxy"), "cvrg": run.get("cvrg"), "val": _final_val(run)}


def seed_spread(runs: dict[str, dict]) -> dict:
    """Per number (proxy, CVRG, val), the largest ``|seed 1 - seed 0|`` over the repeated runs
    (:data:`SEED_REPEATS`, entries of ``summary_json``'s ``runs``), and the pairs it was taken over."""
    pairs = [(repeat, original) for repeat, original in SEED_REPEATS.items()
             if repeat in runs and original in runs]
    spread: dict = {"pairs": [f"{repeat} vs {original}" for repeat, original in pairs]}
    for key in ("proxy", "cvrg", "val"):
        values = [(_run_numbers(runs[r])[key], _run_numbers(runs[o])[key]) for r, o in pairs]
        gaps = [abs(a - b) for a, b in values if a is not None and b is not None]
        spread[key] = max(gaps) if gaps else None
    return spread


def _against_spread(shortfalls: dict[str, float], spread: dict) -> str:
    """``within the seed spread`` when every shortfall is no larger than the spread of its number."""
    if not shortfalls:
        return ""
    if any(spread.get(key) is None for key in shortfalls):
        return " (no seed spread measured)"
    beyond = [f"{key} -{gap:.2f} > spread {spread[key]:.2f}" for key, gap in shortfalls.items()
              if gap > spread[key]]
    return f" ({'; '.join(beyond)})" if beyond else " (every shortfall within the seed spread)"


def _ge(value: float | None, bound: float | None) -> str:
    if value is None or bound is None:
        return "not run"
    return "yes" if value >= bound else "no"


class AcceptanceRow(NamedTuple):
    """One line of issue 12's acceptance table: what is compared, the bound, the measured value, whether
    it holds (``yes``, ``no`` with the reason, or ``not run``); ``beside``: a row that stands beside the
    issue's lines (another run or variant), not one of them."""

    line: str
    needed: str
    measured: str
    holds: str
    beside: bool = False


def acceptance_rows(data: dict, state: dict) -> list[AcceptanceRow]:
    """Issue 12's acceptance lines with the measured numbers (each computed here, none typed)."""
    proxy, cvrg, runs = data["proxy"], data["cvrg"], data["runs"]
    def add(value: float | None, delta: float) -> float | None:
        return None if value is None else value + delta

    after = proxy["student_after"]
    need1, need2 = add(proxy["ta_whole_scale1"], 8), add(proxy["ta_windows_chosen_scale"], -2)
    rows = [AcceptanceRow(f"student after ({proxy['student_after_run']} run) vs TA whole at scale 1 + 8",
                          f">= {_f(need1)}", _f(after), _ge(after, need1)),
            AcceptanceRow("student after vs TA windows at the chosen scale - 2", f">= {_f(need2)}", _f(after),
                          _ge(after, need2))]
    for name in LARGER_STUDENT_RUNS:  # beside the 0.08M student, not instead of it
        if name not in runs:
            continue
        value = runs[name]["proxy"]
        rows.append(AcceptanceRow(f"(beside the lines above: the larger student, `{name}`) vs both bars",
                                  f">= {_f(need1)} / >= {_f(need2)}", _f(value),
                                  f"{_ge(value, need1)} / {_ge(value, need2)}", beside=True))
    tb, ta = proxy["ta_before"], proxy["ta_after"]
    mode = f"windows, scale {proxy['ta_adaptation_scale']}" if proxy["ta_adaptation_scale"] else "—"
    rows.append(AcceptanceRow(f"TA after its adaptation vs before ({mode})", f">= {_f(tb)}", _f(ta),
                              _ge(ta, tb)))
    rows += _ta_class_rows(state)
    own, ta_own = proxy["ctcf_own"], proxy["ta_own"]
    rows.append(AcceptanceRow(f"CTCF as the headline trains on it ({proxy['ctcf_own_variant']}) vs TA on the "
                              "pixels CTCF decides", f"> {_f(ta_own)}", _f(own),
                              "not run" if own is None else ("yes" if own > ta_own else "no")))
    for name, row in _fusion_rows(state).items():
        if row and name != proxy["ctcf_own_variant"]:
            holds = "yes" if row["miou_own"] > row["ta_miou_own"] else "no"
            rows.append(AcceptanceRow(f"(beside: {name}) vs TA on the pixels it decides",
                                      f"> {_f(row['ta_miou_own'])}", _f(row["miou_own"]), holds, beside=True))
    cb, ca, cta = cvrg["student_before"], cvrg["student_after"], cvrg["ta_whole_scale1"]
    rows.append(AcceptanceRow("CVRG: student after vs student before (same scale) and TA as-is (whole, "
                              "scale 1)", f">= {_f(cb)} and >= {_f(cta)}", _f(ca),
                              _ge(ca, None if cb is None or cta is None else max(cb, cta))))
    for name in LARGER_STUDENT_RUNS:
        if name not in runs:
            continue
        cb, ca = student_before(state, name, "cvrg"), runs[name]["cvrg"]
        rows.append(AcceptanceRow(f"(beside: `{name}`) CVRG, its student after vs before (same scale) and TA "
                                  "as-is", f">= {_f(cb)} and >= {_f(cta)}", _f(ca),
                                  _ge(ca, None if cb is None or cta is None else max(cb, cta)), beside=True))
    return rows + _component_rows(data, state)


def _component_rows(data: dict, state: dict) -> list[AcceptanceRow]:
    """The line "each component the paper adds lowers no number below the run without it": per component,
    the run with it against the run without it on the frankfurt proxy, CVRG and aachen validation."""
    runs = data["runs"]
    corner = headline_corner(state)
    eq45, ssa = COMPONENTS_AT[corner]
    at = "" if corner == "full" else f" at the chosen corner `{corner}`"
    pairs = [(f"eq. 5{at}", eq45, "eq4", False), (f"eq. 7{at}", corner, eq45, False),
             (f"CTCF over SSA{at}", corner, ssa, False),
             ("the TA's own adaptation (eq. 6 + 1 + 2 with the safeguards, the TA at the chosen scale; the "
              "student's numbers: its targets come from the frozen initial TA, so the adaptation reaches "
              "the TA alone, whose numbers are in the TA rows)", SAFEGUARDED_TA_RUN, "full", False)]
    if corner != "full":  # the same components at the safeguarded corner, measured before the choice
        pairs += [("eq. 5", "eq45", "eq4", True), ("eq. 7", "full", "eq45", True),
                  ("CTCF over SSA", "full", "full_ssa", True)]
    pairs += [("eq. 5 + 7 together, as the headline trains them at the student's scale 3",
               SOFT_EQ4_AGAINST, "eq4_scale3", True),
              ("the paper's 32x32 SAM grid over 16x16 at `full_paper_boundary`", POINTS_RUN,
               "full_paper_boundary", True),
              ("the TA's own adaptation as the paper runs it (TA and student at scale 1)", PAPER_RUN,
               PAPER_TA_FROZEN, True),
              ("fusion safeguards over paper CTCF", "full", "full_paper_fusion", True),
              ("boundary safeguard over paper form", "full", "full_paper_boundary", True)]
    rows = []
    for label, with_it, without, beside in pairs:
        line = f"{'(beside) ' if beside else ''}{label} lowers no number ({with_it} vs {without})"
        a, b = runs.get(with_it), runs.get(without)
        if not (a and b):
            rows.append(AcceptanceRow(line, "—", "not run", "not run", beside))
            continue
        means = _seed_means(runs, with_it, without)
        if means:  # both repeated: the line reads the means of the two seeds, seed 0 alone beside it
            rows.append(_component_row(f"{line}, mean of seeds 0 and {REPEAT_SEED}", *means, data, beside))
            line = f"(beside) {label} lowers no number ({with_it} vs {without}), seed 0 alone"
            beside = True
        rows.append(_component_row(line, _run_numbers(a), _run_numbers(b), data, beside))
    return rows


def _mean_numbers(run: dict, repeat: dict) -> dict[str, float | None]:
    """:func:`_run_numbers` averaged over a run and its seed repeat."""
    a, b = _run_numbers(run), _run_numbers(repeat)
    return {key: None if a[key] is None or b[key] is None else (a[key] + b[key]) / 2 for key in a}


def _seed_means(runs: dict[str, dict], first: str, second: str) -> tuple[dict, dict] | None:
    """The numbers of two runs (``summary_json``'s ``runs``) as means over seeds 0 and 1 when both were
    repeated (:data:`SEED_REPEATS`), else None: how a comparison of two runs reads repeated runs."""
    if not all(name in runs and REPEATED.get(name) in runs for name in (first, second)):
        return None
    one, other = (_mean_numbers(runs[name], runs[REPEATED[name]]) for name in (first, second))
    return one, other


def _component_row(line: str, na: dict, nb: dict, data: dict, beside: bool) -> AcceptanceRow:
    """"With it lowers no number below without it", from the two runs' numbers."""
    measured = ", ".join(f"{key} {_f(na[key])} vs {_f(nb[key])}" for key in na)
    holds = all(na[key] is not None and nb[key] is not None and na[key] >= nb[key] for key in na)
    shortfalls = {key: nb[key] - na[key] for key in na
                  if na[key] is not None and nb[key] is not None and na[key] < nb[key]}
    why = "yes" if holds else "no" + _against_spread(shortfalls, data["seed_spread"])
    return AcceptanceRow(line, ">=", measured, why, beside)


def acceptance_lines(data: dict, state: dict) -> list[str]:
    """The acceptance table of :func:`acceptance_rows` as markdown."""
    lines = ["## Issue 12 acceptance, as measured (frankfurt proxy, 19 classes; CVRG, 7 categories)", "",
             "| line | needed | measured | holds |", "|---|---|---|---|"]
    lines += [f"| {row.line} | {row.needed} | {row.measured} | {row.holds} |"
              for row in acceptance_rows(data, state)]
    return lines + [""]


GLANCE_TA_RUNS = (TA_RUN, SAFEGUARDED_TA_RUN)  # the safeguarded TA adaptations: scale 1, the chosen scale


def _glance_verdicts(rows: list[AcceptanceRow]) -> str:
    """The issue's own acceptance lines (no ``beside`` row) counted: hold, fail within the seed noise,
    fail beyond it or not run, with the lines that do not hold named."""
    own = [row for row in rows if not row.beside]
    held = sum(row.holds == "yes" for row in own)
    noise = [row.line for row in own if "within the seed spread" in row.holds]
    failed = [row.line for row in own if row.holds != "yes" and row.line not in noise]
    text = f"**{held} of {len(own)} of the issue's acceptance lines hold**"
    if noise:
        text += f"; {len(noise)} fall short only by less than two seeds of one run differ"
    if failed:
        text += f"; {len(failed)} do not hold: " + "; ".join(failed)
    return text + " (table: *Issue 12 acceptance, as measured*)."


def glance_lines(data: dict, state: dict) -> list[str]:
    """The report's first section: the headline numbers side by side (same images, each model in its
    stated inference mode), the acceptance count, and the measurements that say why a line fails."""
    before, runs = state.get("eval_before", {}), _runs(state)
    proxy = data["proxy"]
    headline = proxy["student_after_run"]
    ta_scale = state.get("scale_sweep", {}).get("chosen")

    def cells(key: str, results: dict) -> str:
        return " | ".join(_f(results.get(f"{split}/{key}", {}).get("miou")) for split in ("proxy", "cvrg"))

    lines = ["## At a glance", "",
             "Frankfurt proxy: 2 panoramas made from Cityscapes *val* frames, 19 classes; CVRG: one real "
             "labelled panorama, 7 categories. Both read only: nothing below was chosen on them.", "",
             "| model | inference | proxy | CVRG |", "|---|---|---|---|",
             f"| TA as-is | whole, scale 1 | {cells('ta_whole_s1', before)} |",
             f"| TA as-is | windows, scale {ta_scale} | {cells('ta_windows_chosen', before)} |"]
    seen = set()
    eq4 = "eq4_scale3" if "eq4_scale3" in runs else "eq4"  # at the headline's scale once measured
    for name in (eq4, headline):
        run = runs.get(name)
        if not run:
            continue
        mode = f"whole, scale {run.get('student_scale') or '1'}"
        if mode not in seen:
            seen.add(mode)
            lines.append(f"| student before training | {mode} | "
                         + " | ".join(_f(student_before(state, name, split)) for split in ("proxy", "cvrg"))
                         + " |")
        lines.append(f"| student after `{name}`: {run['what']} | {mode} | "
                     f"{cells(f'student_{name}', run['results'])} |")
    for name in GLANCE_TA_RUNS:
        run = runs.get(name)
        if not run:
            continue
        key = _ta_before_key(run)
        arrows = " | ".join(f"{_f(before.get(f'{split}/{key}', {}).get('miou'))} → "
                            f"{_f(run['results'].get(f'{split}/ta_{name}', {}).get('miou'))}"
                            for split in ("proxy", "cvrg"))
        lines.append(f"| TA before → after its adaptation (`{name}`) | windows, scale "
                     f"{run.get('ta_scale')} | {arrows} |")
    lines += ["", *_glance_gain(data, eq4, headline), _glance_verdicts(acceptance_rows(data, state)), ""]
    return lines + _glance_why(data, state) + _glance_why_cvrg(data, state)


def _glance_gain(data: dict, eq4: str, headline: str) -> list[str]:
    """What the headline's student terms (eq. 5 + 7 with the safeguards) add over eq. 4 alone, at the
    same student scale, read against the seed spread."""
    runs, spread = data["runs"], data["seed_spread"]
    if eq4 not in runs or headline not in runs or eq4 == headline:
        return []
    means = _seed_means(runs, headline, eq4)  # as the component lines read repeated runs
    a, b = means or (_run_numbers(runs[headline]), _run_numbers(runs[eq4]))
    if any(a[k] is None or b[k] is None for k in a) or any(spread.get(k) is None for k in a):
        return []
    names = NUMBER_NAMES
    gains = ", ".join(f"{a[k] - b[k]:+.2f} {name} (spread {spread[k]:.2f})" for k, name in names.items())
    beyond = [names[k] for k in names if a[k] - b[k] > spread[k]]
    verdict = ("beyond the seed noise on all three" if len(beyond) == len(names) else
               f"beyond the seed noise on {', '.join(beyond)}" if beyond else "within the seed noise")
    seeds = f", mean of seeds 0 and {REPEAT_SEED}" if means else ""
    return [f"What GoodSAM's student terms add over eq. 4 alone at the same student scale (`{headline}` "
            f"against `{eq4}`{seeds}): {gains}: {verdict}.", ""]


def _glance_why(data: dict, state: dict) -> list[str]:
    """The measurements that isolate why "student >= TA windows at the chosen scale - 2" fails."""
    need = data["proxy"]["ta_windows_chosen_scale"]
    if need is None:
        return []
    need -= 2
    why = []
    oracle = _oracles(state).get("oracle_eq4_scale3")
    if oracle:
        value = oracle["results"].get("proxy/student_oracle_eq4_scale3", {}).get("miou")
        why.append(f"* The same student trained on the aachen *ground truth* instead of the TA's targets "
                   f"(`oracle_eq4_scale3`, scale 3) reaches {_f(value)} on the proxy: below the {_f(need)} "
                   "the line asks for, so better targets cannot close it.")
    runs = _runs(state)
    if SOFT_EQ4_RUN in runs and SOFT_EQ4_AGAINST in runs:
        (p_soft, v_soft), (p_hard, v_hard) = (
            (_f(runs[n]["results"].get(f"proxy/student_{n}", {}).get("miou")), _f(_final_val(runs[n])))
            for n in (SOFT_EQ4_RUN, SOFT_EQ4_AGAINST))
        why.append(f"* Distilling the TA's whole distribution per pixel (eq. 4 against its softmax, "
                   f"`{SOFT_EQ4_RUN}`) instead of its argmax: {p_soft} on the proxy and {v_soft} on "
                   f"validation, against {p_hard} and {v_hard} with the paper's hard targets "
                   f"(`{SOFT_EQ4_AGAINST}`).")
    modes = state.get("inference_modes")
    if modes:
        res = modes["results"]
        def pair(model: str, split: str) -> str:
            return " / ".join(_f(res.get(f"{split}/{model}/{mode}", {}).get("miou"))
                              for mode in ("whole", "windows"))
        why.append(f"* Whole panorama / sliding windows at scale {modes['scale']}, before training (section "
                   "1d): " + "; ".join(f"{model} {pair(model, 'val')} on validation, {pair(model, 'proxy')} "
                                       "on the proxy" for model in modes["models"])
                   + ". The TA's lead is its network, not its windows.")
    gap = state.get("split_gap")
    if gap:
        res = gap["results"]
        ta, st = (res.get(f"eval/{m}", {}).get("miou") for m in ("espnetv2-s2.0", "espnetv2-s0.5"))
        why.append(f"* On the frankfurt pinhole frames themselves, both trained on Cityscapes with labels, "
                   f"the TA (0.79M parameters) scores {_f(ta)} and the student (0.08M) {_f(st)} (section "
                   "1c): the line asks the student to come within 2 points of a network it trails by that "
                   "much with full supervision.")
    return (["Why the student stays below the TA's windows:", "", *why, ""] if why else [])


def _ta_class_rows(state: dict) -> list[AcceptanceRow]:
    """Per TA-adapting run (:data:`TA_RUNS`; the first is the acceptance line's, the others stand beside):
    no class the TA scored >= 10 IoU before falls below half; for the others also the TA after vs before.
    Before: the TA's windows at the run's scale, the same inference mode."""
    rows = []
    for k, name in enumerate(TA_RUNS):
        run = _runs(state).get(name)
        if not run:
            continue
        before = state["eval_before"].get(f"proxy/{_ta_before_key(run)}", {})
        after = run["results"].get(f"proxy/ta_{name}", {})
        beside = f"(beside: `{name}`) " if k else ""
        if k:
            b, a, scale = before.get("miou"), after.get("miou"), run.get("ta_scale")
            rows.append(AcceptanceRow(f"{beside}TA after its adaptation vs before (windows, scale {scale})",
                                      f">= {_f(b)}", _f(a), _ge(a, b), beside=True))
        was, now = before.get("per_class", {}), after.get("per_class", {})
        fallen = [f"{c} {_f(v)} → {_f(now.get(c))}" for c, v in was.items()
                  if v is not None and v >= 10 and (now.get(c) or 0.0) < v / 2]
        rows.append(AcceptanceRow(f"{beside}no class the TA scored >= 10 IoU before falls below half", "none",
                                  ", ".join(fallen) or "none", "no" if fallen else "yes", beside=bool(k)))
    return rows


def plot_curves(state: dict, path: Path) -> Path | None:
    """The validation mIoU of every training run against the TA's (scale 1 and chosen), or None."""
    runs = _runs(state)
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=110)
    for name, run in runs.items():
        points = [(v["step"], v["student"]) for v in run["validation"]]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
    ta = state.get("scale_sweep", {})
    if ta:
        ax.axhline(ta["val_miou"][ta["chosen"]], color="k", ls="--", lw=1,
                   label=f"TA windows, scale {ta['chosen']}")
        ax.axhline(ta["val_miou"]["1"], color="grey", ls=":", lw=1, label="TA windows, scale 1")
    ax.set_xlabel("step")
    ax.set_ylabel("aachen validation mIoU (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _student_scale_lines(stage: dict | None) -> list[str]:
    """Section 1b: the untrained student at several input scales (only when the stage has run)."""
    if not stage:
        return []
    lines = ["### 1b. Student input scale, before any training (chosen on aachen validation)", "",
             "| student scale | val mIoU (aachen, whole panorama) |", "|---|---|"]
    for scale, miou in stage["val_miou"].items():
        lines.append(f"| {scale}{' (chosen)' if scale == stage['chosen'] else ''} | {_f(miou)} |")
    results = stage["results"]
    proxy, cvrg = (results.get(f"{split}/student_before_chosen_scale", {}).get("miou")
                   for split in ("proxy", "cvrg"))
    lines += ["", f"Rule: {stage['rule']}. At scale {stage['chosen']} the untrained student scores "
              f"{_f(proxy)} on the frankfurt proxy and {_f(cvrg)} on the CVRG panorama "
              f"({_wall(stage['seconds'])} for the stage).", ""]
    return lines


def _seed_lines(data: dict) -> list[str]:
    """The repeated runs beside the runs they repeat, and the spread the component lines are read with."""
    runs, spread = data["runs"], data["seed_spread"]
    if not spread["pairs"]:
        return []
    lines = ["", f"Seed repeats (training seed {REPEAT_SEED} instead of 0: another panorama order and "
             "roll/flip; the same pretrained start): the noise level of a comparison between two runs.", "",
             "| run | seed 0: proxy / CVRG / val | seed 1: proxy / CVRG / val | absolute difference |",
             "|---|---|---|---|"]
    for repeat, original in SEED_REPEATS.items():
        if repeat not in runs or original not in runs:
            continue
        a, b = _run_numbers(runs[original]), _run_numbers(runs[repeat])
        gaps = [None if a[k] is None or b[k] is None else abs(a[k] - b[k]) for k in a]
        lines.append(f"| {original} | {' / '.join(_f(v) for v in a.values())} | "
                     f"{' / '.join(_f(v) for v in b.values())} | {' / '.join(_f(v) for v in gaps)} |")
    largest = " / ".join(_f(spread[k]) for k in ("proxy", "cvrg", "val"))
    lines.append(f"| **spread** (the largest) | | | {largest} |")
    return lines


def _form_square_lines(data: dict, state: dict) -> list[str]:
    """The fusion x boundary-form square of eq. 4 + 5 + 7 runs, and the corner validation chose."""
    runs = data["runs"]
    if not any(name in runs for name in FORM_SQUARE):
        return []
    corner, headline = headline_corner(state), headline_run(state)
    lines = ["", "Fusion x boundary form, chosen on the trained student (eq. 4 + 5 + 7, 60 steps; cells: "
             "aachen validation, the rule's number, then frankfurt proxy / CVRG, read only):", "",
             "| fusion | boundary form `disagreement` | boundary form `paper` |", "|---|---|---|"]
    for fusion in ("safeguards", "paper CTCF"):
        cells = []
        for boundary in ("disagreement", "paper"):
            name = next(n for n, forms in FORM_SQUARE.items() if forms == (fusion, boundary))
            if name not in runs:
                cells.append(f"`{name}`: not run")
                continue
            n = _run_numbers(runs[name])
            mark = "**" if name == corner else ""
            cells.append(f"`{name}`: {mark}{_f(n['val'])}{mark} ({_f(n['proxy'])} / {_f(n['cvrg'])})")
        lines.append(f"| {fusion} | " + " | ".join(cells) + " |")
    fusion, boundary = FORM_SQUARE[corner]
    lines += ["", f"Chosen: **{fusion}, boundary form `{boundary}`** (`{corner}`); the headline \"student "
              f"after\" is `{headline}` — rule: the eq. 4 + 5 + 7 run with the highest final "
              "aachen-validation mIoU of the trained student, over these corners and the runs of "
              "a corner at another schedule, student scale or SAM grid ("
              + ", ".join(f"`{n}`" for n in CORNER_OF) + ")."]
    return lines


def _sam_points_lines(state: dict, root: Path) -> list[str]:
    """Section 3b: every fusion variant's pseudo-labels with 16x16 SAM points (section 3) against the
    paper's 32x32 (the ``sam_points`` stage), or nothing when that stage has not run."""
    stage = state.get("sam_points")
    if not stage:
        return []
    at16 = {"val": state.get("fusion_select", {}).get("rows", {}),
            "eval": state.get("fusion_eval", {}).get("rows", {})}
    at32 = stage["rows"]
    lines = ["### 3b. SAM point grid: 16x16 against the paper's 32x32 (pseudo-labels, TA at the chosen "
             "scale)",
             "", "Cells: 16x16 → 32x32; own (TA) = the variant and the TA on the pixels the variant decides.",
             "", "| variant | val mIoU | val own (TA) | proxy mIoU | proxy own (TA) | proxy labelled |",
             "|---|---|---|---|---|---|"]

    def own(row: dict) -> str:
        return f"{_f(row.get('miou_own'))} ({_f(row.get('ta_miou_own'))})"

    for name, row in at32["val"].items():
        a, b = at16["val"].get(name, {}), at16["eval"].get(name, {})
        ev = at32["eval"].get(name, {})
        lines.append(f"| {name} | {_f(a.get('miou'))} → {_f(row['miou'])} | {own(a)} → {own(row)} | "
                     f"{_f(b.get('miou'))} → {_f(ev.get('miou'))} | {own(b)} → {own(ev)} | "
                     f"{_f(b.get('labelled'))} → {_f(ev.get('labelled'))} % |")
    masks = [item for item in stage.get("commands", []) if " masks " in item["command"]]
    mask_wall = sum(item["seconds"] for item in masks) / 2  # two shards side by side
    command, seconds = _command(stage, "--only sam_points", root)
    points = stage["points"]
    return lines + ["", f"Chosen grid: **{stage['chosen']}x{stage['chosen']}** — rule: {stage['rule']}. "
                    f"Masks at {points}x{points} for the validation and evaluation panoramas: "
                    f"{_wall(mask_wall)} on the two cores (`goodsam masks … --points-per-side {points}`); "
                    f"scoring: `{command}`, {_wall(seconds)}.", ""]


def _fusion_objects_lines(state: dict, root: Path) -> list[str]:
    """Section 3d: the chosen variant with and without the class safeguard (``fusion_objects``)."""
    stage = state.get("fusion_objects")
    if not stage:
        return []
    names = ", ".join(CITYSCAPES_CLASSES[k] for k in stage["classes"])
    lines = [f"### 3d. The class safeguard: the TA keeps {names} wherever it predicts them", "",
             "| variant | val mIoU | val own (TA) | proxy mIoU | proxy own (TA) | "
             + " | ".join(f"val / proxy {CITYSCAPES_CLASSES[k]}" for k in stage["classes"]) + " |",
             "|---|---|---|---|---|" + "---|" * len(stage["classes"])]
    for name in (stage["base"], stage["variant"]):
        val, ev = stage["rows"]["val"][name], stage["rows"]["eval"][name]
        lines.append(f"| {name} | {_f(val['miou'])} | {_f(val['miou_own'])} ({_f(val['ta_miou_own'])}) | "
                     f"{_f(ev['miou'])} | {_f(ev['miou_own'])} ({_f(ev['ta_miou_own'])}) | "
                     + " | ".join(f"{_f(val['per_class_own'][k])} / {_f(ev['per_class_own'][k])}"
                                  for k in stage["classes"]) + " |")
    command, seconds = _command(stage, "--only fusion_objects", root)
    return lines + ["", "Per-class cells: IoU on the variant's own pixels. The classes are Cityscapes' "
                    "\"object\" category (a principle: thin objects a coarse SAM mask swallows); section 3c "
                    f"showed CTCF losing pole and traffic light on validation. `{command}`, "
                    f"{_wall(seconds)}.", ""]


def _fusion_own_lines(state: dict, root: Path) -> list[str]:
    """Section 3c: the chosen variant against the TA on the pixels the variant decides, per panorama and
    per class, on aachen validation and frankfurt (the ``fusion_own`` stage), or nothing before it ran."""
    stage = state.get("fusion_own")
    if not stage:
        return []
    variant, rows = stage["variant"], stage["rows"]
    lines = [f"### 3c. Where '{variant}' decides: per panorama and per class (16x16 masks, TA at the chosen "
             "scale)", "",
             "Own = mIoU on the pixels the variant labels itself; the TA on the same pixels in brackets; "
             "gap = variant - TA. Chooses nothing (a diagnosis of the acceptance line).", "",
             "| split | panorama | own (TA) | gap | labelled |", "|---|---|---|---|---|"]
    for split, label in (("val", "aachen validation"), ("eval", "frankfurt proxy")):
        for image, by_variant in rows.get(split, {}).items():
            row = by_variant[variant]
            gap = row["miou_own"] - row["ta_miou_own"]
            name = "**all**" if image == "all" else f"`{image}`"
            lines.append(f"| {label} | {name} | {_f(row['miou_own'])} ({_f(row['ta_miou_own'])}) | "
                         f"{gap:+.1f} | {_f(row['labelled'])} % |")
    lines += ["", "| class | val own (TA) | val gap | proxy own (TA) | proxy gap |", "|---|---|---|---|---|"]
    val, ev = (rows.get(split, {}).get("all", {}).get(variant, {}) for split in ("val", "eval"))

    def cell(row: dict, k: int) -> tuple[str, str]:
        own, ta = (row.get(key, [None] * 19)[k] for key in ("per_class_own", "ta_per_class_own"))
        gap = "—" if own is None or ta is None else f"{own - ta:+.1f}"
        return f"{_f(own)} ({_f(ta)})", gap

    for k, name in enumerate(CITYSCAPES_CLASSES):
        (vo, vg), (eo, eg) = cell(val, k), cell(ev, k)
        if vg != "—" or eg != "—":
            lines.append(f"| {name} | {vo} | {vg} | {eo} | {eg} |")
    command, seconds = _command(stage, "--only fusion_own", root)
    return lines + ["", f"`{command}`: scoring {_wall(seconds)}, the stage {_wall(stage.get('seconds'))} "
                    "(with the 16x16 masks of the validation and evaluation panoramas where a work folder "
                    "lacked them).", ""]


def _split_gap_lines(state: dict, root: Path) -> list[str]:
    """Section 1c: the pretrained models on the pinhole frames of the validation (aachen, Cityscapes
    train) and evaluation (frankfurt, Cityscapes val) panoramas (the ``split_gap`` stage)."""
    stage = state.get("split_gap")
    if not stage:
        return []
    lines = ["### 1c. The pretrained models on the pinhole frames: seen (aachen) against unseen (frankfurt)",
             "", "The aachen frames are from the Cityscapes *train* split, on which every zoo model was "
             "trained with labels; the frankfurt frames are from *val*. Whole frame (2048x1024), scale 1.",
             "", "| model | aachen 81-100 (behind validation) | frankfurt (behind the proxy) | gap |",
             "|---|---|---|---|"]
    for model in stage["models"]:
        val, ev = (stage["results"].get(f"{split}/{model}", {}).get("miou") for split in ("val", "eval"))
        gap = "—" if val is None or ev is None else f"{val - ev:+.1f}"
        lines.append(f"| {model} | {_f(val)} | {_f(ev)} | {gap} |")
    seconds = sum(item["seconds"] for item in stage.get("commands", [])) / 2  # two at a time
    command, _ = _command(stage, "/split_gap/", root)
    return lines + ["", f"`{command}` and the same for each model and split: {_wall(seconds)} in all.", ""]


def _inference_modes_lines(state: dict, root: Path) -> list[str]:
    """Section 1d: the TA and the untrained student on the whole panorama against sliding windows, at the
    TA's chosen scale (the ``inference_modes`` stage)."""
    stage = state.get("inference_modes")
    if not stage:
        return []
    lines = [f"### 1d. Whole panorama against sliding windows at scale {stage['scale']}, before any training",
             "", "A diagnosis of \"student >= TA windows - 2\": whether the TA's lead over the student comes "
             "from the windows it sees or from the network. Chooses nothing.", "",
             "| model | val whole | val windows | proxy whole | proxy windows |", "|---|---|---|---|---|"]
    for model in stage["models"]:
        cells = [_f(stage["results"].get(f"{split}/{model}/{mode}", {}).get("miou"))
                 for split in ("val", "proxy") for mode in ("whole", "windows")]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    seconds = sum(item["seconds"] for item in stage.get("commands", [])) / 2  # two at a time
    command, _ = _command(stage, "/inference_modes/", root)
    return lines + ["", f"`{command}` and the same for each model, split and mode: {_wall(seconds)} in all.",
                    ""]


def _sharpness_lines(state: dict) -> list[str]:
    """Section 1e: the ``sharpness`` stage's two tables (validation made less sharp; CVRG by rows)."""
    stage = state.get("sharpness")
    if not stage:
        return []
    factors, (first, last) = stage["factors"], stage["rows"]
    parts = ("all", "inside", "outside")
    lines = ["### 1e. Scale and sharpness: why scale 3 does not carry to the CVRG panorama", "",
             "A diagnosis of the CVRG line. Chooses nothing. The proxy pastes Cityscapes frames, downscaled "
             "about four times, into the band: its pixels are sharper than those of a panorama captured "
             "at 400x2048. Here the aachen validation panoramas are resampled as if stored `f` times "
             f"smaller and upscaled (the CVRG band is its 1664-px panorama upscaled to 2048: f = "
             f"{factors[1]}); whole panorama, mIoU on aachen validation:", "",
             "| model | scale | " + " | ".join(f"f = {f}" for f in factors) + " |",
             "|---|---|" + "---|" * len(factors)]
    for model, scales in stage["val"].items():
        for scale, cells in scales.items():
            lines.append(f"| {model} | {scale} | " + " | ".join(_f(cells.get(f)) for f in factors) + " |")
    lines += ["", f"The CVRG panorama, whole, on all rows and inside / outside rows {first}-{last - 1} "
              "(where the proxy's frames have content: their vertical field of view):", "",
              "| model | scale | all rows | inside | outside |", "|---|---|---|---|---|"]
    for model, scales in stage["cvrg"].items():
        for scale, cells in scales.items():
            lines.append(f"| {model} | {scale} | " + " | ".join(_f(cells.get(p)) for p in parts) + " |")
    seconds = sum(item["seconds"] for item in stage.get("commands", []))
    return lines + ["", *_sharpness_weights(state, stage),
                    f"`python benchmarks/evidence.py --only sharpness` (in-process): {_wall(seconds)}.", "",
                    *_purity_lines(state)]


SPLIT_NAMES = {"val": "aachen validation", "val_resampled": "aachen validation with the CVRG band's detail",
               "cvrg": "CVRG"}


def _purity_miou(state: dict) -> dict[str, dict[str, float | None]]:
    """The TA's whole-panorama mIoU (section 1e) beside each split the ``mask_purity`` stage scored."""
    stage, sharp = state["mask_purity"], state["sharpness"]
    model, scales = stage["model"], stage["scales"]
    factors = {"val": sharp["factors"][0], "val_resampled": stage.get("factor")}
    miou = {split: {s: sharp["val"].get(model, {}).get(s, {}).get(factor) for s in scales}
            for split, factor in factors.items()}
    miou["cvrg"] = {s: sharp["cvrg"].get(model, {}).get(s, {}).get("all") for s in scales}
    return {split: miou[split] for split in stage["purity"]}


def _purity_lines(state: dict) -> list[str]:
    """The ``mask_purity`` stage: the TA's agreement with SAM's regions (no label read) by scale, beside
    its mIoU (section 1e's whole-panorama numbers)."""
    stage = state.get("mask_purity")
    if not stage or not state.get("sharpness"):
        return []
    model, scales, miou = stage["model"], stage["scales"], _purity_miou(state)
    lines = [f"A label-free reading of the TA's scale: the share of each SAM mask's pixels (16x16 points, "
             f"every window, masks of the images scored) that carry the mask's most frequent label in "
             f"{model}'s whole-panorama prediction, beside its mIoU. Explored after CVRG's labels had been "
             "read: a lead, not a chosen setting.", "",
             "| panorama | " + " | ".join(f"scale {s}: purity / mIoU" for s in scales) + " |",
             "|---|" + "---|" * len(scales)]
    for split, values in stage["purity"].items():
        cells = [f"{_f(values.get(s))} / {_f(miou[split][s])}" for s in scales]
        lines.append(f"| {SPLIT_NAMES.get(split, split)} | " + " | ".join(cells) + " |")
    seconds = sum(item["seconds"] for item in stage.get("commands", []))
    return lines + ["", f"`python benchmarks/evidence.py --only mask_purity` (masks included): "
                    f"{_wall(seconds)}.", ""]


def _sharpness_weights(state: dict, stage: dict) -> list[str]:
    """Which trained student section 1e scored: the work folder's weights, against the run's record (a
    run trained again on later code differs from its record by float-level differences amplified over
    training)."""
    headline = stage["headline"]
    run = _runs(state).get(headline)
    scale = (run or {}).get("student_scale") or "1"
    scored = stage["cvrg"].get(f"student_{headline}", {}).get(scale, {}).get("all")
    recorded = (run or {}).get("results", {}).get(f"cvrg/student_{headline}", {}).get("miou")
    if scored is None or recorded is None:
        return []
    same = "the same weights" if abs(scored - recorded) < 0.05 else "a copy trained again"
    return [f"`student_{headline}`: the weights in the work folder ({same}); at its scale {scale} they score "
            f"{_f(scored)} on CVRG, the run's record {_f(recorded)} (section 4; the seed table there gives "
            "the noise between two trainings).", ""]


def _glance_why_cvrg(data: dict, state: dict) -> list[str]:
    """The measurements that isolate why the CVRG line fails (the ``sharpness`` stage, section 1e)."""
    stage = state.get("sharpness")
    if not stage:
        return []
    val, cvrg, scales = stage["val"], stage["cvrg"], stage["scales"]
    ta, student = list(cvrg)[:2]
    trained = f"student_{stage['headline']}"
    sharp, blurred = stage["factors"][:2]
    low, high = scales[0], scales[-1]

    def series(cells: dict, key: str) -> str:
        return " / ".join(_f(cells[s].get(key)) for s in scales)

    def change(scale: str) -> str:
        return f"at scale {scale} {_f(val[ta][scale][sharp])} -> {_f(val[ta][scale][blurred])}"
    gap = cvrg[ta][low]["all"] - cvrg[student][low]["all"]
    return ["Why the student stays below the TA as-is on CVRG:", "",
            f"* On CVRG the TA's best scale is the proxy's reversed: whole panorama at scale "
            f"{' / '.join(scales)} {series(cvrg[ta], 'all')} (aachen validation: {series(val[ta], sharp)}). "
            f"Inside the rows the proxy has content in: {series(cvrg[ta], 'inside')}; so not the band's "
            "extra rows.",
            "* Sharpness: the aachen validation panoramas with the detail of the CVRG band (stored "
            f"{blurred} times smaller and upscaled): the TA {change(high)}, {change(low)}. The gain of "
            "upscaling that the proxy shows, and that chose the scale, rests on pixels sharper than a "
            "real panorama's.",
            "* The trained student (section 1e's weights) does not inherit the TA's collapse: at scale "
            f"{' / '.join(scales)} on CVRG {series(cvrg[trained], 'all')}, against the TA's "
            f"{series(cvrg[ta], 'all')}. Untrained, at scale {low}, it trails the TA by {_f(gap)} (section "
            "1e): about the two networks' gap on the pinhole frames with full supervision (section 1c).",
            *_detail_run_line(data, state), *_purity_glance(state), ""]


def _purity_glance(state: dict) -> list[str]:
    """Whether the TA's SAM-mask purity (no label read) puts first the scale its mIoU puts first, on each
    panorama set the ``mask_purity`` stage scored."""
    stage = state.get("mask_purity")
    if not stage or not state.get("sharpness"):
        return []
    purity, scales, miou = stage["purity"], stage["scales"], _purity_miou(state)
    parts, agree = [], []
    for split, values in purity.items():
        top = max(scales, key=lambda s: values[s])
        known = {s: v for s, v in miou[split].items() if v is not None}
        best = max(known, key=known.get) if known else None
        agree.append(top == best)
        parts.append(f"{SPLIT_NAMES.get(split, split)} {' / '.join(_f(values[s]) for s in scales)} "
                     f"(first: scale {top}; by mIoU: {best or '—'})")
    verdict = ("it puts first the scale the labels put first everywhere" if all(agree) else
               "it does not put first the scale the labels put first everywhere, so it fails as a rule")
    return [f"* A label-free lead: the TA's agreement with SAM's regions at scale {' / '.join(scales)}: "
            + "; ".join(parts) + f". {verdict.capitalize()} (section 1e); explored after CVRG's labels "
            "had been read, so not a chosen setting."]


def _detail_run_line(data: dict, state: dict) -> list[str]:
    """The headline recipe trained with the student's input resampled (:data:`DETAIL_RUN`) against the
    headline run: the remedy the sharpness diagnosis suggests, measured (means of two seeds when both
    were repeated, like a component line), its differences read against the seed spread."""
    runs, spread = data["runs"], data.get("seed_spread", {})
    if DETAIL_RUN not in runs or SOFT_EQ4_AGAINST not in runs:
        return []
    means = _seed_means(runs, DETAIL_RUN, SOFT_EQ4_AGAINST)
    new, old = means or (_run_numbers(runs[DETAIL_RUN]), _run_numbers(runs[SOFT_EQ4_AGAINST]))
    labels = NUMBER_NAMES

    def numbers(values: dict) -> str:
        return ", ".join(f"{label} {_f(values[key])}" for key, label in labels.items())
    changes = [f"{label} {new[key] - old[key]:+.1f} ("
               f"{'beyond' if abs(new[key] - old[key]) > spread[key] else 'within'} the seed spread "
               f"{spread[key]:.1f})" for key, label in labels.items()
               if new[key] is not None and old[key] is not None and spread.get(key) is not None]
    seeds = f", means of seeds 0 and {REPEAT_SEED}" if means else ""
    return ["* The remedy this suggests, by principle (`data.resample_max: 2`: the student's input given "
            f"the detail of the panorama stored up to twice smaller; `{DETAIL_RUN}`{seeds}): {numbers(new)}, "
            f"against {numbers(old)} without it" + (": " + ", ".join(changes) if changes else "") + "."]


def _per_class_table(columns: dict[str, dict]) -> list[str]:
    """Classes as rows, one column per scored model (its ``per_class`` IoU)."""
    lines = ["| class | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for cls in CITYSCAPES_CLASSES:
        lines.append(f"| {cls} | " + " | ".join(_f(c.get("per_class", {}).get(cls)) for c in columns.values())
                     + " |")
    return lines


def write_report(docs: Path, state: dict, root: Path) -> Path:
    """Write ``docs/results.md``, ``docs/results.json`` and the curves of the stage results ``state``
    (``docs/results_notes.md`` appended); commands are shown relative to the checkout ``root``, and
    no path of it goes into ``results.json`` (the same file whichever checkout writes it)."""
    state = portable(state, root)
    data = summary_json(state)
    (docs / "results.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    curve = plot_curves(state, docs / "results" / "validation_curves.png")
    before = state.get("eval_before", {})
    runs = _runs(state)
    sweep = state.get("scale_sweep", {})
    lines = ["# Results: does GoodSAM work? (nano setup, pinhole-to-ERP proxy)", "",
             f"Generated by `python benchmarks/evidence.py` on {time.strftime('%Y-%m-%d %H:%M')} "
             f"({platform.machine()}, 2 CPU cores). mIoU in %, over the classes present in the labels; "
             "unlabelled pixels ignored. Every row's command and wall time are listed; every setting "
             "says how it was chosen. **Nothing was chosen on the frankfurt panoramas or the CVRG "
             "panorama.**",
             ""]
    lines += glance_lines(data, state)
    lines += ["## 1. TA input scale (chosen on aachen validation)", "",
              "| TA scale | val mIoU (aachen, sliding windows) |", "|---|---|"]
    for scale, miou in (sweep.get("val_miou") or {}).items():
        lines.append(f"| {scale}{' (chosen)' if scale == sweep.get('chosen') else ''} | {_f(miou)} |")
    lines += ["", f"Rule: {sweep.get('rule', 'not run')}. `auto` = 19.74 px/° (Cityscapes at 1024 px) / "
              "5.69 px/° (2048 px over 360°) = 3.47.", ""]
    lines += _student_scale_lines(state.get("student_scale"))
    lines += _split_gap_lines(state, root)
    lines += _inference_modes_lines(state, root)
    lines += _sharpness_lines(state)
    lines += ["## 2. Headline (frankfurt proxy, 2 panoramas; CVRG panorama, 7 categories)", "",
              "| model | inference | proxy mIoU | CVRG mIoU | command (proxy) | wall |",
              "|---|---|---|---|---|---|"]
    student_stage = state.get("student_scale", {})
    student_chosen = student_stage.get("results", {})
    oracles = _oracles(state)
    rows = [("TA as-is", "whole, scale 1", "ta_whole_s1", before, before),
            ("TA as-is", "windows, scale 1", "ta_windows_s1", before, before),
            ("TA as-is", f"windows, scale {sweep.get('chosen')}", "ta_windows_chosen", before, before),
            ("student before", "whole, scale 1", "student_before", before, before)]
    if student_chosen:
        rows.append(("student before", f"whole, scale {student_stage['chosen']}",
                     "student_before_chosen_scale", student_chosen, student_stage))
    other_scales = state.get("student_before_scales", {})
    for scale in other_scales.get("scales", []):  # the untrained student at the other candidate scales
        rows.append(("student before", f"whole, scale {scale}", f"student_before_s{scale}",
                     other_scales["results"], other_scales))
    for name, run in runs.items():
        if f"proxy/student_before_{name}" in run["results"]:  # a run with another student: it untrained
            rows.append((f"student before: {run['what']}", f"whole, scale {run.get('student_scale', '1')}",
                         f"student_before_{name}", run["results"], run))
        rows.append((f"student after: {run['what']}", f"whole, scale {run.get('student_scale', '1')}",
                     f"student_{name}", run["results"], run))
        if run.get("ta_scale"):
            rows.append((f"TA after: {run['what']}", f"windows, scale {run['ta_scale']}", f"ta_{name}",
                         run["results"], run))
    for name, run in oracles.items():
        rows.append((f"student after: {run['what']}",
                     f"whole, scale {run.get('student_scale', student_stage.get('chosen'))}",
                     f"student_{name}", run["results"], run))
    for label, mode, key, results, stage in rows:
        command, seconds = _command(stage, f"/{key} ", root)
        lines.append(f"| {label} | {mode} | {_f(results.get(f'proxy/{key}', {}).get('miou'))} | "
                     f"{_f(results.get(f'cvrg/{key}', {}).get('miou'))} | `{command}` | {_wall(seconds)} |")
    lines += ["", "## 3. Pseudo-labels (eq. 3 and safeguards), TA at the chosen scale", "",
              "| variant | val mIoU | val own (TA) | proxy mIoU | proxy own (TA) | proxy labelled |",
              "|---|---|---|---|---|---|"]
    val_rows = state.get("fusion_select", {}).get("rows", {})
    eval_rows = state.get("fusion_eval", {}).get("rows", {})
    for name, row in val_rows.items():
        ev = eval_rows.get(name, {})
        lines.append(f"| {name} | {_f(row['miou'])} | {_f(row['miou_own'])} ({_f(row['ta_miou_own'])}) | "
                     f"{_f(ev.get('miou'))} | {_f(ev.get('miou_own'))} ({_f(ev.get('ta_miou_own'))}) | "
                     f"{_f(ev.get('labelled'))} % |")
    chosen = state.get("fusion_select", {})
    lines += ["", f"Chosen: **{chosen.get('chosen', {}).get('name', 'not run')}** — rule: "
              f"{chosen.get('rule', '')}.", ""]
    lines += _sam_points_lines(state, root)
    lines += _fusion_own_lines(state, root)
    lines += _fusion_objects_lines(state, root)
    lines += ["## 4. Training runs (student terms; targets from the frozen TA at the chosen scale)", "",
              "| run | loss terms and fusion | student scale | steps | train wall | proxy | CVRG | "
              "val (first → last) |", "|---|---|---|---|---|---|---|---|"]
    for name, run in [*runs.items(), *oracles.items()]:
        val = run["validation"]
        trend = f"{_f(val[0]['student'])} → {_f(val[-1]['student'])}" if val else "—"
        settings = override_values(run["overrides"])
        extra = ", ".join(f"{k}={v}" for k, v in settings.items()
                          if k.startswith(("loss.", "fusion.", "ta.scale")))
        scale = settings.get("student.scale", "1")
        wall = _wall(run["train_seconds"])
        lines.append(f"| {run['what']} | `{extra}` | {scale} | {run['steps']} | {wall} | "
                     f"{_f(run['results'].get(f'proxy/student_{name}', {}).get('miou'))} | "
                     f"{_f(run['results'].get(f'cvrg/student_{name}', {}).get('miou'))} | {trend} |")
    lines += _form_square_lines(data, state)
    lr = state.get("lr_select")
    if lr:
        lines += ["", "Learning rate (`lr_select`, eq. 4 only, "
                  f"student scale {lr.get('student_scale', '1')}, "
                  f"{lr['steps']} steps, aachen validation): "
                  + ", ".join(f"{k}: {_f(v['final'])}" for k, v in lr["scores"].items())
                  + f" -> **{lr['chosen']}** ({_wall(lr['seconds'])} for all runs)."]
    lines += _seed_lines(data)
    for name, (against, same) in ORACLE_AGAINST.items():
        if name in oracles and runs.get(against):
            ours, theirs = oracles[name]["validation"], runs[against]["validation"]
            lines += ["", "Diagnosis (training side): the eq. 4-only run with the aachen ground truth as "
                      f"its targets wherever labelled (`{name}`; {same}, "
                      f"{oracles[name]['steps']} steps) goes {_f(ours[0]['student'])} → "
                      f"{_f(ours[-1]['student'])} on aachen validation, against {_f(theirs[0]['student'])} → "
                      f"{_f(theirs[-1]['student'])} for `{against}` on the TA's targets "
                      f"({_wall(oracles[name]['train_seconds'])} of training)."]
    if curve:
        lines += ["", "![validation curves](results/validation_curves.png)", ""]
    columns = {"TA s1 windows": before.get("proxy/ta_windows_s1", {}),
               "TA chosen windows": before.get("proxy/ta_windows_chosen", {}),
               "student before s1": before.get("proxy/student_before", {})}
    if student_chosen:
        columns[f"student before s{student_stage['chosen']}"] = student_chosen.get(
            "proxy/student_before_chosen_scale", {})
    headline_scale = data["proxy"]["student_scale"]
    if headline_scale in other_scales.get("scales", []):  # the headline's "before", at its scale
        columns[f"student before s{headline_scale}"] = other_scales["results"].get(
            f"proxy/student_before_s{headline_scale}", {})
    for name, run in runs.items():
        columns[name] = run["results"].get(f"proxy/student_{name}", {})
        if run.get("ta_scale"):
            columns[f"TA after ({name})"] = run["results"].get(f"proxy/ta_{name}", {})
    for name, run in oracles.items():
        columns[name] = run["results"].get(f"proxy/student_{name}", {})
    every = docs / "results" / "per_class_all.md"
    every.parent.mkdir(parents=True, exist_ok=True)
    every.write_text("\n".join(["# Per-class IoU on the frankfurt proxy, every model and run", "",
                                 *_per_class_table(columns)]) + "\n")
    shown_columns = [f"student before s{headline_scale}", "eq4", "eq4_scale3",
                     data["proxy"]["student_after_run"], f"TA after ({SAFEGUARDED_TA_RUN})",
                     "oracle_eq4_scale3"]
    key = {name: columns[name] for name in ["TA s1 windows", "TA chosen windows", *shown_columns]
           if name in columns}
    lines += ["## 5. Per-class IoU (frankfurt proxy)", "",
              f"The headline models; every model and run: [results/{every.name}](results/{every.name}).", "",
              *_per_class_table(key)]
    files = state.get("overlays", {}).get("files", [])
    shown = state.get("overlays", {}).get("student_run", "full")  # records before session 9: the full run
    if files:
        lines += ["", "## 6. Overlays", "",
                  "Rows: input (and ground truth for CVRG), TA with windows at scale 1 and at the chosen "
                  f"scale, student before and after training (`{shown}`; whole panorama, at the student's "
                  "input scale).", ""]
        for item in files:
            name = Path(item["path"]).name
            lines += [f"![{name}](results/{name})", f"*{name}: {item['bytes'] // 1000} KB*", ""]
    lines += ["", *acceptance_lines(data, state)]
    lines += ["## 7. Commands", ""]
    for stage, result in state.items():
        for item in result.get("commands", []) if isinstance(result, dict) else []:
            lines.append(f"* [{stage}] `{_shown(item['command'], root)}` — {_wall(item['seconds'])}")
    notes = docs / "results_notes.md"
    if notes.is_file():
        lines += ["", notes.read_text().rstrip()]
    path = docs / "results.md"
    path.write_text("\n".join(lines) + "\n")
    return path
