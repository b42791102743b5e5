"""Benchmark: reference vs fast SAM automatic mask generator on real panorama windows (issue 6).

Both generators use the same model and the same settings on the same 400x512 windows, cut from the
bundled PASS panoramas resized to 400x2048 (DensePASS size), in one process. Printed per window and in
total: seconds per window of each (wall clock and process CPU time: the machine may be shared), the
speed-up, and the mask agreement both ways (share of reference masks matched by a fast mask with
IoU >= 0.9, and of fast masks matched by a reference mask), plus where the time goes in each.

Then the arithmetic bound of the fast decoder (CPU): its floating-point work per prompt (its matrix
products, counted with ``torch.utils.flop_counter``) at this core's float32 matrix-product rate,
measured in the same run. That is the time the algorithm would need if it were nothing but matrix
products at full speed; the gap to the measured time is the elementwise passes (softmaxes, LayerNorm
statistics, GELUs), small-matrix inefficiency and per-call overhead.

    python benchmarks/amg.py [--points-per-side 32] [--windows 2] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from goodsam.assets import find_asset
from goodsam.sam import AMGSettings, MaskSet, build_mask_generator

PANORAMAS = ("pass_1027U_0.png", "pass_1210U_1.png", "pass_7100U_1.png")
WINDOW_X0 = (0, 768, 1536)  # window k: panorama k % 3, columns WINDOW_X0[k % 3] .. + 512


def load_windows(count: int) -> list[tuple[str, np.ndarray]]:
    """``count`` real 400x512 windows (name, RGB uint8) from the panoramas resized to 400x2048."""
    folder = find_asset("panoramas")
    windows = []
    for k in range(count):
        name = PANORAMAS[k % len(PANORAMAS)]
        image = Image.open(folder / name).convert("RGB").resize((2048, 400), Image.BILINEAR)
        x0 = WINDOW_X0[(k // len(PANORAMAS) + k) % len(WINDOW_X0)]
        crop = np.ascontiguousarray(np.asarray(image)[:, x0:x0 + 512])
        windows.append((f"{name}[:, {x0}:{x0 + 512}]", crop))
    return windows


def mask_iou(a: MaskSet, b: MaskSet) -> torch.Tensor:
    """(len(a), len(b)) IoU matrix of two mask sets of the same image."""
    if len(a) == 0 or len(b) == 0:
        return torch.zeros(len(a), len(b))
    x = torch.as_tensor(a.masks.reshape(len(a), -1), dtype=torch.float32)
    y = torch.as_tensor(b.masks.reshape(len(b), -1), dtype=torch.float32)
    inter = x @ y.T
    return inter / (x.sum(1)[:, None] + y.sum(1)[None, :] - inter).clamp_min(1)


def agreement(ref: MaskSet, fast: MaskSet, threshold: float = 0.9) -> tuple[float, float, int]:
    """(share of ref masks matched, share of fast masks matched, identical masks) at IoU >= threshold."""
    if len(ref) == 0 or len(fast) == 0:
        return float(len(ref) == 0), float(len(fast) == 0), 0
    iou = mask_iou(ref, fast)
    ref_ok = float((iou.max(1).values >= threshold).float().mean())
    fast_ok = float((iou.max(0).values >= threshold).float().mean())
    return ref_ok, fast_ok, int((iou.max(1).values == 1.0).sum())


class StageTimer:
    """Wall time of the reference generator's stages, by wrapping its predictor's calls."""

    def __init__(self, reference) -> None:
        self.times: dict[str, float] = {}
        predictor = reference.amg.predictor
        model = predictor.model
        self._wrap(predictor, "set_image", "encoder")
        self._wrap(model.mask_decoder, "forward", "mask decoder")
        self._wrap(model, "postprocess_masks", "mask upsampling")

    def _wrap(self, obj, name: str, label: str) -> None:
        original = getattr(obj, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.times[label] = self.times.get(label, 0.0) + time.perf_counter() - start

        setattr(obj, name, timed)


@contextmanager
def clock():
    """Yields a dict that gets ``wall`` and ``cpu`` seconds of the block."""
    result: dict[str, float] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    yield result
    result["wall"], result["cpu"] = time.perf_counter() - wall, time.process_time() - cpu


def _seconds(function, repeat: int) -> float:
    """Best-of-3 seconds of one call (each run ``repeat`` times), single-threaded."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            function()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def _sgemm_rate() -> float:
    """This core's single-thread float32 matrix-product rate (GFLOP/s) on a cache-friendly square-ish
    product, (2048, 256) @ (256, 256): the arithmetic speed the decoder is measured against."""
    a, b = torch.randn(2048, 256), torch.randn(256, 256)
    return 2 * 2048 * 256 * 256 / _seconds(lambda: a @ b, 50) / 1e9


