"""The GPU checks (driven by ``benchmarks/gpu_check.py`` / ``scripts/gpu_check.sh``): what needs a CUDA
machine to be seen working.

1. **sam** — fast vs reference automatic mask generator (MobileSAM, 32x32 points) on real 400x512
   windows: mask agreement both ways (IoU >= 0.9) and the speed ratio (:mod:`.amg`);
2. **train** — one ``goodsam-m`` step at 400x2048 (random-init SegFormer-B5 TA -> B0 student, bf16
   autocast, cached MobileSAM masks made here): step time, peak GPU memory, finite losses, per stage;
3. **fusion** — CTCF (eq. 3) per window of that panorama on the device;
4. **eval** / **predict** — ``goodsam eval`` and ``goodsam predict`` of ESPNetv2-s0.5 on the labelled
   panorama (``labelled_panorama/cvrg_pano_0000``, Cityscapes categories) on the device;
5. **inference** — PyTorch vs ONNX Runtime (:mod:`.speed`; ORT's CUDA provider when installed).

``smoke`` sizes run the same code paths on the CPU at toy sizes (a 96x128 crop and 4x4 points, a 64x256
panorama with 128-wide windows, 1 training step, small eval/inference sizes), so that a test can keep the
checks working without a GPU. Each check returns a line of details or raises (:class:`CheckFailed` when
it ran but its result is wrong).
"""

from __future__ import annotations

import json
import math
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

from goodsam.assets import find_asset
from goodsam.dar import fuse
from goodsam.experiments import amg, speed
from goodsam.experiments.train_step import config_overrides, prepare_data
from goodsam.panorama.windows import crop_windows
from goodsam.profiling import time_train_steps
from goodsam.sam import AMGSettings, build_mask_generator
from goodsam.train.config import load_config
from goodsam.train.data import PanoramaDataset
from goodsam.train.trainer import Trainer, make_layout

SMOKE_GEOMETRY = ["data.height=64", "data.width=256", "windows.width=128", "windows.stride=64"]
LABELLED_IMAGE = "cvrg_pano_0000.png"


class CheckFailed(RuntimeError):
    """A check ran but its result is wrong."""


@dataclass
class Setup:
    """What each check runs on (the GPU sizes, or toy ones on the CPU), where it writes, its time limit."""

    device: str
    sam_points: int
    sam_windows: int
    sam_crop: tuple[int, int] | None
    train_overrides: list[str]
    train_steps: int
    mask_points: int
    eval_size: tuple[int, int]
    eval_window: int
    inference: dict  # keyword arguments of speed.bench_model but the name and folder
    inference_models: tuple[str, ...]
    work: Path
    timeout: int  # seconds for each command-line check


def setup_for(smoke: bool, work: Path, timeout: int = 300) -> Setup:
    """The sizes of the CPU smoke run (``smoke``) or of the full GPU run."""
    if smoke:
        return Setup("cpu", 4, 1, (96, 128), SMOKE_GEOMETRY, 1, 2, (64, 128), 64,
                     {"height": 64, "width": 128, "warmup": 0, "repeats": 1, "cuda": False},
                     ("espnetv2-s0.5",), work, timeout)
    return Setup("cuda", 32, 2, None, ["train.amp=bf16"], 3, 8, (832, 1664), 832,
                 {"height": 400, "width": 2048, "warmup": 1, "repeats": 5, "cuda": torch.cuda.is_available()},
                 ("espnetv2-s0.5", "segformer-b0"), work, timeout)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def check_sam(setup: Setup) -> str:
    """Fast vs reference mask generation: agreement both ways and the wall-time ratio."""
    settings = AMGSettings(points_per_side=setup.sam_points)
    windows = amg.load_windows(setup.sam_windows)
    if setup.sam_crop:
        windows = [(name, image[:setup.sam_crop[0], :setup.sam_crop[1]].copy()) for name, image in windows]
    generators = {impl: build_mask_generator("mobile_sam", settings=settings, impl=impl, device=setup.device)
                  for impl in ("reference", "fast")}
    if setup.device == "cuda":  # first-call costs (kernels, allocator) out of the timing
        warm = windows[0][1][:64, :64].copy()
        for generator in generators.values():
            generator.generate(warm)
    rows = list(amg.compare_generators(generators["reference"], generators["fast"], windows, setup.device))
    seconds = {impl: sum(r.wall[impl] for r in rows) for impl in generators}
    counts = [sum(r.masks[impl] for r in rows) for impl in generators]
    ref_share, fast_share = amg.matched_shares(rows)
    detail = (f"{len(windows)} window(s) {windows[0][1].shape[0]}x{windows[0][1].shape[1]}, "
              f"{setup.sam_points}x{setup.sam_points} points: reference {seconds['reference']:.2f} s "
              f"({counts[0]} masks), fast {seconds['fast']:.2f} s ({counts[1]} masks), "
              f"x{seconds['reference'] / max(seconds['fast'], 1e-9):.1f}; matched ref {ref_share:.1%}, "
              f"fast {fast_share:.1%}")
    if counts[0] == 0 or ref_share < 0.9 or fast_share < 0.9:
        raise CheckFailed(detail)
    return detail


