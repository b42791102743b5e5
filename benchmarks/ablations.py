"""Ablations of nano GoodSAM on a labelled pinhole-to-ERP proxy (the paper-faithful runs of session 2) ->
``WORK/docs/results.md``. The project's ``docs/results.md`` is written by ``benchmarks/evidence.py``.

Setup: MobileSAM masks, ESPNetv2-s2.0 teacher assistant (TA), ESPNetv2-s0.5 (or s1.0) student, all with
real weights. Training panoramas are projected from the 100 aachen frames of Cityscapes train, evaluation
panoramas from the 10 frankfurt frames of Cityscapes val (never trained on); both 400x2048 ERP bands
(``goodsam data pinhole-to-erp``: 8 frames round the horizon per training panorama, 5 per evaluation
one). Unlabelled (uncovered) pixels are ignored by every score.

Stages, in order (each writes ``<work>/stages/<stage>.json`` and is skipped when it exists; inside a
stage, finished pieces — cached masks, eval results, training checkpoints — are reused too):

1. ``data``             proxy panoramas, the labelled real panorama cut to the band, real panoramas;
2. ``masks``            MobileSAM masks of every window and overlap (``goodsam masks``, cached);
3. ``eval_pretrained``  TA whole-panorama vs sliding-window inference, the student before training,
                        category mIoU of both on ``labelled_panorama/cvrg_pano_0000`` (``goodsam eval``);
4. ``fusion_pretrained`` TA alone vs SSA vs SEPL vs CTCF pseudo-labels on the evaluation panoramas;
5. ``train_eq4``, ``train_eq45``, ``train_full``  ``goodsam train`` with the student terms eq. 4 only,
                        eq. 4 + 5, eq. 4 + 5 + 7 (TA terms on in all three, same seed and steps);
6. ``eval_trained``     the three students and the trained TA, on the proxy and the labelled panorama;
7. ``fusion_trained``   the fusion comparison again with the trained TA;
8. ``overlays``         small PNG overlays (real panoramas, labelled panorama, one proxy panorama);
9. ``report``           ``docs/results.md`` (always regenerated from the stage files).

    python benchmarks/ablations.py                  # full run (prints the plan and an ETA first)
    python benchmarks/ablations.py --plan           # only the plan
    python benchmarks/ablations.py --quick          # every stage at tiny scale; report in the work dir
    python benchmarks/ablations.py --only report    # regenerate docs/results.md from finished stages
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ablation_common import (
    REPO,
    Settings,
    display,
    quick_settings,
    read_json,
    run_goodsam,
    train_overrides,
    write_json,
)

STUDENT_VARIANTS = {
    "eq4": ["loss.eq5_student_ensemble=0", "loss.eq7_student_boundary=0"],
    "eq45": ["loss.eq7_student_boundary=0"],
    "full": [],
    # beyond the paper: the same full run with the black fill around the projected frames ignored by
    # every loss (``data.void_rgb``), to test the diagnosis that the fill's SAM masks hurt
    "full_void": ["data.void_rgb=[0,0,0]"],
}
# Settings whose change invalidates finished stages (the rest — threads, docs — may change on resume).
SEMANTIC = ("student", "ta", "steps", "points_per_side", "train_frames", "eval_frames", "frames_per_pano",
            "eval_frames_per_pano", "yaw_jitter", "height", "width", "window", "stride", "real_panoramas",
            "seed", "extra_overrides")
# Wall-time model on a dedicated 2-core CPU (seconds). Measured as CPU time with this code base and divided
# by ~1.7 (two threads): MobileSAM ~4 s + ~0.125 s per point prompt per window (fast generator); one
# training step at 400x2048 ~53 s (TA forward + backward on 7 windows, student on the panorama, fusion,
# DAR), ~16 s as a 2-process DDP job of single-threaded processes (the default: DDP averages the same
# global batch, so the result equals one process); a sub-process ~10 s to start (~30 s for `goodsam train`).
COST = {"startup": 10.0, "convert": 3.0, "sam_base": 2.5, "sam_per_prompt": 0.075, "sam_load": 6.0,
        "step": 30.0, "step_ddp": 16.0, "image": 2.0, "fusion": 6.0, "overlay": 10.0}
FULL_PIXELS = 400 * 2048


@dataclass(frozen=True)
class Stage:
    """One resumable stage: ``run(settings, log)`` returns the summary stored in its JSON file."""

    name: str
    what: str
    estimate_s: float
    run: Callable[[Settings, Path], dict]


# ------------------------------------------------------------------------------------- the plan
def panorama_counts(settings: Settings) -> tuple[int, int]:
    """(training, evaluation) panoramas the data stage makes."""
    return (math.ceil(settings.train_frames / settings.frames_per_pano),
            math.ceil(settings.eval_frames / settings.eval_frames_per_pano))


def sam_calls_per_panorama(settings: Settings) -> int:
    """SAM runs per panorama: every window and every overlap."""
    from goodsam.panorama.windows import sliding_windows

    layout = sliding_windows(settings.height, settings.width, settings.window, settings.stride, False)
    return layout.num_windows + layout.num_overlaps


def estimates(settings: Settings) -> dict[str, float]:
    """Estimated wall seconds of every stage (dedicated 2-core CPU)."""
    scale = settings.height * settings.width / FULL_PIXELS
    train, evals = panorama_counts(settings)
    sam = COST["sam_base"] + COST["sam_per_prompt"] * settings.points_per_side ** 2
    eval_images = evals * scale
    real = settings.real_panoramas
    out = {
        "data": 2 * COST["startup"] + (train + evals) * COST["convert"] * scale + 5,
        "masks": 2 * (COST["startup"] + COST["sam_load"]) + (train + evals) * sam_calls_per_panorama(settings)
        * sam,
        "eval_pretrained": 8 * COST["startup"] + COST["image"] * (8 * eval_images + 4 * scale
                                                                  + settings.eval_frames * 0.64),
        "fusion_pretrained": 5 + evals * COST["fusion"] * scale,
    }
    for variant in STUDENT_VARIANTS:
        step = COST["step"] if settings.workers == 1 else COST["step_ddp"] * 2 / settings.workers
        out[f"train_{variant}"] = 3 * COST["startup"] + settings.steps * step * scale
    out["eval_trained"] = 7 * COST["startup"] + COST["image"] * (7 * eval_images + 3 * scale)
    out["fusion_trained"] = out["fusion_pretrained"]
    out["overlays"] = 10 + (real + 2) * COST["overlay"] * scale
    out["report"] = 1.0
    return out


def is_done(stage: Stage, settings: Settings) -> bool:
    """Finished stages have their JSON file; the report is always regenerated."""
    return stage.name != "report" and (settings.work / "stages" / f"{stage.name}.json").is_file()


def pending(stages: list[Stage], settings: Settings, only: set[str] | None) -> list[Stage]:
    """The stages this invocation runs."""
    return [s for s in stages if (not only or s.name in only) and not is_done(s, settings)]


def print_plan(stages: list[Stage], settings: Settings, todo: list[Stage]) -> float:
    """Print the plan (what each stage does, estimated minutes) and the ETA; returns the total seconds."""
    train, evals = panorama_counts(settings)
    mode = "quick" if settings.quick else "full"
    print(f"GoodSAM ablations ({mode}): {train} training + {evals} evaluation "
          f"panoramas of {settings.height}x{settings.width}, windows {settings.window}/{settings.stride} "
          f"({sam_calls_per_panorama(settings)} SAM runs each, points_per_side {settings.points_per_side}), "
          f"{settings.steps} steps per training run, student {settings.student}, TA {settings.ta}, "
          f"{settings.threads} threads, training as {settings.workers} process(es).\n"
          f"Work dir {settings.work}; report {settings.docs / 'results.md'}.")
    for stage in stages:
        state = f"~{stage.estimate_s / 60:5.1f} min" if stage in todo else (
            "     done" if is_done(stage, settings) else "  skipped")
        print(f"  {stage.name:<18} {state}  {stage.what}")
    total = sum(stage.estimate_s for stage in todo)
    finish = datetime.now() + timedelta(seconds=total)
    print(f"  total ~{total / 60:.0f} min on a dedicated 2-core CPU -> ETA {finish:%H:%M} "
          "(slower on a shared CPU; re-estimated after every stage)", flush=True)
    return total


# ----------------------------------------------------------------------------------- the stages
def stage_data(settings: Settings, log: Path) -> dict:
    from ablation_data import run_data

    return run_data(settings, log)


def amg_args(settings: Settings) -> list[str]:
    """The AMG options of the config's SAM settings, with this run's points_per_side."""
    from goodsam.train.config import load_config

    sam = load_config(settings.config, train_overrides(settings)).sam.settings
    options = []
    for key, value in sam.items():
        options += [f"--{key.replace('_', '-')}", str(value)]
    return options


def stage_masks(settings: Settings, log: Path) -> dict:
    summary: dict = {"commands": [], "seconds": {}}
    for split in ("train", "eval"):
        args = ["masks", str(settings.work / "proxy" / split / "images"), "--out",
                str(settings.work / "masks" / split), *amg_args(settings), "--window", str(settings.window),
                "--stride", str(settings.stride)]
        summary["seconds"][split] = run_goodsam(args, settings.threads, log)
        summary["commands"].append(display(["goodsam", *args]))
    summary["sam_calls"] = sum(panorama_counts(settings)) * sam_calls_per_panorama(settings)
    return summary


def pretrained_jobs(settings: Settings) -> list:
    from ablation_eval import EvalJob

    ta, student = settings.ta, settings.student
    return [EvalJob("ta_pinhole", ta, "pinhole"), EvalJob("ta_whole", ta, "proxy"),
            EvalJob("ta_sliding", ta, "proxy", window=True), EvalJob("ta_whole_x2", ta, "proxy", scale=2),
            EvalJob("student_before", student, "proxy"),
            EvalJob("cat_ta_sliding", ta, "labelled", window=True), EvalJob("cat_ta_whole", ta, "labelled"),
            EvalJob("cat_student_before", student, "labelled")]


def trained_jobs(settings: Settings) -> list:
    from ablation_eval import EvalJob

    runs = settings.work / "runs"
    jobs = [EvalJob(f"student_{v}", str(runs / v / "student"), "proxy") for v in STUDENT_VARIANTS]
    ta = str(runs / "full" / "ta")
    return [*jobs, EvalJob("ta_trained_sliding", ta, "proxy", window=True),
            EvalJob("ta_trained_whole", ta, "proxy"),
            EvalJob("cat_student_after", str(runs / "full" / "student"), "labelled"),
            EvalJob("cat_ta_trained_sliding", ta, "labelled", window=True),
            EvalJob("ta_trained_void_sliding", str(runs / "full_void" / "ta"), "proxy", window=True),
            EvalJob("cat_student_after_void", str(runs / "full_void" / "student"), "labelled"),
            EvalJob("cat_ta_trained_void_sliding", str(runs / "full_void" / "ta"), "labelled", window=True)]


def run_jobs(jobs: list, settings: Settings, log: Path) -> dict:
    from ablation_eval import run_eval

    results = {}
    for job in jobs:
        results[job.name] = run_eval(job, settings, log)
        print(f"    {job.name:<24} mIoU {results[job.name]['miou'] or float('nan'):5.1f}  "
              f"({results[job.name]['wall_s']:.0f} s)", flush=True)
    return {"jobs": results}


def stage_eval_pretrained(settings: Settings, log: Path) -> dict:
    return run_jobs(pretrained_jobs(settings), settings, log)


def stage_eval_trained(settings: Settings, log: Path) -> dict:
    return run_jobs(trained_jobs(settings), settings, log)


def fusion_stage(ta_ref: Callable[[Settings], str], label: str) -> Callable[[Settings, Path], dict]:
    def run(settings: Settings, log: Path) -> dict:
        from ablation_eval import run_fusion

        return run_fusion(ta_ref(settings), settings, settings.work / "fusion" / label)

    return run


def train_args(variant: str, settings: Settings) -> list[str]:
    """``goodsam train`` arguments of one student variant (always ``--resume``: a no-op on a new run)."""
    work = settings.work
    args = ["train", "--config", settings.config, "--data", str(work / "proxy" / "train" / "images"),
            "--masks", str(work / "masks" / "train"), "--out", str(work / "runs" / variant),
            "--steps", str(settings.steps), "--resume", "--no-progress"]
    for item in [*train_overrides(settings), *STUDENT_VARIANTS[variant]]:
        args += ["--set", item]
    return args


def read_metrics(run_dir: Path) -> list[dict]:
    """The trainer's per-step log (``metrics.jsonl``), empty when absent."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_stage(variant: str) -> Callable[[Settings, Path], dict]:
    def run(settings: Settings, log: Path) -> dict:
        args = train_args(variant, settings)
        run_dir = settings.work / "runs" / variant
        ledger = read_json(run_dir / "ablation_train.json") or {"seconds": 0.0, "step": 0}
        seconds = run_goodsam(args, settings.threads, log, processes=settings.workers)
        run = read_json(run_dir / "run.json") or {}
        if run.get("step", 0) > ledger["step"]:  # it trained: count this invocation's time
            ledger = {"seconds": ledger["seconds"] + seconds, "step": run["step"]}
            write_json(run_dir / "ablation_train.json", ledger)
        history = read_metrics(run_dir)
        return {"command": display(["goodsam", *args]), "seconds": ledger["seconds"], "run": run,
                "first": history[0] if history else None, "last": history[-1] if history else None}

    return run


