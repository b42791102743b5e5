"""Benchmark: SAM + TA fusion (eq. 3) on real Cityscapes frames — TA alone vs SSA, SEPL and CTCF.

MobileSAM masks of each whole 1024x512 frame (cached under ``--cache-dir``, resumable: rerunning reuses
them) are fused with the ESPNetv2-s2.0 TA's logits of the same frame by each method, with the default
thresholds (none tuned here, and never on the frankfurt frames). The pseudo-labels are scored against
the fine ground truth, separately for the frankfurt (val) and aachen (train) frames:

* ``mIoU`` / ``pix acc``: unlabelled pixels (255: no mask, or SEPL's rejected masks) fall back to the TA's
  own prediction, so every method labels every pixel and the rows are directly comparable;
* ``labelled``: share of the ground-truth-labelled pixels the method labels itself; ``mIoU lab.``: mIoU
  on the pixels it labels, with the TA's mIoU on the same pixels in brackets
  (:func:`goodsam.evaluation.pseudo_labels.score_labelled_set`, shared with the evidence run);
* ``CTCF M=1``: only the pixels CTCF gives weight 1 (its high-confidence set E_H).

    python benchmarks/fusion.py [--cache-dir cache/fusion] [--aachen 20] [--points-per-side 32]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from goodsam.assets import find_asset
from goodsam.evaluation import LabelledSample, LabelledSet
from goodsam.evaluation.pseudo_labels import FusionVariant, score_labelled_set
from goodsam.sam.base import AMGSettings
from goodsam.sam.folder import compute_masks
from goodsam.segmenters import build_segmenter

VARIANTS = (FusionVariant("TA alone", "ta"), FusionVariant("SSA", "ssa"), FusionVariant("SEPL", "sepl"),
            FusionVariant("CTCF", "ctcf"), FusionVariant("CTCF M=1", "ctcf", confident_only=True))


def select_frames(root: Path, aachen: int) -> dict[str, list[Path]]:
    images = sorted((root / "images").glob("*.jpg"))
    return {"frankfurt": [p for p in images if p.name.startswith("frankfurt_")],
            "aachen": [p for p in images if p.name.startswith("aachen_")][:aachen]}


def link_frames(frames: list[Path], folder: Path) -> Path:
    """A folder of symlinks to the chosen frames, the input of the masks stage."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in frames:
        link = folder / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", default="cache/fusion", help="Where MobileSAM masks are cached.")
    parser.add_argument("--aachen", type=int, default=20, help="Number of aachen frames (first N sorted).")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--impl", default="fast", choices=("fast", "reference"))
    parser.add_argument("--ta", default="espnetv2-s2.0")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = find_asset("cityscapes")
    splits = select_frames(root, args.aachen)
    cache = Path(args.cache_dir)
    frames = link_frames([p for paths in splits.values() for p in paths], cache / "frames")
    settings = AMGSettings(points_per_side=args.points_per_side)
    masks_dir = cache / f"masks-{args.impl}-pps{args.points_per_side}"  # one cache per SAM setting
    summary = compute_masks(frames, masks_dir, settings=settings, impl=args.impl, window=1024, stride=1024,
                        device=args.device)
    sam_seconds = time.perf_counter() - start
    segmenter = build_segmenter(args.ta).to(args.device).eval()
    lines = ["| frames | method | mIoU | pix acc | labelled | mIoU lab. (TA) |", "|---|---|---|---|---|---|"]
    for split, paths in splits.items():
        samples = tuple(LabelledSample(p.stem, p, root / "labels" / f"{p.stem}_trainIds.png") for p in paths)
        rows = score_labelled_set(segmenter, LabelledSet("folder", split, samples), masks_dir, VARIANTS)
        lines += [f"| {split} ({len(paths)}) | {method} | {r['miou']:.1f} | {r['pixel_accuracy']:.1f} | "
                  f"{r['labelled']:.1f} % | {r['miou_own']:.1f} ({r['ta_miou_own']:.1f}) |"
                  for method, r in rows.items()]
    total = time.perf_counter() - start
    print("\n".join(lines))
    print(f"\nMobileSAM ({args.impl}, points_per_side={args.points_per_side}) on whole 1024x512 frames, TA "
          f"{args.ta}; default thresholds. Wall time {total:.0f} s (SAM stage {sam_seconds:.0f} s: "
          f"{summary.done} frames computed, {summary.skipped} cached).")
    print(f"Rerun: python {shlex.join(['benchmarks/fusion.py', *sys.argv[1:]])}")


if __name__ == "__main__":
    main()
