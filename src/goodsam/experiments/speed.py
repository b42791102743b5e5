"""Student sizes at 400x2048: params, FLOPs, images/s in PyTorch eager vs ONNX Runtime.

Every model is built with random weights (speed does not depend on them). FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` on one image (2 FLOPs per multiply-add, and only the ops it
knows: convolutions, matmuls, attention). Throughput is batch 1, the median of ``repeats`` timed runs
after ``warmup`` untimed ones; the ONNX model is exported in the same run with
:func:`goodsam.export.export_onnx`. PyTorch and ONNX Runtime use the same number of CPU threads. CUDA
columns when asked for (ONNX Runtime on CUDA only with onnxruntime-gpu).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from goodsam.export import export_onnx
from goodsam.inference import OnnxSegmenter
from goodsam.segmenters import build_segmenter

STUDENTS = ("espnetv2-s0.5", "espnetv2-s1.0", "espnetv2-s1.5", "espnetv2-s2.0",
            "segformer-b0", "segformer-b1", "segformer-b2")


def median_seconds(run: Callable[[], object], warmup: int, repeats: int, sync: Callable[[], None]) -> float:
    """Median seconds of ``repeats`` calls of ``run`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_flops(model: torch.nn.Module, images: torch.Tensor) -> int:
    """FLOPs of one ``model.segment(images)`` as ``FlopCounterMode`` counts them."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model.segment(images)
    return counter.get_total_flops()


def bench_model(name: str, height: int, width: int, warmup: int, repeats: int, threads: int, cuda: bool,
                workdir: Path) -> dict[str, float | str]:
    """One table row: params (M), GFLOPs, images/s of PyTorch and ORT on the CPU (and CUDA)."""
    model = build_segmenter(name, pretrained=False).eval()
    images = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8)
    row: dict[str, float | str] = {"model": name,
                                   "params": sum(p.numel() for p in model.parameters()) / 1e6,
                                   "gflops": count_flops(model, images) / 1e9}

    def eager() -> object:
        with torch.inference_mode():
            return model.segment(images)

    row["torch_cpu"] = 1.0 / median_seconds(eager, warmup, repeats, lambda: None)
    path = export_onnx(model, workdir / f"{name}.onnx", height, width)
    session = OnnxSegmenter(path, threads=threads)
    row["ort_cpu"] = 1.0 / median_seconds(lambda: session.segment(images), warmup, repeats, lambda: None)
    if cuda:
        gpu_model, gpu_images = model.to("cuda"), images.to("cuda")

        def eager_gpu() -> object:
            with torch.inference_mode():
                return gpu_model.segment(gpu_images)

        row["torch_cuda"] = 1.0 / median_seconds(eager_gpu, warmup, repeats, torch.cuda.synchronize)
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            gpu_session = OnnxSegmenter(path, device="cuda")
            row["ort_cuda"] = 1.0 / median_seconds(lambda: gpu_session.segment(images), warmup, repeats,
                                                   lambda: None)
    return row


def table(rows: list[dict[str, float | str]], cuda: bool) -> str:
    """The markdown table of :func:`bench_model` rows, with the ORT/PyTorch ratios."""
    columns = [("model", "model", "{}"), ("params", "params (M)", "{:.2f}"), ("gflops", "GFLOPs", "{:.1f}"),
               ("torch_cpu", "PyTorch CPU img/s", "{:.2f}"), ("ort_cpu", "ORT CPU img/s", "{:.2f}"),
               ("cpu_ratio", "ORT/PyTorch CPU", "{:.2f}x")]
    if cuda:
        columns += [("torch_cuda", "PyTorch CUDA img/s", "{:.1f}"), ("ort_cuda", "ORT CUDA img/s", "{:.1f}"),
                    ("cuda_ratio", "ORT/PyTorch CUDA", "{:.2f}x")]
    for row in rows:
        row["cpu_ratio"] = row["ort_cpu"] / row["torch_cpu"]
        if "ort_cuda" in row:
            row["cuda_ratio"] = row["ort_cuda"] / row["torch_cuda"]
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |",
             "|" + "|".join("---" if key == "model" else "---:" for key, _, _ in columns) + "|"]
    for row in rows:
        cells = [fmt.format(row[key]) if key in row else "—" for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
