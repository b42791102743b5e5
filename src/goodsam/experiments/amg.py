"""Reference vs fast SAM automatic mask generator on real panorama windows (issue 6).

Both generators use the same model and settings on the same 400x512 windows, cut from the bundled PASS
panoramas resized to 400x2048 (DensePASS size). :func:`compare_generators` times both on each window
and measures the mask agreement both ways (share of reference masks matched by a fast mask with
IoU >= 0.9, and of fast masks matched by a reference mask). :func:`decoder_floor` gives the arithmetic
bound of the fast decoder on the CPU: its floating-point work per prompt (its matrix products, counted
with ``torch.utils.flop_counter``) at this core's float32 matrix-product rate, measured in the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from goodsam.assets import find_asset
from goodsam.sam import MaskSet, fast_decoder, native, onnx_encoder

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


@dataclass
class WindowComparison:
    """Both generators on one window: wall and process CPU seconds, mask counts, agreement."""

    name: str
    shape: tuple[int, int]
    wall: dict[str, float]
    cpu: dict[str, float]
    masks: dict[str, int]
    ref_ok: float
    fast_ok: float
    identical: int
    fast_timings: dict[str, float]
    fast_stats: dict[str, int]


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def compare_generators(reference, fast, windows: list[tuple[str, np.ndarray]],
                       device: str = "cpu") -> Iterator[WindowComparison]:
    """The reference, then the fast generator on each window (timed, the device synchronised)."""
    for name, image in windows:
        masks, wall, cpu = {}, {}, {}
        for impl, generator in (("reference", reference), ("fast", fast)):
            _sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            masks[impl] = generator.generate(image)
            _sync(device)
            wall[impl], cpu[impl] = time.perf_counter() - start, time.process_time() - cpu_start
        ref_ok, fast_ok, identical = agreement(masks["reference"], masks["fast"])
        yield WindowComparison(name, image.shape[:2], wall, cpu, {k: len(v) for k, v in masks.items()},
                               ref_ok, fast_ok, identical, dict(getattr(fast, "timings", {})),
                               dict(getattr(fast, "stats", {})))


def matched_shares(rows: list[WindowComparison]) -> tuple[float, float]:
    """Shares of all reference / all fast masks matched (IoU >= 0.9) over the windows."""
    ref = sum(r.ref_ok * r.masks["reference"] for r in rows) / max(1, sum(r.masks["reference"] for r in rows))
    fast = sum(r.fast_ok * r.masks["fast"] for r in rows) / max(1, sum(r.masks["fast"] for r in rows))
    return ref, fast


class ReferenceStageTimer:
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


def _seconds(function: Callable[[], object], repeat: int) -> float:
    """Best-of-3 seconds of one call (each run ``repeat`` times)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            function()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def sgemm_rate() -> float:
    """This core's float32 matrix-product rate (GFLOP/s) on a cache-friendly square-ish product,
    (2048, 256) @ (256, 256): the arithmetic speed the decoder is measured against."""
    a, b = torch.randn(2048, 256), torch.randn(256, 256)
    return 2 * 2048 * 256 * 256 / _seconds(lambda: a @ b, 50) / 1e9


def _decoder_stages(fast, image: np.ndarray) -> dict[str, Callable[[], object]]:
    """The fast decoder's two stages (transform, upscale) on the first ``prompts_per_call`` prompts of the
    point grid of ``image`` (one crop), ready to run again and again."""
    model, decoder = fast.sam.model, fast.decoder
    h, w = image.shape[:2]
    job = fast.prepare_crop(image, [0, 0, w, h], 0, (h, w))
    ctx, valid, batch = job.ctx, job.upsampler.tokens, job.sparse[:fast.prompts_per_call]
    tokens = list(range(1, model.mask_decoder.num_mask_tokens))
    state = decoder.transform(ctx, batch)
    return {"transform": lambda: decoder.transform(ctx, batch),
            "upscale": lambda: decoder.masks(state, ctx, None, tokens, valid)}


def decoder_floor(fast, image: np.ndarray) -> dict[str, float]:
    """Per-prompt FLOPs (matrix products, counted with ``torch.utils.flop_counter``) and single-thread
    time of the fast decoder's two stages on ``image``, and this core's float32 matrix-product rate."""
    chunk = fast.prompts_per_call
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stages = _decoder_stages(fast, image)
        result = {"sgemm_rate": sgemm_rate()}
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


LINEAR_OPS = ("mkldnn::_linear_pointwise",)  # oneDNN's linear (x, weight (out, in)) with a fused post-op
MATMUL_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", *LINEAR_OPS)