def decoder_floor(fast, image: np.ndarray) -> dict[str, float]:
    """Per-prompt FLOPs (matrix products, counted with ``torch.utils.flop_counter``) and single-thread
    time of the fast decoder's two stages on ``image``, and this core's float32 matrix-product rate."""
    from goodsam.sam import fast_decoder

    model, decoder, chunk = fast.sam.model, fast.decoder, fast.prompts_per_call
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        h, w = image.shape[:2]
        job = fast.prepare_crop(image, [0, 0, w, h], 0, (h, w))
        ctx, valid, batch = job.ctx, job.upsampler.tokens, job.sparse[:chunk]
        tokens = list(range(1, model.mask_decoder.num_mask_tokens))
        state = decoder.transform(ctx, batch)
        stages = {"transform": lambda: decoder.transform(ctx, batch),
                  "upscale": lambda: decoder.masks(state, ctx, None, tokens, valid)}
        result = {"sgemm_rate": _sgemm_rate()}
        onednn, fast_decoder._ONEDNN_OK = fast_decoder._ONEDNN_OK, False  # count F.linear, not oneDNN
        try:
            for stage, run in stages.items():
                with FlopCounterMode(display=False) as counter:
                    run()
                result[f"{stage}_gflop"] = counter.get_total_flops() / chunk / 1e9
        finally:
            fast_decoder._ONEDNN_OK = onednn
        for stage, run in stages.items():
            result[f"{stage}_ms"] = _seconds(run, 5) / chunk * 1e3
    finally:
        torch.set_num_threads(previous_threads)
    return result