def stage_overlays(settings: Settings, log: Path) -> dict:
    from ablation_overlays import run_overlays

    return run_overlays(settings)


def stage_report(settings: Settings, log: Path) -> dict:
    from ablation_report import write_report

    return write_report(settings)


def build_stages(settings: Settings) -> list[Stage]:
    est = estimates(settings)
    runs = settings.work / "runs"
    steps = settings.steps
    spec = [
        ("data", "pinhole-to-ERP proxy panoramas, labelled + real panoramas fitted to the band", stage_data),
        ("masks", "MobileSAM masks of every window + overlap (cached, resumable)", stage_masks),
        ("eval_pretrained", "TA whole vs sliding, student before; category mIoU (goodsam eval)",
         stage_eval_pretrained),
        ("fusion_pretrained", "TA alone vs SSA / SEPL / CTCF pseudo-labels (pretrained TA)",
         fusion_stage(lambda s: s.ta, "pretrained")),
        ("train_eq4", f"goodsam train, student eq. 4 only ({steps} steps)", train_stage("eq4")),
        ("train_eq45", f"goodsam train, student eq. 4 + 5 ({steps} steps)", train_stage("eq45")),
        ("train_full", f"goodsam train, student eq. 4 + 5 + 7 ({steps} steps)", train_stage("full")),
        ("train_full_void", f"goodsam train, eq. 4 + 5 + 7 with the black fill ignored ({steps} steps)",
         train_stage("full_void")),
        ("eval_trained", "the four students + the trained TAs (goodsam eval)", stage_eval_trained),
        ("fusion_trained", "TA alone vs SSA / SEPL / CTCF with the trained TA",
         fusion_stage(lambda s: str(runs / "full" / "ta"), "trained")),
        ("overlays", "small PNG overlays before/after training", stage_overlays),
        ("report", f"write {settings.docs / 'results.md'}", stage_report),
    ]
    return [Stage(name, what, est[name], run) for name, what, run in spec]


