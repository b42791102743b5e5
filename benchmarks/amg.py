"""Benchmark: reference vs fast SAM automatic mask generator on real panorama windows (issue 6).

Both generators use the same model and settings on the same 400x512 windows of the bundled PASS
panoramas (:mod:`goodsam.experiments.amg`), in one process. Printed per window and in total: seconds per
window of each (wall clock and process CPU time: the machine may be shared), the speed-up, the mask
agreement both ways (IoU >= 0.9), where the time goes in each, and on the CPU the arithmetic bound of
the fast decoder (its matrix products at this core's measured float32 rate; the gap to the measured
time is the elementwise passes, small-matrix inefficiency and per-call overhead).

On the CPU it also times SAM's image encoder in PyTorch against ONNX Runtime (the fast generator's CPU
default) and prints how far their features differ. With ``--encoder-batch N`` it also times the image
encoder one image per call against N per call (the windows and their overlap-sized 400x256 centres, as a
panorama's masks batch them) and checks that the features are identical.

``--keep-freed-memory`` runs the whole process (both generators) with freed memory kept for reuse, as
``goodsam masks`` and training run on the CPU (:func:`goodsam.devices.keep_freed_memory`); without it
both run with the C library's default, as segment-anything runs in a user's process.

    python benchmarks/amg.py [--points-per-side 32] [--windows 2] [--threads 2] [--device cpu]
                             [--encoder-batch N] [--keep-freed-memory]
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from goodsam.devices import keep_freed_memory
from goodsam.experiments.amg import (
    ReferenceStageTimer,
    compare_generators,
    decoder_floor,
    decoder_profile,
    encoder_batch_seconds,
    encoder_runtime_seconds,
    floor_lines,
    load_windows,
    matched_shares,
    profile_lines,
)
from goodsam.sam import AMGSettings, build_mask_generator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="mobile_sam")
    parser.add_argument("--encoder-batch", type=int, default=0, help="Also time N images per encoder call.")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="keep freed memory for reuse in this process (both generators)")
    args = parser.parse_args(argv)
    kept = keep_freed_memory() if args.keep_freed_memory else False
    torch.set_num_threads(args.threads)
    settings = AMGSettings(points_per_side=args.points_per_side)
    windows = load_windows(args.windows)
    reference = build_mask_generator(args.model, settings=settings, impl="reference", device=args.device)
    fast = build_mask_generator(args.model, settings=settings, impl="fast", device=args.device)
    warm = windows[0][1][:128, :128]  # load everything once, with a cheap grid
    for impl in ("reference", "fast"):
        tiny = AMGSettings(points_per_side=2)
        build_mask_generator(args.model, settings=tiny, impl=impl, device=args.device).generate(warm)
    ref_stages = ReferenceStageTimer(reference)
    print(f"{args.model}, {args.points_per_side}x{args.points_per_side} points, {args.threads} thread(s), "
          f"device {args.device}, {len(windows)} window(s) of 400x512, freed memory kept: {kept}")
    rows = []
    for row in compare_generators(reference, fast, windows, args.device):
        rows.append(row)
        ref, fst = row.wall["reference"], row.wall["fast"]
        print(f"  {row.name}: reference {ref:.1f} s ({row.masks['reference']} masks), "
              f"fast {fst:.2f} s ({row.masks['fast']} masks), x{ref / fst:.1f}; matched: ref "
              f"{row.ref_ok:.1%}, fast {row.fast_ok:.1%}; pixel-identical {row.identical}/"
              f"{row.masks['reference']}", flush=True)
    n = len(rows)
    total = {kind: {impl: sum(getattr(r, kind)[impl] for r in rows) for impl in ("reference", "fast")}
             for kind in ("wall", "cpu")}
    fast_stages = {k: sum(r.fast_timings.get(k, 0.0) for r in rows) for k in rows[0].fast_timings}
    fast_stats = {k: sum(r.fast_stats.get(k, 0) for r in rows) for k in rows[0].fast_stats}
    ref_all, fast_all = matched_shares(rows)
    print("\nper window      wall s   cpu s")
    print(f"  reference  {total['wall']['reference'] / n:8.2f} {total['cpu']['reference'] / n:7.2f}")
    print(f"  fast       {total['wall']['fast'] / n:8.2f} {total['cpu']['fast'] / n:7.2f}")
    print(f"speed-up: x{total['wall']['reference'] / total['wall']['fast']:.1f} wall, "
          f"x{total['cpu']['reference'] / total['cpu']['fast']:.1f} cpu")
    print(f"agreement (IoU >= 0.9): {ref_all:.1%} of reference masks matched, "
          f"{fast_all:.1%} of fast masks matched")
    print("\nwhere the time goes (wall s per window)")
    ref_rest = total["wall"]["reference"] - sum(ref_stages.times.values())
    for label, value in [*ref_stages.times.items(), ("filters, RLE, NMS", ref_rest)]:
        print(f"  reference {label:<18} {value / n:7.2f}")
    workers = fast.workers or torch.get_num_threads()
    for label, value in fast_stages.items():  # decoder stages run on `workers` threads at once
        print(f"  fast      {label:<18} {value / n:7.2f}" + ("" if label == "encoder" else
                                                          f"  (thread-s, {workers} workers)"))
    print("fast counts per window: " + ", ".join(f"{k} {v / n:.0f}" for k, v in fast_stats.items()))
    if args.device == "cpu" and hasattr(fast, "decoder"):
        floor = decoder_floor(fast, windows[0][1])
        ref_wall = total["wall"]["reference"] / n
        print("\n".join(floor_lines(floor, fast_stats, fast_stages, workers, ref_wall, n)))
        profile = decoder_profile(fast, windows[0][1])
        print("\n".join(profile_lines(profile, floor["sgemm_rate"], fast_stats,
                                       fast_stages.get("encoder", 0.0) / n, workers, ref_wall, n)))
    if args.device == "cpu":
        runtimes = encoder_runtime_seconds(fast, [image for _, image in windows])
        ratio = runtimes["torch"] / runtimes["onnxruntime"]
        print(f"\nimage encoder per window: PyTorch {runtimes['torch']:.2f} s, ONNX Runtime "
              f"{runtimes['onnxruntime']:.2f} s (x{ratio:.2f}; the fast generator uses "
              f"{fast.encoder_runtime}); features differ by at most "
              f"{runtimes['max_rel_diff']:.1e} of the largest")
    if args.encoder_batch > 1:
        crops = [image for _, image in windows] + [image[:, 128:384].copy() for _, image in windows]
        one, many, same = encoder_batch_seconds(fast, crops, args.encoder_batch, args.device)
        print(f"\nimage encoder, {len(crops)} crops (windows and overlap-sized centres): one per call "
              f"{one:.2f} s per image, {args.encoder_batch} per call {many:.2f} s per image: "
              f"x{one / many:.2f}; features identical: {'yes' if same else 'NO'}")
    print("\nrerun: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
