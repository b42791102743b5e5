"""GPU checks in one run (driven by ``scripts/gpu_check.sh``): what needs a CUDA machine to be seen working.

1. **sam** — fast vs reference automatic mask generator (MobileSAM, 32x32 points) on real 400x512
   windows: mask agreement both ways (IoU >= 0.9) and the speed ratio (``benchmarks/amg.py``'s calls);
2. **train** — one ``goodsam-m`` step at 400x2048 (random-init SegFormer-B5 TA -> B0 student, bf16
   autocast, cached MobileSAM masks made here): step time, peak GPU memory, finite losses, per stage;
3. **fusion** — CTCF (eq. 3) per window of that panorama on the device;
4. **eval** / **predict** — ``goodsam eval`` and ``goodsam predict`` of ESPNetv2-s0.5 on the labelled
   panorama (``labelled_panorama/cvrg_pano_0000``, Cityscapes categories) on the device;
5. **inference** — ``benchmarks/inference.py`` (PyTorch vs ONNX Runtime; ORT's CUDA provider when
   installed).

``--cpu-smoke`` runs the same code paths on the CPU at toy sizes (a 96x128 crop and 4x4 points, a
64x256 panorama with 128-wide windows, 1 training step, small eval/inference sizes) so that a test can
keep this script working without a GPU. A summary table is printed; the exit code is 1 if any check
failed (or no CUDA device is there without ``--cpu-smoke``).

    python benchmarks/gpu_check.py [--cpu-smoke] [--work outputs/gpu_check] [--only sam,train]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import amg  # noqa: E402  (benchmarks/amg.py: windows and agreement of the mask generators)
import train_step  # noqa: E402  (benchmarks/train_step.py: panoramas and cached masks for training)

from goodsam.assets import find_asset  # noqa: E402
from goodsam.dar import fuse  # noqa: E402
from goodsam.panorama.windows import crop_windows  # noqa: E402
from goodsam.profiling import StageTimer  # noqa: E402
from goodsam.sam import AMGSettings, build_mask_generator  # noqa: E402
from goodsam.train.config import load_config  # noqa: E402
from goodsam.train.data import PanoramaDataset  # noqa: E402
from goodsam.train.trainer import Trainer, make_layout  # noqa: E402

SMOKE_GEOMETRY = ["data.height=64", "data.width=256", "windows.width=128", "windows.stride=64"]


@dataclass
class Sizes:
    """What each check runs on (the GPU sizes, or toy ones for ``--cpu-smoke``)."""

    device: str
    sam_points: int
    sam_windows: int
    sam_crop: tuple[int, int] | None
    train_overrides: list[str]
    train_steps: int
    mask_points: int
    eval_size: tuple[int, int]
    eval_window: int
    inference_args: list[str]


def sizes_for(smoke: bool) -> Sizes:
    if smoke:
        return Sizes("cpu", 4, 1, (96, 128), SMOKE_GEOMETRY, 1, 2, (64, 128), 64,
                     ["--models", "espnetv2-s0.5", "--height", "64", "--width", "128", "--repeats", "1",
                      "--warmup", "0", "--no-cuda"])
    return Sizes("cuda", 32, 2, None, ["train.amp=bf16"], 3, 8, (832, 1664), 832,
                 ["--models", "espnetv2-s0.5,segformer-b0", "--repeats", "5"])


def check_sam(sizes: Sizes, args: argparse.Namespace) -> str:
    """Fast vs reference mask generation: agreement both ways and the wall-time ratio."""
    settings = AMGSettings(points_per_side=sizes.sam_points)
    windows = amg.load_windows(sizes.sam_windows)
    if sizes.sam_crop:
        windows = [(name, image[:sizes.sam_crop[0], :sizes.sam_crop[1]].copy()) for name, image in windows]
    generators = {impl: build_mask_generator("mobile_sam", settings=settings, impl=impl, device=sizes.device)
                  for impl in ("reference", "fast")}
    if not args.cpu_smoke:  # first-call costs (kernels, allocator) out of the timing
        warm = windows[0][1][:64, :64].copy()
        for generator in generators.values():
            generator.generate(warm)
    seconds = {impl: 0.0 for impl in generators}
    matched_ref, matched_fast, counts = [], [], [0, 0]
    for _, image in windows:
        masks = {}
        for impl, generator in generators.items():
            _sync(sizes.device)
            start = time.perf_counter()
            masks[impl] = generator.generate(image)
            _sync(sizes.device)
            seconds[impl] += time.perf_counter() - start
        ref_ok, fast_ok, _ = amg.agreement(masks["reference"], masks["fast"])
        matched_ref.append(ref_ok * len(masks["reference"]))
        matched_fast.append(fast_ok * len(masks["fast"]))
        counts[0] += len(masks["reference"])
        counts[1] += len(masks["fast"])
    ref_share = sum(matched_ref) / max(1, counts[0])
    fast_share = sum(matched_fast) / max(1, counts[1])
    detail = (f"{len(windows)} window(s) {windows[0][1].shape[0]}x{windows[0][1].shape[1]}, "
              f"{sizes.sam_points}x{sizes.sam_points} points: reference {seconds['reference']:.2f} s "
              f"({counts[0]} masks), fast {seconds['fast']:.2f} s ({counts[1]} masks), "
              f"x{seconds['reference'] / max(seconds['fast'], 1e-9):.1f}; matched ref {ref_share:.1%}, "
              f"fast {fast_share:.1%}")
    if counts[0] == 0 or ref_share < 0.9 or fast_share < 0.9:
        raise CheckFailed(detail)
    return detail


def _train_setup(sizes: Sizes, args: argparse.Namespace):
    overrides = train_step.config_overrides("goodsam-m", sizes.mask_points, 1, sizes.train_overrides)
    config = load_config("goodsam-m", overrides)
    data, masks = train_step.prepare_data(args.work, config, 1, sizes.device)
    return config, data, masks


def check_train(sizes: Sizes, args: argparse.Namespace) -> str:
    """goodsam-m steps: time (median after the first), peak memory, finite losses, slowest stages."""
    config, data, masks = _train_setup(sizes, args)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, data, masks, run_dir, device=sizes.device, progress=False,
                          tensorboard=False)
        trainer.timer = timer = StageTimer(trainer.device)
        times, stages, scalars = [], [], {}
        try:
            for step in range(sizes.train_steps):
                timer.reset()
                if trainer.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(trainer.device)
                _sync(sizes.device)
                start = time.perf_counter()
                scalars = trainer.train_step(step)
                _sync(sizes.device)
                times.append(time.perf_counter() - start)
                stages.append(timer.snapshot())
            peak = (torch.cuda.max_memory_allocated(trainer.device) / 2**30
                    if trainer.device.type == "cuda" else float("nan"))
            autocast = trainer.autocast_dtype
        finally:
            trainer.close()
    later = stages[1:] or stages
    slowest = sorted(later[0], key=lambda k: -statistics.median(s.get(k, 0.0) for s in later))[:3]
    stage_text = ", ".join(f"{k} {statistics.median(s.get(k, 0.0) for s in later):.2f} s" for k in slowest)
    step_time = statistics.median(times[1:] or times)
    losses = {k: scalars[k] for k in ("student", "ta", "total")}
    detail = (f"{config.data.height}x{config.data.width}, {config.ta.architecture} -> "
              f"{config.student.architecture}, autocast {autocast}: step {step_time:.2f} s (first "
              f"{times[0]:.2f} s), peak {'n/a (CPU)' if math.isnan(peak) else f'{peak:.1f} GiB'}; losses "
              + ", ".join(f"{k} {v:.3f}" for k, v in losses.items()) + f"; slowest: {stage_text}")
    if not all(math.isfinite(v) for v in scalars.values()):
        raise CheckFailed("non-finite loss: " + detail)
    return detail


def check_fusion(sizes: Sizes, args: argparse.Namespace) -> str:
    """CTCF per window of the cached panorama, on the device (random TA logits)."""
    config, data, masks = _train_setup(sizes, args)
    layout = make_layout(config)
    sample = PanoramaDataset(data, masks, layout)[0]
    device = torch.device(sizes.device)
    generator = torch.Generator().manual_seed(0)
    windows = crop_windows(sample.image, layout)
    logits = torch.randn((windows.shape[0], 19, *windows.shape[-2:]), generator=generator).to(device)
    window_masks = [torch.as_tensor(m.masks, device=device) for m in sample.window_masks]
    fuse("ctcf", window_masks[0], logits[0])  # warm-up
    times = []
    for masks_i, logits_i in zip(window_masks, logits, strict=True):
        _sync(sizes.device)
        start = time.perf_counter()
        result = fuse("ctcf", masks_i, logits_i)
        _sync(sizes.device)
        times.append(time.perf_counter() - start)
        if result.labels.shape != logits_i.shape[-2:]:
            raise CheckFailed(f"fusion labels of shape {tuple(result.labels.shape)}")
    count = sum(len(m) for m in sample.window_masks)
    return (f"{len(times)} windows {windows.shape[-2]}x{windows.shape[-1]}, {count} masks: median "
            f"{statistics.median(times) * 1e3:.1f} ms per window (max {max(times) * 1e3:.1f} ms)")


def _cli(arguments: list, timeout: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "goodsam.cli", *(str(a) for a in arguments)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise CheckFailed(f"`goodsam {arguments[0]}` exited {result.returncode}: "
                          f"{(result.stderr or result.stdout).strip()[-400:]}")
    return result


def check_eval(sizes: Sizes, args: argparse.Namespace) -> str:
    """``goodsam eval`` of ESPNetv2-s0.5 on the labelled panorama (Cityscapes categories)."""
    folder = find_asset("labelled_panorama")
    out = args.work / "eval"
    height, width = sizes.eval_size
    start = time.perf_counter()
    _cli(["eval", "espnetv2-s0.5", "--images", folder / "cvrg_pano_0000.png", "--labels", folder,
          "--label-pattern", "{stem}_categoryIds.png", "--class-map", "categories7", "--height", height,
          "--width", width, "--window", sizes.eval_window, "--device", sizes.device, "--out", out],
         args.timeout)
    report = json.loads((out / "results.json").read_text())
    detail = (f"{height}x{width}, windows {sizes.eval_window}: category mIoU {report['miou']:.1f}, "
              f"pixel accuracy {report['pixel_accuracy']:.1f} % in {time.perf_counter() - start:.1f} s")
    if not 0.0 < report["miou"] <= 100.0:
        raise CheckFailed(detail)
    return detail


def check_predict(sizes: Sizes, args: argparse.Namespace) -> str:
    """``goodsam predict`` of ESPNetv2-s0.5 on the labelled panorama: labels, overlay, gallery."""
    folder = find_asset("labelled_panorama")
    out = args.work / "predict"
    height, width = sizes.eval_size
    start = time.perf_counter()
    _cli(["predict", "espnetv2-s0.5", folder / "cvrg_pano_0000.png", "--out", out, "--height", height,
          "--width", width, "--device", sizes.device], args.timeout)
    written = [out / "labels" / "cvrg_pano_0000.png", out / "overlays" / "cvrg_pano_0000.png",
               out / "index.html"]
    missing = [str(p) for p in written if not p.is_file()]
    if missing:
        raise CheckFailed(f"missing outputs: {', '.join(missing)}")
    return f"{height}x{width}: labels, overlay and gallery written in {time.perf_counter() - start:.1f} s"


def check_inference(sizes: Sizes, args: argparse.Namespace) -> str:
    """``benchmarks/inference.py``: PyTorch vs ONNX Runtime images/s (CUDA provider when installed)."""
    import onnxruntime as ort

    command = [sys.executable, str(HERE / "inference.py"), *sizes.inference_args, "--threads",
               str(torch.get_num_threads())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    if result.returncode != 0:
        raise CheckFailed(f"inference.py exited {result.returncode}: {result.stderr.strip()[-400:]}")
    print(result.stdout.rstrip(), flush=True)
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    cuda_ep = "CUDAExecutionProvider" in ort.get_available_providers()
    return f"{len(rows)} model(s) timed; onnxruntime CUDA provider {'present' if cuda_ep else 'absent'}"


class CheckFailed(RuntimeError):
    """A check ran but its result is wrong."""


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


CHECKS: dict[str, Callable[[Sizes, argparse.Namespace], str]] = {
    "sam": check_sam, "train": check_train, "fusion": check_fusion, "eval": check_eval,
    "predict": check_predict, "inference": check_inference,
}


def summary_table(rows: list[tuple[str, str, float, str]]) -> str:
    lines = ["| check | result | seconds | details |", "|---|---|---:|---|"]
    lines += [f"| {name} | {status} | {seconds:.1f} | {detail.replace('|', '/')} |"
              for name, status, seconds, detail in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="the same code paths at toy sizes on CPU")
    parser.add_argument("--work", type=Path, default=Path("outputs/gpu_check"),
                        help="folder for panoramas, cached masks and eval/predict outputs")
    parser.add_argument("--only", default=",".join(CHECKS), help="comma-separated subset of the checks")
    parser.add_argument("--timeout", type=int, default=300, help="seconds for each command-line check")
    args = parser.parse_args(argv)
    sizes = sizes_for(args.cpu_smoke)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --cpu-smoke for the CPU smoke run)", file=sys.stderr)
        return 1
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = torch.cuda.get_device_name() if sizes.device == "cuda" else "CPU"
    print(f"gpu_check on {device} ({'cpu smoke, toy sizes' if args.cpu_smoke else 'full sizes'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)", flush=True)
    rows = []
    total = time.perf_counter()
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in CHECKS:
            parser.error(f"unknown check '{name}'; choose from {', '.join(CHECKS)}")
        start = time.perf_counter()
        try:
            detail, status = CHECKS[name](sizes, args), "ok"
        except Exception as exc:  # noqa: BLE001 - every failure is reported, then the exit code says so
            if not isinstance(exc, CheckFailed):
                traceback.print_exc()
            detail, status = f"{type(exc).__name__}: {exc}", "FAIL"
        rows.append((name, status, time.perf_counter() - start, detail))
        print(f"[{status}] {name} ({rows[-1][2]:.1f} s): {detail}", flush=True)
    print(f"\n{summary_table(rows)}\n\ntotal {time.perf_counter() - total:.1f} s")
    failed = [row[0] for row in rows if row[1] != "ok"]
    if failed:
        print(f"gpu_check: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
