"""Benchmark: student sizes at 400x2048 — params, FLOPs, images/s in PyTorch eager vs ONNX Runtime.

Every model is built with random weights (speed does not depend on them). FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` on one image (it counts 2 FLOPs per multiply-add, and only
the ops it knows: convolutions, matmuls, attention). Throughput is batch 1, the median of ``--repeats``
timed runs after ``--warmup`` untimed ones; the ONNX model is exported in the same run with
``goodsam.export.export_onnx``. PyTorch and ONNX Runtime use the same number of CPU threads. CUDA columns
appear when a GPU is present (ONNX Runtime on CUDA only with onnxruntime-gpu).

    python benchmarks/inference.py                       # all students at 400x2048
    python benchmarks/inference.py --quick               # espnetv2-s0.5 and segformer-b0, 200x1024, 2 runs
    python benchmarks/inference.py --models espnetv2-s2.0 --repeats 10 --threads 4
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
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
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model.segment(images)
    return counter.get_total_flops()


def bench_model(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, float | str]:
    model = build_segmenter(name, pretrained=False).eval()
    images = torch.randint(0, 256, (1, 3, args.height, args.width), dtype=torch.uint8)
    row: dict[str, float | str] = {"model": name,
                                   "params": sum(p.numel() for p in model.parameters()) / 1e6,
                                   "gflops": count_flops(model, images) / 1e9}

    def eager() -> object:
        with torch.inference_mode():
            return model.segment(images)

    row["torch_cpu"] = 1.0 / median_seconds(eager, args.warmup, args.repeats, lambda: None)
    path = export_onnx(model, workdir / f"{name}.onnx", args.height, args.width)
    session = OnnxSegmenter(path, threads=args.threads)
    row["ort_cpu"] = 1.0 / median_seconds(lambda: session.segment(images), args.warmup, args.repeats,
                                          lambda: None)
    if args.cuda:
        gpu_model, gpu_images = model.to("cuda"), images.to("cuda")

        def eager_gpu() -> object:
            with torch.inference_mode():
                return gpu_model.segment(gpu_images)

        row["torch_cuda"] = 1.0 / median_seconds(eager_gpu, args.warmup, args.repeats, torch.cuda.synchronize)
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            gpu_session = OnnxSegmenter(path, device="cuda")
            row["ort_cuda"] = 1.0 / median_seconds(lambda: gpu_session.segment(images), args.warmup,
                                                   args.repeats, lambda: None)
    return row


def table(rows: list[dict[str, float | str]], cuda: bool) -> str:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(STUDENTS), help="comma-separated zoo names")
    parser.add_argument("--height", type=int, default=400)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads for both")
    parser.add_argument("--no-cuda", dest="cuda", action="store_false", help="skip the CUDA columns")
    parser.add_argument("--quick", action="store_true",
                        help="espnetv2-s0.5 and segformer-b0 at 200x1024, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.height, args.width, args.repeats = "espnetv2-s0.5,segformer-b0", 200, 1024, 2
    args.cuda = args.cuda and torch.cuda.is_available()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    print(f"# inference at {args.height}x{args.width}, batch 1, median of {args.repeats} "
          f"(warmup {args.warmup}); torch {torch.__version__}, onnxruntime {ort.__version__}, "
          f"{args.threads} CPU threads on {platform.processor() or platform.machine()}"
          + (f", GPU {torch.cuda.get_device_name()}" if args.cuda else ""), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            started = time.perf_counter()
            rows.append(bench_model(name.strip(), args, Path(tmp)))
            print(f"  {name}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print(table(rows, args.cuda))
    return 0


if __name__ == "__main__":
    sys.exit(main())
