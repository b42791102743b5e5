"""Evidence that GoodSAM works: the nano setup on the pinhole-to-ERP proxy, every setting chosen on the
training side, written to ``docs/results.md`` + ``docs/results.json`` (by ``benchmarks/evidence_report.py``).

Data (``goodsam data pinhole-to-erp``, 400x2048 band, pitch 0, ±2° yaw jitter):

* **train**: aachen frames 1-80, twice (two orders, 8 frames per panorama): 20 panoramas, labels never read;
* **val**: aachen frames 81-100, 5 per panorama: 4 panoramas, the only labels any setting is chosen on;
* **eval**: the 10 frankfurt frames, 5 per panorama: 2 panoramas, and the CVRG labelled panorama.
  Nothing is chosen on them.

Stages (each skipped when its ``WORK/stages/<name>.json`` exists; ``--redo NAME`` reruns one):
``data``, ``masks`` (MobileSAM 16x16 points), ``scale_sweep`` (TA windows on val at several input scales ->
the chosen scale = the best), ``fusion_select`` (pseudo-label variants on val -> the chosen safeguards),
``eval_before`` (TA / student before training on eval and CVRG), ``fusion_eval``, one ``run_<name>`` per
training run (then its evaluation), ``report``.

    python benchmarks/evidence.py [--work outputs/evidence] [--steps 300] [--only STAGE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch
from ablation_images import categories_as_train_ids, panel, save_small_png, train_ids_as_categories
from evidence_report import write_report

from goodsam.assets import find_asset
from goodsam.evaluation import open_labelled_set
from goodsam.evaluation.pseudo_labels import FusionVariant, PseudoLabelScorer, score_variants
from goodsam.imageio import load_label, load_rgb, resize_label, resize_rgb, save_png
from goodsam.inference import load_model, model_scale, predict_labels
from goodsam.panorama.windows import crop_windows, sliding_windows
from goodsam.sam.cache import cache_path, load_panorama_masks
from goodsam.segmenters import build_segmenter
from goodsam.segmenters.scale import forward_at_scale
from goodsam.train.data import fit_erp_band

REPO = Path(__file__).resolve().parents[1]
GOODSAM = [sys.executable, "-m", "goodsam.cli"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
TA, STUDENT, CONFIG = "espnetv2-s2.0", "espnetv2-s0.5", "nano-s0.5"
POINTS = 16
SCALES = ("1", "1.5", "2", "2.5", "3", "auto")
PATTERN = "{stem}_trainIds.png"
VARIANTS = (
    FusionVariant("TA alone", "ta"),
    FusionVariant("SSA", "ssa"),
    FusionVariant("SEPL", "sepl"),
    FusionVariant("CTCF (paper)", "ctcf"),
    FusionVariant("CTCF M=1", "ctcf", confident_only=True),
    FusionVariant("CTCF + TA where unsure", "ctcf", uncertain="ta"),
    FusionVariant("CTCF + confident TA 0.9", "ctcf", ta_confidence=0.9),
    FusionVariant("CTCF + both (0.9)", "ctcf", ta_confidence=0.9, uncertain="ta"),
    FusionVariant("CTCF + both (0.7)", "ctcf", ta_confidence=0.7, uncertain="ta"),
    FusionVariant("SSA + confident TA 0.9", "ssa", ta_confidence=0.9),
)


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(args: list[str], log: Path, record: list) -> float:
    """Run a command (output appended to ``log``); record its display form and wall time."""
    start = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.write(f"$ {shlex.join(args)}\n")
        handle.flush()
        done = subprocess.run(args, stdout=handle, stderr=subprocess.STDOUT, env=env(), cwd=REPO)
    seconds = time.perf_counter() - start
    shown = shlex.join(["goodsam" if a == "goodsam.cli" else a for a in args[2:]] if args[:3] == GOODSAM
                       else args).replace(str(REPO) + "/", "")
    record.append({"command": shown, "seconds": round(seconds, 1), "rc": done.returncode})
    if done.returncode:
        raise SystemExit(f"evidence: command failed (rc {done.returncode}), see {log}: {shown}")
    return seconds


def parallel(commands: list[list[str]], log: Path, record: list) -> None:
    """Run commands two at a time (one per core)."""
    pending = list(commands)
    while pending:
        batch, pending = pending[:2], pending[2:]
        procs = []
        for k, args in enumerate(batch):
            handle = open(log.with_suffix(f".{k}.log"), "a")  # noqa: SIM115 - closed after the wait below
            procs.append((args, subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env(),
                                                 cwd=REPO), time.perf_counter(), handle))
        for args, proc, start, handle in procs:
            rc = proc.wait()
            handle.close()
            record.append({"command": shlex.join(args[2:]), "seconds": round(time.perf_counter() - start, 1),
                           "rc": rc})
            if rc:
                raise SystemExit(f"evidence: command failed (rc {rc}), see {log}: {shlex.join(args)}")


# ------------------------------------------------------------------------------------------- stages
def link(frames: list[Path], labels: Path, out: Path, prefix: str = "") -> Path:
    for sub in ("images", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(frames):
        name = f"{prefix}{k:03d}_{frame.stem}" if prefix else frame.stem
        for dst, src in ((out / "images" / f"{name}.jpg", frame),
                         (out / "labels" / f"{name}_trainIds.png", labels / f"{frame.stem}_trainIds.png")):
            if not dst.is_symlink():
                dst.symlink_to(src.resolve())
    return out


def stage_data(work: Path, record: list) -> dict:
    root = find_asset("cityscapes")
    images = sorted((root / "images").glob("*.jpg"))
    aachen = [p for p in images if p.name.startswith("aachen_")]
    frankfurt = [p for p in images if p.name.startswith("frankfurt_")]
    shuffled = aachen[:80]
    random.Random(1).shuffle(shuffled)
    splits = {"train_a": (aachen[:80], 8, 0, ""), "train_b": (shuffled, 8, 1, "x"),
              "val": (aachen[80:], 5, 0, ""), "eval": (frankfurt, 5, 0, "")}
    for split, (frames, per, seed, prefix) in splits.items():
        src = link(frames, root / "labels", work / "frames" / split, prefix)
        run([*GOODSAM, "data", "pinhole-to-erp", str(src), str(work / "proxy" / split), "--frames-per-pano",
             str(per), "--yaw-jitter", "2", "--split", split, "--seed", str(seed)],
            work / "logs" / "data.log", record)
    train = work / "proxy" / "train" / "images"
    train.mkdir(parents=True, exist_ok=True)
    for split in ("train_a", "train_b"):
        for path in sorted((work / "proxy" / split / "images").iterdir()):
            if not (train / path.name).is_symlink():
                (train / path.name).symlink_to(path.resolve())
    lab = find_asset("labelled_panorama")
    image, label = load_rgb(lab / "cvrg_pano_0000.png"), load_label(lab / "cvrg_pano_0000_categoryIds.png")
    rows = image.shape[0]
    band = round(rows * (360.0 * 400 / 2048) / 180.0)
    top = (rows - band) // 2
    save_png(work / "cvrg" / "images" / "cvrg_pano_0000.png", resize_rgb(image[top:top + band], 400, 2048))
    save_png(work / "cvrg" / "labels" / "cvrg_pano_0000_categoryIds.png",
             resize_label(label[top:top + band], 400, 2048))
    real = work / "real"
    for path in sorted(find_asset("panoramas").iterdir()):
        save_png(real / f"{path.stem}.png", fit_erp_band(load_rgb(path), 400, 2048))
    return {"train_panoramas": len(list(train.iterdir()))}


def stage_masks(work: Path, record: list) -> dict:
    for split in ("train", "val", "eval"):
        parallel([[*GOODSAM, "masks", str(work / "proxy" / split / "images"),
                   "--out", str(work / "masks" / split), "--config", CONFIG, "--points-per-side", str(POINTS),
                   "--height", "400", "--width", "2048",
                   "--shard", f"{k}/2"] for k in range(2)], work / "logs" / f"masks_{split}",
                 record)
    return {}


def eval_args(model: str, images: Path, labels: Path, out: Path, *, windows: bool, scale: str = "1",
              pattern: str = PATTERN, class_map: str = "cityscapes19") -> list[str]:
    args = [*GOODSAM, "eval", model, "--images", str(images), "--labels", str(labels),
            "--label-pattern", pattern, "--class-map", class_map, "--out", str(out), "--threads", "1",
            "--scale", scale]
    return [*args, "--window", "512", "--stride", "256"] if windows else args


def read_miou(folder: Path) -> dict:
    data = json.loads((folder / "results.json").read_text())
    return {"miou": data["miou"], "pixel_accuracy": data["pixel_accuracy"], "per_class": data["per_class"]}


def stage_scale_sweep(work: Path, record: list) -> dict:
    val = work / "proxy" / "val"
    out = work / "eval" / "scale_sweep"
    parallel([eval_args(TA, val / "images", val / "labels", out / s, windows=True, scale=s) for s in SCALES],
             work / "logs" / "scale_sweep", record)
    scores = {s: read_miou(out / s)["miou"] for s in SCALES}
    chosen = max(SCALES, key=lambda s: scores[s])
    return {"val_miou": scores, "chosen": chosen,
            "rule": "the scale of the highest TA mIoU (sliding windows) on the aachen validation panoramas"}


def ta_window_logits(ta, image, layout, scale: float) -> torch.Tensor:
    windows = crop_windows(torch.from_numpy(image.copy()).permute(2, 0, 1).contiguous(), layout).float()
    with torch.no_grad():
        return torch.cat([forward_at_scale(lambda x: ta.segment(x).logits, windows[i:i + 1], scale)
                          for i in range(len(windows))]).float()


def score_pseudo_labels(work: Path, split: str, scale: str) -> dict:
    ta = build_segmenter(TA).eval()
    layout = sliding_windows(400, 2048, 512, 256)
    scorer = PseudoLabelScorer(tuple(v.name for v in VARIANTS))
    folder = work / "proxy" / split
    dataset = open_labelled_set(images=folder / "images", labels=folder / "labels", label_pattern=PATTERN)
    for sample in dataset.samples:
        image, label = dataset.load(sample)
        logits = ta_window_logits(ta, image, layout, model_scale(ta, scale, image.shape[1]))
        masks = load_panorama_masks(cache_path(work / "masks" / split, sample.image)).windows
        score_variants(scorer, torch.from_numpy(label.astype("int64")), logits, masks, layout, VARIANTS)
    return scorer.rows()


def stage_fusion_select(work: Path, record: list, state: dict) -> dict:
    start = time.perf_counter()
    scale = state["scale_sweep"]["chosen"]
    rows = score_pseudo_labels(work, "val", scale)
    record.append({"command": f"python benchmarks/evidence.py --only fusion_select (TA scale {scale})",
                   "seconds": round(time.perf_counter() - start, 1), "rc": 0})
    ctcf = [v for v in VARIANTS if v.method == "ctcf" and not v.confident_only]
    best = max(ctcf, key=lambda v: rows[v.name]["miou"])
    return {"rows": rows, "chosen": {"name": best.name, "ta_confidence": best.ta_confidence,
                                     "uncertain": best.uncertain},
            "rule": "among the CTCF variants, the highest pseudo-label mIoU on the aachen validation "
                    "panoramas"}


def stage_fusion_eval(work: Path, record: list, state: dict) -> dict:
    start = time.perf_counter()
    rows = score_pseudo_labels(work, "eval", state["scale_sweep"]["chosen"])
    record.append({"command": "python benchmarks/evidence.py --only fusion_eval (in-process)",
                   "seconds": round(time.perf_counter() - start, 1), "rc": 0})
    return {"rows": rows}


def eval_jobs(work: Path, name: str, model: str, *, windows: bool, scale: str = "1") -> list[tuple]:
    """(key, folder, command) for the frankfurt proxy and the CVRG panorama."""
    proxy, cvrg = work / "proxy" / "eval", work / "cvrg"
    out = work / "eval"
    return [(f"proxy/{name}", out / "proxy" / name,
             eval_args(model, proxy / "images", proxy / "labels", out / "proxy" / name, windows=windows,
                       scale=scale)),
            (f"cvrg/{name}", out / "cvrg" / name,
             eval_args(model, cvrg / "images", cvrg / "labels", out / "cvrg" / name, windows=windows,
                       scale=scale, pattern="{stem}_categoryIds.png", class_map="categories7"))]


def run_evals(work: Path, jobs: list[tuple], log: str, record: list) -> dict:
    parallel([job[2] for job in jobs], work / "logs" / log, record)
    return {key: read_miou(folder) for key, folder, _ in jobs}


def stage_eval_before(work: Path, record: list, state: dict) -> dict:
    chosen = state["scale_sweep"]["chosen"]
    jobs = [*eval_jobs(work, "ta_whole_s1", TA, windows=False),
            *eval_jobs(work, "ta_windows_s1", TA, windows=True),
            *eval_jobs(work, "ta_windows_chosen", TA, windows=True, scale=chosen),
            *eval_jobs(work, "student_before", STUDENT, windows=False)]
    return run_evals(work, jobs, "eval_before", record)


# ------------------------------------------------------------------------------------- training runs
LEARNING_RATES = ("2e-4", "5e-5")  # the config's, and a quarter of it
SELECT_STEPS = 20


def base_overrides(work: Path, state: dict, fusion: bool, steps: int, lr: str | None = None) -> list[str]:
    """The settings every run shares; the chosen fusion safeguards only where eq. 5 uses the fusion.

    The proxy's black fill is no target (``data.void_rgb``: it is not part of any scene); the schedule
    decays over ``steps`` (``optim.decay_steps``), so a shorter run has the same learning rates."""
    lr = lr or state["lr_select"]["chosen"]
    out = [f"sam.settings.points_per_side={POINTS}", f"ta.scale={state['scale_sweep']['chosen']}",
           "train.ta_ema=1.0", f"train.target_cache={work / 'targets'}", "train.checkpoint_every=10",
           "loss.boundary_form=disagreement", "data.void_rgb=[0,0,0]", f"optim.decay_steps={steps}",
           f"optim.student.lr={lr}"]
    if fusion:
        chosen = state["fusion_select"]["chosen"]
        confidence = "null" if chosen["ta_confidence"] is None else chosen["ta_confidence"]
        out += [f"fusion.ta_confidence={confidence}", f"fusion.uncertain={chosen['uncertain']}"]
    return out


STUDENT_ONLY = ["loss.eq6_ta_ensemble=0", "loss.eq1_consistency=0", "loss.eq2_boundary_enhanced=0"]
RUNS = {  # name -> (overrides on top of the base, what it shows)
    "full": (STUDENT_ONLY, "eq. 4 + 5 + 7 (all safeguards)"),
    "eq4": ([*STUDENT_ONLY, "loss.eq5_student_ensemble=0", "loss.eq7_student_boundary=0"], "eq. 4 only"),
    "eq45": ([*STUDENT_ONLY, "loss.eq7_student_boundary=0"], "eq. 4 + 5"),
    "full_paper_fusion": ([*STUDENT_ONLY, "fusion.ta_confidence=null", "fusion.uncertain=paper"],
                          "eq. 4 + 5 + 7, fusion safeguards off (paper CTCF)"),
    "full_ssa": ([*STUDENT_ONLY, "fusion.method=ssa"], "eq. 4 + 5 + 7 with SSA instead of CTCF"),
    "full_paper_boundary": ([*STUDENT_ONLY, "loss.boundary_form=paper"],
                            "eq. 4 + 5 + 7, paper boundary form"),
}


def train_args(work: Path, out: Path, steps: int, val_every: int, overrides: list[str]) -> list[str]:
    val = work / "proxy" / "val"
    args = [*TORCHRUN, "-m", "goodsam.cli", "train", "--config", CONFIG,
            "--data", str(work / "proxy" / "train" / "images"), "--masks", str(work / "masks" / "train"),
            "--out", str(out), "--steps", str(steps), "--resume", "--no-progress",
            "--val-images", str(val / "images"), "--val-labels", str(val / "labels"),
            "--val-label-pattern", PATTERN, "--val-every", str(val_every)]
    for item in overrides:
        args += ["--set", item]
    return args


def stage_lr_select(work: Path, record: list, state: dict, steps: int) -> dict:
    """The student's learning rate: eq. 4-only runs of SELECT_STEPS steps (same schedule as the full
    runs), the higher aachen-validation mIoU at the last step wins; the winner's run continues as
    ``run_eq4``."""
    extra = RUNS["eq4"][0]
    scores = {}
    for lr in LEARNING_RATES:
        out = work / "runs" / f"eq4_lr{lr}"
        overrides = [*base_overrides(work, state, False, steps, lr), *extra]
        run(train_args(work, out, SELECT_STEPS, 10, overrides), work / "logs" / f"lr_{lr}.log", record)
        lines = [json.loads(x) for x in (out / "validation.jsonl").read_text().splitlines()]
        scores[lr] = {"curve": [(r["step"], r["student"]["miou"]) for r in lines],
                      "final": lines[-1]["student"]["miou"]}
    chosen = max(LEARNING_RATES, key=lambda lr: scores[lr]["final"])
    link = work / "runs" / "eq4"
    if not link.is_symlink():
        link.symlink_to(f"eq4_lr{chosen}")
    return {"scores": scores, "chosen": chosen, "steps": SELECT_STEPS,
            "rule": f"the higher aachen-validation mIoU after {SELECT_STEPS} steps of the eq. 4-only run"}


def stage_run(work: Path, record: list, state: dict, name: str, steps: int) -> dict:
    extra, what = RUNS[name]
    overrides = [*base_overrides(work, state, "loss.eq5_student_ensemble=0" not in extra, steps), *extra]
    out = work / "runs" / name
    args = train_args(work, out, steps, max(steps // 6, 1), overrides)
    seconds = run(args, work / "logs" / f"run_{name}.log", record)
    results = run_evals(work, eval_jobs(work, f"student_{name}", str(out / "student"), windows=False),
                        f"eval_{name}", record)
    val_curve = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [m for m in metrics if "student" in m]
    return {"what": what, "overrides": overrides, "train_seconds": seconds, "steps": steps,
            "results": results,
            "validation": [{"step": r["step"], "student": r["student"]["miou"]} for r in val_curve],
            "loss_first": losses[0]["student"] if losses else None,
            "loss_last": losses[-1]["student"] if losses else None}


def stage_overlays(work: Path, record: list, state: dict, docs: Path) -> dict:
    """Input + TA (scale 1 and chosen, windows) + student before/after rows for the real panoramas,
    one proxy evaluation panorama and the CVRG panorama (in categories); small PNGs under docs/results."""
    start = time.perf_counter()
    chosen = state["scale_sweep"]["chosen"]
    ta, before = build_segmenter(TA).eval(), build_segmenter(STUDENT).eval()
    after = load_model(work / "runs" / "full" / "student")
    images = [("real_" + p.stem, load_rgb(p), None) for p in sorted((work / "real").glob("*.png"))]
    proxy = sorted((work / "proxy" / "eval" / "images").glob("*.png"))[:1]
    images += [("proxy_eval", load_rgb(p), None) for p in proxy]
    images.append(("cvrg_categories", load_rgb(work / "cvrg" / "images" / "cvrg_pano_0000.png"),
                   load_label(work / "cvrg" / "labels" / "cvrg_pano_0000_categoryIds.png")))
    written = []
    for name, image, categories in images:
        rows = [("TA, windows, scale 1", predict_labels(ta, image, 512, 256)),
                (f"TA, windows, scale {chosen}", predict_labels(ta, image, 512, 256, scale=chosen)),
                ("student before (whole)", predict_labels(before, image)),
                ("student after, full run (whole)", predict_labels(after, image))]
        if categories is not None:
            rows = [(title, train_ids_as_categories(labels)) for title, labels in rows]
            rows.insert(0, ("ground truth (categories)", categories_as_train_ids(categories)))
        written.append(save_small_png(panel(image, rows), docs / "results" / f"{name}.png"))
    record.append({"command": "python benchmarks/evidence.py --only overlays (in-process)",
                   "seconds": round(time.perf_counter() - start, 1), "rc": 0})
    return {"files": written}


def stage_diagnosis(work: Path, record: list) -> dict:
    """The student before training at the TA's chosen scale on aachen validation: how much of the TA's
    gain from the scale the student's own weights could give (training side only)."""
    val = work / "proxy" / "val"
    out = work / "eval" / "diag" / "student_val_whole_s3"
    run(eval_args(STUDENT, val / "images", val / "labels", out, windows=False, scale="3"),
        work / "logs" / "diagnosis.log", record)
    return {"student_val_whole_s3": read_miou(out)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "evidence")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    parser.add_argument("--steps", type=int, default=60, help="Optimiser steps per training run.")
    parser.add_argument("--only", nargs="*", help="Run only these stages (default: all).")
    parser.add_argument("--redo", nargs="*", default=[], help="Rerun these stages even if done.")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    stages = ["data", "masks", "scale_sweep", "fusion_select", "lr_select", "eval_before", "fusion_eval",
              *[f"run_{name}" for name in RUNS], "diagnosis", "overlays", "report"]
    state: dict = {}
    for stage in stages:
        path = work / "stages" / f"{stage}.json"
        if path.is_file() and stage not in args.redo:
            state[stage] = json.loads(path.read_text())
            continue
        if args.only and stage not in args.only:
            continue
        print(f"[evidence] {stage} ...", flush=True)
        record: list = []
        start = time.perf_counter()
        if stage == "report":
            write_report(work, args.docs, state)
            continue
        if stage.startswith("run_"):
            result = stage_run(work, record, state, stage[4:], args.steps)
        elif stage == "lr_select":
            result = stage_lr_select(work, record, state, args.steps)
        elif stage == "overlays":
            result = stage_overlays(work, record, state, args.docs)
        elif stage in ("fusion_select", "eval_before", "fusion_eval"):
            result = globals()[f"stage_{stage}"](work, record, state)
        else:
            result = globals()[f"stage_{stage}"](work, record)
        result.update({"commands": record, "seconds": round(time.perf_counter() - start, 1),
                       "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, default=str) + "\n")
        state[stage] = result
        print(f"[evidence] {stage} done in {result['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
