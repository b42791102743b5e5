"""Scoring for the ablations: ``goodsam eval`` jobs (one sub-process each) and the fusion comparison.

Each eval job writes ``<work>/eval/<name>/results.json`` (by ``goodsam eval``) plus ``job.json`` (the
command and its wall time) and is skipped when both exist.

The fusion comparison runs in-process on the evaluation panoramas: the TA's logits of every sliding
window, the cached SAM masks of that window, eq. 3 fusion by each method, and the windows assembled
into a panorama by the non-overlapping tiling of eq. 4 (the pseudo-label the student is trained on).
Pixels a method leaves unlabelled (255: no mask, or SEPL's rejected masks) fall back to the TA's own
label so that every row labels every pixel; ``labelled`` is the share of pixels the method decides
itself and ``mIoU own`` its mIoU on those pixels only (the TA's on the same pixels in brackets).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ablation_common import Settings, display, read_json, run_goodsam, write_json

from goodsam.dar.fusion import IGNORE_INDEX, fuse
from goodsam.evaluation.pseudo_labels import PseudoLabelScorer
from goodsam.imageio import list_images, load_label, load_rgb, save_png
from goodsam.inference import load_model
from goodsam.panorama.windows import assemble_tiles, crop_windows, sliding_windows
from goodsam.sam.cache import cache_path, load_panorama_masks

FUSION_METHODS = ("TA alone", "SSA", "SEPL", "CTCF", "CTCF M=1")


@dataclass(frozen=True)
class EvalJob:
    """One ``goodsam eval`` run: ``model`` on ``dataset`` (``proxy``, ``pinhole`` or ``labelled``)."""

    name: str
    model: str
    dataset: str
    window: bool = False
    scale: int = 1


def dataset_args(job: EvalJob, settings: Settings) -> list[str]:
    """``--images/--labels/--label-pattern/--class-map`` of a job's dataset."""
    work = settings.work
    if job.dataset == "proxy":
        folder, pattern, class_map = work / "proxy" / "eval", "{stem}_trainIds.png", "cityscapes19"
    elif job.dataset == "pinhole":
        folder, pattern, class_map = work / "frames" / "eval", "{stem}_trainIds.png", "cityscapes19"
    elif job.dataset == "labelled":
        folder, pattern, class_map = work / "labelled", "{stem}_categoryIds.png", "categories7"
    else:
        raise ValueError(f"unknown dataset {job.dataset}")
    return ["--images", str(folder / "images"), "--labels", str(folder / "labels"),
            "--label-pattern", pattern, "--class-map", class_map]


def eval_args(job: EvalJob, settings: Settings) -> list[str]:
    """The full ``goodsam eval`` argument list of a job."""
    args = ["eval", job.model, *dataset_args(job, settings), "--out", str(settings.work / "eval" / job.name),
            "--name", job.name]
    if job.window:
        args += ["--window", str(settings.window), "--stride", str(settings.stride)]
    if job.scale != 1:
        args += ["--height", str(settings.height * job.scale), "--width", str(settings.width * job.scale)]
    return args


def run_eval(job: EvalJob, settings: Settings, log: Path) -> dict:
    """Run (or reuse) one eval job; returns ``{miou, per_class, pixel_accuracy, command, wall_s}``."""
    out = settings.work / "eval" / job.name
    results, meta = read_json(out / "results.json"), read_json(out / "job.json")
    if results is None or meta is None:
        args = eval_args(job, settings)
        seconds = run_goodsam(args, settings.threads, log)
        meta = {"command": display(["goodsam", *args]), "wall_s": seconds, "model": job.model}
        write_json(out / "job.json", meta)
        results = read_json(out / "results.json") or {}
    return {"miou": results.get("miou"), "pixel_accuracy": results.get("pixel_accuracy"),
            "per_class": results.get("per_class", {}), "n_images": results.get("n_images"), **meta}


# ------------------------------------------------------------------------------------------ fusion
def window_logits(model, image: np.ndarray, settings: Settings) -> tuple[torch.Tensor, object]:
    """TA logits ``(N, C, H, w)`` of every sliding window, and the layout."""
    layout = sliding_windows(image.shape[0], image.shape[1], settings.window, settings.stride, False)
    tensor = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
    windows = crop_windows(tensor, layout)
    with torch.inference_mode():
        logits = torch.cat([model.segment(windows[i:i + 2]).logits.float()
                            for i in range(0, len(windows), 2)])
    return logits, layout


def fuse_panorama(logits: torch.Tensor, layout, masks) -> dict[str, torch.Tensor]:
    """Tiled panorama labels of the TA alone and of every fusion method (255 = unlabelled)."""
    tiled = {"TA alone": assemble_tiles(logits.argmax(1), layout)}
    for name in ("ssa", "sepl", "ctcf"):
        results = [fuse(name, masks.windows[i], logits[i]) for i in range(layout.num_windows)]
        labels = assemble_tiles(torch.stack([r.labels for r in results]), layout)
        tiled[name.upper()] = labels
        if name == "ctcf":
            weights = assemble_tiles(torch.stack([r.weights for r in results]), layout)
            tiled["CTCF M=1"] = torch.where(weights >= 1, labels, torch.full_like(labels, IGNORE_INDEX))
    return tiled


def run_fusion(ta_ref: str, settings: Settings, out: Path) -> dict:
    """Score TA alone / SSA / SEPL / CTCF on the evaluation panoramas with the TA ``ta_ref``."""
    torch.set_num_threads(settings.threads)
    start = time.perf_counter()
    model = load_model(ta_ref)
    proxy = settings.work / "proxy" / "eval"
    scorer = PseudoLabelScorer(FUSION_METHODS)
    for path in list_images(proxy / "images"):
        image = load_rgb(path)
        gt = torch.from_numpy(load_label(proxy / "labels" / f"{path.stem}_trainIds.png").astype(np.int64))
        logits, layout = window_logits(model, image, settings)
        masks = load_panorama_masks(cache_path(settings.work / "masks" / "eval", path))
        tiled = fuse_panorama(logits, layout, masks)
        ta = tiled["TA alone"].long()
        for method, labels in tiled.items():
            scorer.add(method, gt, ta, labels.long())
            save_png(out / method.replace(" ", "_").replace("=", "") / f"{path.stem}.png",
                     labels.to(torch.uint8).numpy())
    return {"ta": ta_ref, "rows": scorer.rows(), "wall_s": time.perf_counter() - start}