def _train_setup(setup: Setup):
    overrides = config_overrides("goodsam-m", setup.mask_points, 1, setup.train_overrides)
    config = load_config("goodsam-m", overrides)
    data, masks = prepare_data(setup.work, config, 1, setup.device)
    return config, data, masks


def check_train(setup: Setup) -> str:
    """goodsam-m steps: time (median after the first), peak memory, finite losses, slowest stages."""
    config, data, masks = _train_setup(setup)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, data, masks, run_dir, device=setup.device, progress=False,
                          tensorboard=False)
        try:
            timings = time_train_steps(trainer, setup.train_steps)
            autocast = trainer.autocast_dtype
        finally:
            trainer.close()
    times, stages, scalars = [t.seconds for t in timings], [t.stages for t in timings], timings[-1].scalars
    peak = timings[-1].peak_gib
    later = stages[1:] or stages
    slowest = sorted(later[0], key=lambda k: -statistics.median(s.get(k, 0.0) for s in later))[:3]
    stage_text = ", ".join(f"{k} {statistics.median(s.get(k, 0.0) for s in later):.2f} s" for k in slowest)
    step_time = statistics.median(times[1:] or times)
    losses = {k: scalars[k] for k in ("student", "ta", "total")}
    detail = (f"{config.data.height}x{config.data.width}, {config.ta.architecture} -> "
              f"{config.student.architecture}, autocast {autocast}: step {step_time:.2f} s (first "
              f"{times[0]:.2f} s), peak {'n/a (CPU)' if peak is None else f'{peak:.1f} GiB'}; losses "
              + ", ".join(f"{k} {v:.3f}" for k, v in losses.items()) + f"; slowest: {stage_text}")
    if not all(math.isfinite(v) for v in scalars.values()):
        raise CheckFailed("non-finite loss: " + detail)
    return detail


def check_fusion(setup: Setup) -> str:
    """CTCF per window of the cached panorama, on the device (random TA logits)."""
    config, data, masks = _train_setup(setup)
    layout = make_layout(config)
    sample = PanoramaDataset(data, masks, layout)[0]
    device = torch.device(setup.device)
    generator = torch.Generator().manual_seed(0)
    windows = crop_windows(sample.image, layout)
    logits = torch.randn((windows.shape[0], 19, *windows.shape[-2:]), generator=generator).to(device)
    window_masks = [torch.as_tensor(m.masks, device=device) for m in sample.window_masks]
    fuse("ctcf", window_masks[0], logits[0])  # warm-up
    times = []
    for masks_i, logits_i in zip(window_masks, logits, strict=True):
        _sync(setup.device)
        start = time.perf_counter()
        result = fuse("ctcf", masks_i, logits_i)
        _sync(setup.device)
        times.append(time.perf_counter() - start)
        if result.labels.shape != logits_i.shape[-2:]:
            raise CheckFailed(f"fusion labels of shape {tuple(result.labels.shape)}")
    count = sum(len(m) for m in sample.window_masks)
    return (f"{len(times)} windows {windows.shape[-2]}x{windows.shape[-1]}, {count} masks: median "
            f"{statistics.median(times) * 1e3:.1f} ms per window (max {max(times) * 1e3:.1f} ms)")