def _operands(name: str, shapes: list) -> tuple[list[int], list[int]]:
    """The two matrix operands' shapes (batch, rows, inner) and (batch, inner, columns) of a recorded
    matrix-product op (bias operands skipped, a linear's weight transposed)."""
    if name in LINEAR_OPS:
        x, weight = shapes[:2]
        return [*x[:-1], x[-1]], [weight[1], weight[0]]
    return shapes[1:3] if name in ("aten::addmm", "aten::baddbmm") else shapes[:2]


def _matmul_flops(name: str, shapes: list) -> float:
    """FLOPs of one matrix-product op from its recorded input shapes."""
    a, b = _operands(name, shapes)
    batch = a[0] if len(a) == 3 else 1
    return 2.0 * batch * a[-2] * a[-1] * b[-1]


def _alone_seconds(name: str, shapes: list) -> float:
    """Seconds of one matrix-product op's product on fresh contiguous tensors of its shapes (this thread
    setting; post-ops left out)."""
    a, b = _operands(name, shapes)
    x, y = torch.randn(*a), torch.randn(*b)
    run = (lambda: torch.bmm(x, y)) if len(a) == 3 else (lambda: torch.mm(x, y))
    return _seconds(run, 20)


class _TimedLibrary:
    """The fused-loop library with every call timed (their sum in ``seconds``)."""

    def __init__(self, library: object) -> None:
        self._library, self.seconds = library, 0.0

    def __getattr__(self, name: str):
        function = getattr(self._library, name)

        def timed(*args):
            start = time.perf_counter()
            try:
                return function(*args)
            finally:
                self.seconds += time.perf_counter() - start
        return timed


def decoder_profile(fast, image: np.ndarray) -> dict[str, dict[str, float]]:
    """Where the fast decoder's time goes, per stage (transform, upscale) and prompt, on one thread:
    matrix products (``torch.profiler``; their FLOPs, and the same shapes timed alone on fresh contiguous
    tensors: the matrix library's own speed at those shapes), the other PyTorch operations (elementwise
    passes, copies, reductions), the fused C loops (:mod:`goodsam.sam.native`, timed per call) and the rest
    (Python and dispatch). Milliseconds and GFLOP per prompt."""
    chunk = fast.prompts_per_call
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    library = native.kernels()
    timed = _TimedLibrary(library) if library is not None else None
    original = native.kernels
    try:
        stages = _decoder_stages(fast, image)
        if timed is not None:
            native.kernels = lambda: timed
        result = {}
        for stage, run in stages.items():
            run()  # warm
            repeat = 3
            if timed is not None:
                timed.seconds = 0.0
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                        record_shapes=True) as prof:
                start = time.perf_counter()
                for _ in range(repeat):
                    run()
                wall = time.perf_counter() - start
            ops = prof.key_averages(group_by_input_shape=True)
            matmul = other = flops = alone = 0.0
            for op in ops:
                seconds = op.self_cpu_time_total / 1e6
                if op.key in MATMUL_OPS and op.input_shapes:
                    matmul += seconds
                    flops += _matmul_flops(op.key, op.input_shapes) * op.count
                    alone += _alone_seconds(op.key, op.input_shapes) * op.count
                else:
                    other += seconds
            fused = timed.seconds if timed is not None else 0.0
            per = 1e3 / (repeat * chunk)
            result[stage] = {"wall_ms": wall * per, "matmul_ms": matmul * per, "matmul_alone_ms": alone * per,
                             "matmul_gflop": flops / 1e9 / (repeat * chunk), "other_ms": other * per,
                             "fused_ms": fused * per, "rest_ms": (wall - matmul - other - fused) * per}
    finally:
        native.kernels = original
        torch.set_num_threads(previous_threads)
    return result