def print_floor(floor: dict[str, float], stats: dict[str, int], stages: dict[str, float], workers: int,
                ref_wall: float, windows: int) -> None:
    """The fast decoder's arithmetic bound: its FLOPs at this core's float32 matrix-product rate."""
    rate = floor["sgemm_rate"]
    print(f"\narithmetic bound of the fast decoder (1 thread; FLOPs of its matrix products counted; "
          f"this core's float32 matrix-product rate {rate:.0f} GFLOP/s, measured now)")
    for stage in ("transform", "upscale"):
        gflop, ms = floor[f"{stage}_gflop"], floor[f"{stage}_ms"]
        print(f"  {stage:<10} {gflop:6.3f} GFLOP/prompt in {ms:6.2f} ms = {gflop / ms * 1e3:5.1f} GFLOP/s "
              f"({gflop / ms * 1e3 / rate:.0%} of that rate)")
    prompts = stats.get("prompts", 0) / windows
    upscaled = stats.get("upscaled_prompts", 0) / windows
    arithmetic = (prompts * floor["transform_gflop"] + upscaled * floor["upscale_gflop"]) / rate / workers
    encoder = stages.get("encoder", 0.0) / windows
    best = arithmetic + encoder
    print(f"  per window: {prompts:.0f} prompts, {upscaled:.0f} upscaled -> decoder arithmetic at that rate "
          f"{arithmetic:.2f} s on {workers} workers + encoder {encoder:.2f} s = {best:.2f} s: "
          f"x{ref_wall / best:.1f} against this run's reference if the decoder were nothing but matrix "
          "products at full speed (no elementwise passes, no filters)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="mobile_sam")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = AMGSettings(points_per_side=args.points_per_side)
    windows = load_windows(args.windows)
    reference = build_mask_generator(args.model, settings=settings, impl="reference", device=args.device)
    fast = build_mask_generator(args.model, settings=settings, impl="fast", device=args.device)
    warm = windows[0][1][:128, :128]  # load everything once, with a cheap grid
    tiny = AMGSettings(points_per_side=2)
    for impl in ("reference", "fast"):
        build_mask_generator(args.model, settings=tiny, impl=impl, device=args.device).generate(warm)
    ref_stages = StageTimer(reference)
    print(f"{args.model}, {args.points_per_side}x{args.points_per_side} points, {args.threads} thread(s), "
          f"device {args.device}, {len(windows)} window(s) of 400x512")
    totals = {"ref": [0.0, 0.0], "fast": [0.0, 0.0]}
    fast_stages: dict[str, float] = {}
    fast_stats: dict[str, int] = {}
    agree = []
    for name, image in windows:
        with clock() as t_ref:
            ref_masks = reference.generate(image)
        with clock() as t_fast:
            fast_masks = fast.generate(image)
        for key, value in fast.timings.items():
            fast_stages[key] = fast_stages.get(key, 0.0) + value
        for key, value in fast.stats.items():
            fast_stats[key] = fast_stats.get(key, 0) + value
        totals["ref"][0] += t_ref["wall"]
        totals["ref"][1] += t_ref["cpu"]
        totals["fast"][0] += t_fast["wall"]
        totals["fast"][1] += t_fast["cpu"]
        ref_ok, fast_ok, identical = agreement(ref_masks, fast_masks)
        agree.append((ref_ok, fast_ok, len(ref_masks), len(fast_masks)))
        print(f"  {name}: reference {t_ref['wall']:.1f} s ({len(ref_masks)} masks), "
              f"fast {t_fast['wall']:.2f} s ({len(fast_masks)} masks), "
              f"x{t_ref['wall'] / t_fast['wall']:.1f}; matched: ref {ref_ok:.1%}, "
              f"fast {fast_ok:.1%}; pixel-identical {identical}/{len(ref_masks)}", flush=True)
    n = len(windows)
    ref_all = sum(a[0] * a[2] for a in agree) / max(1, sum(a[2] for a in agree))
    fast_all = sum(a[1] * a[3] for a in agree) / max(1, sum(a[3] for a in agree))
    print("\nper window      wall s   cpu s")
    print(f"  reference  {totals['ref'][0] / n:8.2f} {totals['ref'][1] / n:7.2f}")
    print(f"  fast       {totals['fast'][0] / n:8.2f} {totals['fast'][1] / n:7.2f}")
    print(f"speed-up: x{totals['ref'][0] / totals['fast'][0]:.1f} wall, "
          f"x{totals['ref'][1] / totals['fast'][1]:.1f} cpu")
    print(f"agreement (IoU >= 0.9): {ref_all:.1%} of reference masks matched, "
          f"{fast_all:.1%} of fast masks matched")
    print("\nwhere the time goes (wall s per window)")
    ref_rest = totals["ref"][0] - sum(ref_stages.times.values())
    for label, value in [*ref_stages.times.items(), ("filters, RLE, NMS", ref_rest)]:
        print(f"  reference {label:<18} {value / n:7.2f}")
    workers = fast.workers or torch.get_num_threads()
    for label, value in fast_stages.items():  # decoder stages run on `workers` threads at once
        print(f"  fast      {label:<18} {value / n:7.2f}" + ("" if label == "encoder" else
                                                          f"  (thread-s, {workers} workers)"))
    print("fast counts per window: " + ", ".join(f"{k} {v / n:.0f}" for k, v in fast_stats.items()))
    if args.device == "cpu" and hasattr(fast, "decoder"):
        floor = decoder_floor(fast, windows[0][1])
        print_floor(floor, fast_stats, fast_stages, workers, totals["ref"][0] / n, n)
    print("\nrerun: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
