"""Stage records rebuilt from a generated evidence report (``docs/results.md`` + ``results.json``) whose
work folder is gone, so that a fresh checkout restores them (``docs/results/stages.json``) and the report
shows them beside newly measured stages. What a report does not hold cannot come back: values are the
report's (rounded to 0.1), CVRG per-class IoU and pixel accuracy are absent, and every record says
``restored`` with its source. Used by ``scripts/restore_stage_records.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

from goodsam.classes import CITYSCAPES_CLASSES
from goodsam.experiments.evidence_report import TA_RUN

RUN_OF_STAGE = {"oracle": "oracle_eq4"}  # stage -> its run's name (others: run_<name> -> <name>)


def section(markdown: str, title: str) -> list[str]:
    """The lines of the ``## <title>...`` section."""
    lines = markdown.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith(f"## {title}"))
    end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
    return lines[start:end]


def per_class_columns(markdown: str) -> dict[str, dict[str, float]]:
    """The per-class table, column name -> {class: IoU} (the classes shown as a number): of
    ``results/per_class_all.md`` (every run, since session 15), or of a report's section 5 (before that
    every run was there; now the headline models only)."""
    lines = section(markdown, "5. Per-class") if "\n## 5. Per-class" in markdown else markdown.splitlines()
    rows = [line for line in lines if line.startswith("| ")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    columns: dict[str, dict[str, float]] = {name: {} for name in header[1:]}
    for row in rows[1:]:  # the |---| line is not among them
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if cells[0] not in CITYSCAPES_CLASSES:
            continue
        for name, cell in zip(header[1:], cells[1:], strict=True):
            if cell not in ("—", ""):
                columns[name][cells[0]] = float(cell)
    return columns


def commands(markdown: str) -> dict[str, list[dict]]:
    """Section 7: stage -> [{command, seconds, rc}] (seconds as the report rounded them)."""
    out: dict[str, list[dict]] = {}
    for line in section(markdown, "7. Commands"):
        match = re.match(r"^\* \[(\w[\w.]*)\] `(.*)` — ([\d.]+) (s|min)$", line)
        if match:
            seconds = float(match.group(3)) * (60 if match.group(4) == "min" else 1)
            item = {"command": match.group(2), "seconds": seconds, "rc": 0}
            out.setdefault(match.group(1), []).append(item)
    return out


def run_record(stage: str, summary: dict, columns: dict, cmds: dict, source: str) -> dict:
    name = RUN_OF_STAGE.get(stage, stage.removeprefix("run_"))
    run = summary["runs"][name]
    settings = dict(item.split("=", 1) for item in run["overrides"])
    results = {f"proxy/student_{name}": {"miou": run["proxy"], "pixel_accuracy": None,
                                         "per_class": columns.get(name, {})},
               f"cvrg/student_{name}": {"miou": run["cvrg"], "pixel_accuracy": None, "per_class": {}}}
    ta_scale = None
    if name == TA_RUN:  # the run whose TA adapted: the report holds its TA's scores after
        ta_scale = summary["proxy"]["ta_adaptation_scale"]
        for split in ("proxy", "cvrg"):
            results[f"{split}/ta_{name}"] = {"miou": summary[split]["ta_after"], "pixel_accuracy": None,
                                             "per_class": columns.get(f"TA after ({name})", {})
                                             if split == "proxy" else {}}
    return {"what": run["what"], "overrides": run["overrides"], "train_seconds": run["train_seconds"],
            "steps": run["steps"], "student_scale": settings.get("student.scale", "1"), "ta_scale": ta_scale,
            "results": results, "validation": run["validation"], "loss_first": None, "loss_last": None,
            "commands": cmds.get(stage, []), "seconds": sum(c["seconds"] for c in cmds.get(stage, [])),
            "restored": source}


def overlays_record(markdown: str, docs: Path, cmds: dict, source: str) -> dict:
    names = re.findall(r"^!\[([^\]]+\.png)\]\(results/", "\n".join(section(markdown, "6. Overlays")), re.M)
    paths = [docs / "results" / name for name in names]
    files = [{"path": str(path), "bytes": path.stat().st_size} for path in paths]
    return {"files": files, "commands": cmds.get("overlays", []), "restored": source}


def restored_record(stage: str, summary: dict, markdown: str, docs: Path, source: str,
                    per_class: str | None = None) -> dict:
    """The record of ``stage`` (``run_<name>``, ``oracle`` or ``overlays``) as the report shows it;
    ``per_class``: the text of the report's ``results/per_class_all.md`` where it has one."""
    cmds = commands(markdown)
    if stage == "overlays":
        return overlays_record(markdown, docs, cmds, source)
    return run_record(stage, summary, per_class_columns(per_class or markdown), cmds, source)