def profile_lines(profile: dict[str, dict[str, float]], rate: float, stats: dict[str, int],
                  encoder_s: float, workers: int, ref_wall: float, windows: int) -> list[str]:
    """:func:`decoder_profile` as text, and the floor it implies: the matrix products at their shapes'
    own speed and nothing else, against this run's reference."""
    lines = ["\nwhere the fast decoder's time goes (1 thread, ms per prompt, torch.profiler; matrix "
             "products also timed alone at the same shapes on fresh contiguous tensors)"]
    for stage, p in profile.items():
        achieved = p["matmul_gflop"] / max(p["matmul_ms"], 1e-9) * 1e3
        at_rate = p["matmul_gflop"] / rate * 1e3
        lines.append(f"  {stage:<9} {p['wall_ms']:6.2f} = matrix products {p['matmul_ms']:5.2f} "
                     f"({achieved:4.0f} GFLOP/s; alone {p['matmul_alone_ms']:5.2f}, at {rate:.0f} GFLOP/s "
                     f"{at_rate:5.2f}) + other PyTorch ops {p['other_ms']:5.2f} + fused C loops "
                     f"{p['fused_ms']:5.2f} + Python/dispatch {p['rest_ms']:5.2f}")
    prompts = {"transform": stats.get("prompts", 0) / windows,
               "upscale": stats.get("upscaled_prompts", 0) / windows}
    def per_window(key: str) -> float:
        return sum(prompts[stage] * p[key] for stage, p in profile.items()) / 1e3 / workers
    measured = per_window("wall_ms")
    floor = per_window("matmul_alone_ms")
    products = per_window("matmul_ms")
    best = floor + encoder_s
    lines.append(f"  per window on {workers} workers: decoder {measured:.2f} s as profiled; its matrix "
                 f"products {products:.2f} s ({floor:.2f} s alone). Floor of this factorisation with this "
                 f"matrix library (its products alone, nothing else, + encoder {encoder_s:.2f} s): "
                 f"{best:.2f} s, x{ref_wall / best:.1f} against this run's reference")
    return lines


def floor_lines(floor: dict[str, float], stats: dict[str, int], stages: dict[str, float], workers: int,
                ref_wall: float, windows: int) -> list[str]:
    """The fast decoder's arithmetic bound as text: its FLOPs at this core's matrix-product rate."""
    rate = floor["sgemm_rate"]
    lines = [f"\narithmetic bound of the fast decoder (1 thread; FLOPs of its matrix products counted; "
             f"this core's float32 matrix-product rate {rate:.0f} GFLOP/s, measured now)"]
    for stage in ("transform", "upscale"):
        gflop, ms = floor[f"{stage}_gflop"], floor[f"{stage}_ms"]
        lines.append(f"  {stage:<10} {gflop:6.3f} GFLOP/prompt in {ms:6.2f} ms = {gflop / ms * 1e3:5.1f} "
                     f"GFLOP/s ({gflop / ms * 1e3 / rate:.0%} of that rate)")
    prompts = stats.get("prompts", 0) / windows
    upscaled = stats.get("upscaled_prompts", 0) / windows
    arithmetic = (prompts * floor["transform_gflop"] + upscaled * floor["upscale_gflop"]) / rate / workers
    encoder = stages.get("encoder", 0.0) / windows
    best = arithmetic + encoder
    lines.append(f"  per window: {prompts:.0f} prompts, {upscaled:.0f} upscaled -> decoder arithmetic at "
                 f"that rate {arithmetic:.2f} s on {workers} workers + encoder {encoder:.2f} s = "
                 f"{best:.2f} s: "
                 f"x{ref_wall / best:.1f} against this run's reference if the decoder were nothing but "
                 "matrix products at full speed (no elementwise passes, no filters)")
    return lines


def encoder_batch_seconds(fast, images: list[np.ndarray], batch: int, device: str = "cpu"
                          ) -> tuple[float, float, bool]:
    """Seconds per image of the fast generator's image encoder, one image per call and ``batch`` per
    call (the same images, warm), and whether the batched features equal the single ones exactly."""
    _sync(device)
    start = time.perf_counter()
    single = [fast.encode([image])[0] for image in images]
    _sync(device)
    one = (time.perf_counter() - start) / len(images)
    start = time.perf_counter()
    batched = [item for k in range(0, len(images), batch) for item in fast.encode(images[k:k + batch])]
    _sync(device)
    many = (time.perf_counter() - start) / len(images)
    same = all(a[1] == b[1] and torch.equal(a[0], b[0]) for a, b in zip(single, batched, strict=True))
    return one, many, same


def encoder_runtime_seconds(fast, images: list[np.ndarray]) -> dict[str, float]:
    """Seconds per image of SAM's image encoder in PyTorch and in ONNX Runtime (the fast generator's CPU
    default, :mod:`goodsam.sam.onnx_encoder`), warm, on the same images, and the largest difference of
    their features relative to the largest feature (``max_rel_diff``)."""
    previous = fast.image_encoder
    encoders = {"torch": fast.sam.model.image_encoder,
                "onnxruntime": onnx_encoder.image_encoder(fast.sam, "onnxruntime")[0]}
    result, features = {}, {}
    try:
        for name, encoder in encoders.items():
            fast.image_encoder = encoder
            fast.encode(images[:1])  # warm
            start = time.perf_counter()
            features[name] = [fast.encode([image])[0][0] for image in images]
            result[name] = (time.perf_counter() - start) / len(images)
    finally:
        fast.image_encoder = previous
    result["max_rel_diff"] = max(float((a - b).abs().max() / a.abs().max())
                                 for a, b in zip(features["torch"], features["onnxruntime"], strict=True))
    return result