# ------------------------------------------------------------------------------------------ main
def check_settings(settings: Settings) -> None:
    """Refuse a work dir made with other settings (its cached stages would not match)."""
    path = settings.work / "settings.json"
    old = read_json(path)
    new = settings.as_dict()
    if old is not None:
        changed = [k for k in SEMANTIC if old.get(k) != new.get(k)]
        if changed:
            sys.exit(f"ablations: {settings.work} was made with other settings ({', '.join(changed)}); "
                     "use another --work or delete it")
    write_json(path, new)


def run_stages(todo: list[Stage], settings: Settings) -> None:
    """Run the stages, each followed by its wall time and a fresh ETA (estimates scaled by actual/est.)."""
    log = settings.work / "logs" / "ablations.log"
    spent = estimated_done = 0.0
    remaining = sum(stage.estimate_s for stage in todo)
    for stage in todo:
        print(f"[{datetime.now():%H:%M:%S}] {stage.name}: {stage.what}", flush=True)
        start, load = time.perf_counter(), os.getloadavg()[0]
        summary = stage.run(settings, log)
        wall = time.perf_counter() - start
        write_json(settings.work / "stages" / f"{stage.name}.json",
                   {**summary, "wall_s": wall, "estimate_s": stage.estimate_s,
                    "load": (load + os.getloadavg()[0]) / 2,
                    "finished": f"{datetime.now():%Y-%m-%d %H:%M:%S}"})
        spent += wall
        estimated_done += stage.estimate_s
        remaining -= stage.estimate_s
        left = max(remaining, 0.0) * spent / max(estimated_done, 1.0)
        print(f"[{datetime.now():%H:%M:%S}] {stage.name} done in {wall / 60:.1f} min (estimate "
              f"{stage.estimate_s / 60:.1f}); remaining ~{left / 60:.0f} min, ETA "
              f"{datetime.now() + timedelta(seconds=left):%H:%M}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="Work dir (default outputs/ablations[_quick]).")
    parser.add_argument("--docs", type=Path, help="Where results.md + results/ go (default: the work "
                                                  "dir's docs/).")
    parser.add_argument("--quick", action="store_true", help="Every stage at tiny scale (a few minutes).")
    parser.add_argument("--plan", action="store_true", help="Print the plan and ETA, run nothing.")
    parser.add_argument("--only", nargs="+", metavar="STAGE", help="Run only these stages.")
    parser.add_argument("--student", choices=("espnetv2-s0.5", "espnetv2-s1.0"))
    parser.add_argument("--steps", type=int, help="Optimiser steps per training run (default 36).")
    parser.add_argument("--points-per-side", type=int, help="MobileSAM point grid (default 8).")
    parser.add_argument("--frames-per-pano", type=int, help="Frames per training panorama (default 8).")
    parser.add_argument("--eval-frames-per-pano", type=int,
                        help="Frames per evaluation panorama (default 5).")
    parser.add_argument("--erp-height", type=int, help="Panorama band height (default 400).")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of every process (default 2).")
    parser.add_argument("--workers", type=int,
                        help="Training processes, a gloo DDP job of 1 thread each (default 2; 1: one process "
                             "with --threads threads). Same result either way.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Extra `goodsam train --set` override for every training run.")
    parser.add_argument("--redo", nargs="+", default=[], metavar="STAGE",
                        help="Forget these finished stages (their cached pieces are still reused).")
    parser.add_argument("--clean", action="store_true", help="Delete the work dir first.")
    return parser.parse_args(argv)


def build_settings(args: argparse.Namespace) -> Settings:
    work = args.work or REPO / "outputs" / ("ablations_quick" if args.quick else "ablations")
    docs = args.docs or work / "docs"  # docs/results.md is benchmarks/evidence.py's now
    settings = quick_settings(work, docs) if args.quick else Settings(work=work, docs=docs)
    for key in ("student", "steps", "points_per_side", "frames_per_pano", "eval_frames_per_pano", "threads",
                "workers"):
        value = getattr(args, key)
        if value is not None:
            setattr(settings, key, value)
    if args.erp_height:
        settings.height = args.erp_height
    settings.extra_overrides = list(args.overrides)
    settings.work, settings.docs = settings.work.resolve(), settings.docs.resolve()
    return settings


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = build_settings(args)
    if args.clean and settings.work.exists() and not args.plan:
        shutil.rmtree(settings.work)
    stages = build_stages(settings)
    unknown = (set(args.only or ()) | set(args.redo)) - {s.name for s in stages}
    if unknown:
        sys.exit(f"ablations: unknown stage(s) {', '.join(sorted(unknown))}")
    for name in args.redo if not args.plan else ():
        (settings.work / "stages" / f"{name}.json").unlink(missing_ok=True)
    todo = pending(stages, settings, set(args.only) if args.only else None)
    print_plan(stages, settings, todo)
    if args.plan:
        return
    import torch

    torch.set_num_threads(settings.threads)
    check_settings(settings)
    start = time.perf_counter()
    run_stages(todo, settings)
    print(f"ablations: finished in {(time.perf_counter() - start) / 60:.1f} min; report "
          f"{settings.docs / 'results.md'}")


if __name__ == "__main__":
    main()