def _on_labelled(setup: Setup, command: str, inputs: Callable[[Path], list]) -> tuple[Path, float]:
    """``goodsam COMMAND espnetv2-s0.5 INPUTS`` on the labelled panorama at the eval size on the device,
    written to ``work/COMMAND``; returns that folder and the wall time."""
    folder = find_asset("labelled_panorama")
    out = setup.work / command
    height, width = setup.eval_size
    start = time.perf_counter()
    arguments = [command, "espnetv2-s0.5", *inputs(folder), "--height", height, "--width", width,
                 "--device", setup.device, "--out", out]
    result = subprocess.run([sys.executable, "-m", "goodsam.cli", *(str(a) for a in arguments)],
                            capture_output=True, text=True, timeout=setup.timeout)
    if result.returncode != 0:
        raise CheckFailed(f"`goodsam {command}` exited {result.returncode}: "
                          f"{(result.stderr or result.stdout).strip()[-400:]}")
    return out, time.perf_counter() - start


def check_eval(setup: Setup) -> str:
    """``goodsam eval`` of ESPNetv2-s0.5 on the labelled panorama (Cityscapes categories)."""
    out, seconds = _on_labelled(setup, "eval", lambda folder: [
        "--images", folder / LABELLED_IMAGE, "--labels", folder, "--label-pattern", "{stem}_categoryIds.png",
        "--class-map", "categories7", "--window", setup.eval_window])
    report = json.loads((out / "results.json").read_text())
    height, width = setup.eval_size
    detail = (f"{height}x{width}, windows {setup.eval_window}: category mIoU {report['miou']:.1f}, "
              f"pixel accuracy {report['pixel_accuracy']:.1f} % in {seconds:.1f} s")
    if not 0.0 < report["miou"] <= 100.0:
        raise CheckFailed(detail)
    return detail


def check_predict(setup: Setup) -> str:
    """``goodsam predict`` of ESPNetv2-s0.5 on the labelled panorama: labels, overlay, gallery."""
    out, seconds = _on_labelled(setup, "predict", lambda folder: [folder / LABELLED_IMAGE])
    stem = Path(LABELLED_IMAGE).stem
    written = [out / "labels" / f"{stem}.png", out / "overlays" / f"{stem}.png", out / "index.html"]
    missing = [str(p) for p in written if not p.is_file()]
    if missing:
        raise CheckFailed(f"missing outputs: {', '.join(missing)}")
    height, width = setup.eval_size
    return f"{height}x{width}: labels, overlay and gallery written in {seconds:.1f} s"


def check_inference(setup: Setup) -> str:
    """PyTorch vs ONNX Runtime images/s (:mod:`.speed`; the CUDA provider when installed)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        rows = [speed.bench_model(name, threads=torch.get_num_threads(), workdir=Path(tmp), **setup.inference)
                for name in setup.inference_models]
    print(speed.table(rows, setup.inference["cuda"]), flush=True)
    cuda_ep = "CUDAExecutionProvider" in ort.get_available_providers()
    return f"{len(rows)} model(s) timed; onnxruntime CUDA provider {'present' if cuda_ep else 'absent'}"


CHECKS: dict[str, Callable[[Setup], str]] = {
    "sam": check_sam, "train": check_train, "fusion": check_fusion, "eval": check_eval,
    "predict": check_predict, "inference": check_inference,
}


def run_check(name: str, setup: Setup) -> tuple[str, float, str]:
    """(``ok`` or ``FAIL``, seconds, details) of one check; an unexpected error's traceback is printed."""
    start = time.perf_counter()
    try:
        detail, status = CHECKS[name](setup), "ok"
    except Exception as exc:  # noqa: BLE001 - every failure is reported, then the exit code says so
        if not isinstance(exc, CheckFailed):
            traceback.print_exc()
        detail, status = f"{type(exc).__name__}: {exc}", "FAIL"
    return status, time.perf_counter() - start, detail


def summary_table(rows: list[tuple[str, str, float, str]]) -> str:
    """Markdown: one row per check (name, ok / FAIL, seconds, details)."""
    lines = ["| check | result | seconds | details |", "|---|---|---:|---|"]
    lines += [f"| {name} | {status} | {seconds:.1f} | {detail.replace('|', '/')} |"
              for name, status, seconds, detail in rows]
    return "\n".join(lines)
