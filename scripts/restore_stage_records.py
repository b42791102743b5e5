"""Rebuild evidence stage records from a generated report whose work folder is gone.

``python scripts/restore_stage_records.py [--docs docs] [--from-commit REV] STAGE ...`` reads
``docs/results.json`` and ``docs/results.md`` as committed at ``REV`` (default: the last commit that
changed the report) and adds a record for each named training-run stage (``run_<name>``, ``oracle``)
and ``overlays`` to ``docs/results/stages.json``: ``benchmarks/evidence.py`` restores them in a fresh
checkout and the report shows them beside newly measured stages. What a report does not hold cannot
come back: values are the report's (rounded to 0.1), CVRG per-class IoU and pixel accuracy are absent,
and every record says ``restored`` with its source. Stages already in ``stages.json`` are left alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from goodsam.experiments.evidence import STAGES, read_records, write_records
from goodsam.experiments.evidence_restore import restored_record


def git_show(rev: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{rev}:{path}"], check=True, capture_output=True, text=True).stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="+", help="run_<name>, oracle or overlays")
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    parser.add_argument("--from-commit", default=None, help="default: the last commit that wrote results.md")
    args = parser.parse_args(argv)
    last = ["git", "log", "-1", "--format=%h", "--", f"{args.docs}/results.md"]
    rev = args.from_commit or subprocess.run(last, check=True, capture_output=True, text=True).stdout.strip()
    summary = json.loads(git_show(rev, f"{args.docs}/results.json"))
    markdown = git_show(rev, f"{args.docs}/results.md")
    try:  # every run's per-class IoU (since session 15; before, section 5 of the report held them)
        per_class = git_show(rev, f"{args.docs}/results/per_class_all.md")
    except subprocess.CalledProcessError:
        per_class = None
    source = f"{args.docs}/results.md + results.json at {rev} (values as reported, to 0.1)"
    records = read_records(args.docs)
    for stage in args.stages:
        if stage not in STAGES:
            raise SystemExit(f"restore: unknown stage {stage!r}")
        if stage in records:
            print(f"{stage}: already recorded, left alone")
            continue
        records[stage] = restored_record(stage, summary, markdown, args.docs, source, per_class)
        print(f"{stage}: restored ({len(records[stage]['commands'])} commands)")
    write_records(args.docs, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
