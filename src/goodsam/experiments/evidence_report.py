"""``docs/results.md`` + ``docs/results.json`` from the stage results of :mod:`goodsam.experiments.evidence`.

Only formats what the stages measured; a stage that has not run shows as *not run*.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from goodsam.classes import CITYSCAPES_CLASSES


def _f(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _shown(command: str, root: Path) -> str:
    """A recorded command as a user types it: ``goodsam …``, paths relative to the checkout ``root``."""
    for prefix in ("goodsam.cli ", "-m goodsam.cli "):
        if command.startswith(prefix):
            command = "goodsam " + command[len(prefix):]
    command = command.replace(f"{sys.executable} -m torch.distributed.run", "torchrun")
    return command.replace(str(root) + "/", "")


def _command(stage: dict, needle: str, root: Path) -> tuple[str, float | None]:
    for item in stage.get("commands", []):
        if needle in item["command"]:
            return _shown(item["command"], root), item["seconds"]
    return "", None


def _runs(state: dict) -> dict[str, dict]:
    return {k[4:]: v for k, v in state.items() if k.startswith("run_")}


def summary_json(state: dict) -> dict:
    """The numbers of every table (mIoU %), including the keys issue 12 names."""
    before = state.get("eval_before", {})
    runs = _runs(state)
    full = runs.get("full", {}).get("results", {})
    fusion = state.get("fusion_eval", {}).get("rows", {})
    chosen = state.get("fusion_select", {}).get("chosen", {}).get("name", "CTCF (paper)")
    out: dict = {"scale_sweep": state.get("scale_sweep"), "student_scale": state.get("student_scale"),
                 "fusion_select": state.get("fusion_select", {}),
                 "fusion_eval": fusion, "runs": {}}
    for split in ("proxy", "cvrg"):
        def score(key: str, results: dict = before, split: str = split):
            return results.get(f"{split}/{key}", {}).get("miou")

        out[split] = {
            "ta_whole_scale1": score("ta_whole_s1"), "ta_windows_scale1": score("ta_windows_s1"),
            "ta_windows_chosen_scale": score("ta_windows_chosen"), "ta_before": score("ta_windows_chosen"),
            "ta_after": None,  # the TA's adaptation at the chosen scale was not run (see the report)
            "student_before": score("student_before"), "student_after": score("student_full", full),
            "ctcf_own": fusion.get(chosen, {}).get("miou_own") if split == "proxy" else None,
            "ta_own": fusion.get(chosen, {}).get("ta_miou_own") if split == "proxy" else None,
        }
    for name, run in runs.items():
        out["runs"][name] = {"what": run["what"], "overrides": run["overrides"], "steps": run["steps"],
                             "train_seconds": run["train_seconds"],
                             "proxy": run["results"].get(f"proxy/student_{name}", {}).get("miou"),
                             "cvrg": run["results"].get(f"cvrg/student_{name}", {}).get("miou"),
                             "validation": run["validation"]}
    return out


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


def write_report(docs: Path, state: dict, root: Path) -> Path:
    """Write ``docs/results.md``, ``docs/results.json`` and the curves of the stage results ``state``
    (``docs/results_notes.md`` appended); commands are shown relative to the checkout ``root``."""
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
    lines += ["## 1. TA input scale (chosen on aachen validation)", "",
              "| TA scale | val mIoU (aachen, sliding windows) |", "|---|---|"]
    for scale, miou in (sweep.get("val_miou") or {}).items():
        lines.append(f"| {scale}{' (chosen)' if scale == sweep.get('chosen') else ''} | {_f(miou)} |")
    lines += ["", f"Rule: {sweep.get('rule', 'not run')}. `auto` = 19.74 px/° (Cityscapes at 1024 px) / "
              "5.69 px/° (2048 px over 360°) = 3.47.", ""]
    lines += _student_scale_lines(state.get("student_scale"))
    lines += ["## 2. Headline (frankfurt proxy, 2 panoramas; CVRG panorama, 7 categories)", "",
              "| model | inference | proxy mIoU | CVRG mIoU | command (proxy) | wall |",
              "|---|---|---|---|---|---|"]
    rows = [("TA as-is", "whole, scale 1", "ta_whole_s1", before),
            ("TA as-is", "windows, scale 1", "ta_windows_s1", before),
            ("TA as-is", f"windows, scale {sweep.get('chosen')}", "ta_windows_chosen", before),
            ("student before", "whole", "student_before", before)]
    for name, run in runs.items():
        rows.append((f"student after: {run['what']}", "whole", f"student_{name}", run["results"]))
    for label, mode, key, results in rows:
        stage = before if results is before else next(r for r in runs.values() if r["results"] is results)
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
    lines += ["## 4. Training runs (student terms; targets from the frozen TA at the chosen scale)", "",
              "| run | loss terms and fusion | steps | train wall | proxy | CVRG | val (first → last) |",
              "|---|---|---|---|---|---|---|"]
    for name, run in runs.items():
        val = run["validation"]
        trend = f"{_f(val[0]['student'])} → {_f(val[-1]['student'])}" if val else "—"
        settings = dict(o.split("=", 1) for o in run["overrides"])  # the last value of a key wins
        extra = ", ".join(f"{k}={v}" for k, v in settings.items() if k.startswith(("loss.eq", "fusion.")))
        lines.append(f"| {run['what']} | `{extra}` | {run['steps']} | {_wall(run['train_seconds'])} | "
                     f"{_f(run['results'].get(f'proxy/student_{name}', {}).get('miou'))} | "
                     f"{_f(run['results'].get(f'cvrg/student_{name}', {}).get('miou'))} | {trend} |")
    lr = state.get("lr_select")
    if lr:
        lines += ["", f"Learning rate (`lr_select`, eq. 4 only, {lr['steps']} steps, aachen validation): "
                  + ", ".join(f"{k}: {_f(v['final'])}" for k, v in lr["scores"].items())
                  + f" -> **{lr['chosen']}** ({_wall(lr['seconds'])} for both runs)."]
    diag = state.get("diagnosis")
    if diag:
        lines += ["", "Diagnosis (aachen validation): the student before training scores "
                  f"{_f(diag['student_val_whole_s3']['miou'])} on whole panoramas at input scale 3, against "
                  f"{_f(runs.get('full', {}).get('validation', [{}])[0].get('student'))} at scale 1 "
                  f"(command: `{diag['commands'][0]['command']}`, {_wall(diag['seconds'])})."]
    if curve:
        lines += ["", "![validation curves](results/validation_curves.png)", ""]
    lines += ["## 5. Per-class IoU (frankfurt proxy)", "", "| class | " + " | ".join(
        k for k in ("TA s1 windows", "TA chosen windows", "student before", *runs)) + " |",
              "|---|" + "---|" * (3 + len(runs))]
    sources = [before.get("proxy/ta_windows_s1", {}), before.get("proxy/ta_windows_chosen", {}),
               before.get("proxy/student_before", {})]
    sources += [run["results"].get(f"proxy/student_{name}", {}) for name, run in runs.items()]
    for cls in CITYSCAPES_CLASSES:
        lines.append(f"| {cls} | " + " | ".join(_f(s.get("per_class", {}).get(cls)) for s in sources) + " |")
    files = state.get("overlays", {}).get("files", [])
    if files:
        lines += ["", "## 6. Overlays", "",
                  "Rows: input (and ground truth for CVRG), TA with windows at scale 1 and at the chosen "
                  "scale, student before and after the full run (whole panorama).", ""]
        for item in files:
            name = Path(item["path"]).name
            lines += [f"![{name}](results/{name})", f"*{name}: {item['bytes'] // 1000} KB*", ""]
    lines += ["", "## 7. Commands", ""]
    for stage, result in state.items():
        for item in result.get("commands", []) if isinstance(result, dict) else []:
            lines.append(f"* [{stage}] `{_shown(item['command'], root)}` — {_wall(item['seconds'])}")
    notes = docs / "results_notes.md"
    if notes.is_file():
        lines += ["", notes.read_text().rstrip()]
    path = docs / "results.md"
    path.write_text("\n".join(lines) + "\n")
    return path
