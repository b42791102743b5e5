"""Fast segment-everything: the reference algorithm with the per-prompt waste taken out.

Same model, same point grid, same filters in the same order as ``SamAutomaticMaskGenerator``:
predicted-IoU threshold, stability score on the full-resolution logits, box NMS (and the crop and
small-region steps when enabled). What changes is how the numbers are computed:

1. the mask decoder runs through :class:`~goodsam.sam.fast_decoder.FastMaskDecoder`: the
   transformer factored through the image (image-side work shared across prompts, nothing per prompt
   256 channels wide), a few prompts per call so that its tensors stay in cache;
2. the IoU head needs only the transformer, so the upscaler runs only for prompts with at least one
   mask above ``pred_iou_thresh``, and only for the three multimask tokens;
3. the reference upsamples 256x256 logits to the 1024x1024 canvas, crops the padding and resizes to
   the image. That is a separable linear map, ``R_y @ L @ R_x^T``; the two small banded matrices are
   built once per image size (by running the same two interpolations on an identity basis), and only
   the low-res rows/columns that reach the image are read. On CPU the stability score is counted
   straight from the column-resized logits, row by row, without storing the full-resolution logits
   (a fused native loop), and only the candidates it keeps get full-resolution masks and boxes;
4. optionally (``screen=True``) the stability filter is first bounded without approximation: every
   full-resolution logit is a convex combination of a small window of low-res logits, so window
   maxima/minima (counted with how many output pixels share each window) bound the full-resolution
   stability score from above, and candidates whose bound is under the threshold are rejected (the
   reference would reject them too). Measured on MobileSAM windows (32x32 points), it costs more than
   it saves, so it is off by default;
5. ``generate_batch`` runs the image encoder on several images in one call (``encoder_batch``
   images; crops of different sizes batch together, each padded to the encoder's square canvas), then
   decodes each image as ``generate`` does. The features are the same numbers as one call per image
   (tested); on CPU one image per call measured as fast, so the default batches on CUDA only;
6. prompts are decoded in small chunks by ``torch.get_num_threads()`` single-threaded workers: the
   decoder's many small operations lose most of their time in thread barriers when each one is
   parallelised (and collapse when the cores are shared), chunks of prompts are independent.
7. on the CPU the image encoder runs in ONNX Runtime (:mod:`goodsam.sam.onnx_encoder`, exported once
   per machine; ``encoder_runtime="torch"`` keeps PyTorch's): about 1.6x faster, features equal to
   float rounding.

Differences from the reference are float rounding only (re-associated sums): on real windows the
masks come out pixel-identical (tests/test_sam.py, benchmarks/amg.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops.boxes import batched_nms, box_area

from goodsam.sam import native
from goodsam.sam.base import AMGSettings, MaskGenerator, MaskSet, check_image
from goodsam.sam.compat import check_fast_path_structure, check_predictor_structure
from goodsam.sam.fast_decoder import FastMaskDecoder
from goodsam.sam.models import LoadedSam
from goodsam.sam.onnx_encoder import image_encoder

CROP_NMS_THRESH = 0.7  # segment-anything defaults for the crop layers
CROP_OVERLAP_RATIO = 512 / 1500
LOW_RES = 256


def _single_threaded_worker() -> None:
    """Worker-thread setup: one intra-op thread, and tiny floats flushed to zero (denormal arithmetic
    is 10-100x slower on CPUs; values below 1e-38 are invisible in these float32 results anyway)."""
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)


def resize_matrix(low: int, canvas: int, valid: int, out: int, device: torch.device | None = None) -> Tensor:
    """(out, low) matrix of SAM's mask resizing along one axis.

    The reference resizes ``low -> canvas`` (bilinear), keeps the first ``valid`` samples (the rest is
    padding) and resizes ``valid -> out`` (bilinear); both steps are linear and act on each axis
    separately, so applying them to the identity gives the exact composite.
    """
    basis = torch.eye(low, device=device).view(1, low, low, 1)
    x = F.interpolate(basis, (canvas, 1), mode="bilinear", align_corners=False)[:, :, :valid]
    x = F.interpolate(x, (out, 1), mode="bilinear", align_corners=False)
    return x[0, :, :, 0].transpose(0, 1).contiguous()


class _BandedRows:
    """``matrix @ x`` over dim 1 of (n, low, cols) for a banded (out, low) matrix, e.g. a resize.

    Output rows go in blocks that each read one window of input rows: the same products as the dense
    product, without the (many) zeros.
    """

    def __init__(self, matrix: Tensor, block: int = 32) -> None:
        out, low = matrix.shape
        nz = matrix != 0
        spans = []
        for b0 in range(0, out, block):
            cols = nz[b0:b0 + block].any(0).nonzero()[:, 0]
            spans.append((int(cols.min()), int(cols.max()) + 1) if len(cols) else (0, 1))
        width = max(end - start for start, end in spans)
        starts = [min(start, low - width) for start, _ in spans]
        self.weights = matrix.new_zeros(len(starts), block, width)
        for i, start in enumerate(starts):
            rows = matrix[i * block:(i + 1) * block, start:start + width]
            self.weights[i, : len(rows)] = rows
        dev = matrix.device
        index = torch.tensor(starts, device=dev)[:, None] + torch.arange(width, device=dev)
        self.index, self.out, self.width = index.flatten(), out, width

    def __call__(self, x: Tensor) -> Tensor:
        n, _, cols = x.shape
        gathered = x.index_select(1, self.index).view(n, -1, self.width, cols)
        return torch.matmul(self.weights, gathered).view(n, -1, cols)[:, : self.out]


class MaskUpsampler:
    """Low-res logits (n, 256, 256) -> logits at the image's size, equal to ``Sam.postprocess_masks``."""

    def __init__(self, canvas: int, input_size: tuple[int, int], orig_size: tuple[int, int],
                 device: torch.device) -> None:
        self.ry = resize_matrix(LOW_RES, canvas, input_size[0], orig_size[0], device)
        self.rx = resize_matrix(LOW_RES, canvas, input_size[1], orig_size[1], device)
        self.ky = int(self.ry.abs().sum(0).nonzero().max()) + 1  # low-res rows that reach the image
        self.kx = int(self.rx.abs().sum(0).nonzero().max()) + 1
        self.ry, self.rx_t = self.ry[:, : self.ky].contiguous(), self.rx[:, : self.kx].t().contiguous()
        self.tokens = (-(-self.ky // 4), -(-self.kx // 4))  # image tokens whose upscaled pixels are used
        wy, wx = _tap_windows(self.ry), _tap_windows(self.rx_t.t())
        self.windows = (wy, wx) if wy is not None and wx is not None else None
        self.banded = (_BandedRows(self.ry), _BandedRows(self.rx_t.t())) if device.type == "cpu" else None
        self.row_taps = _row_taps(self.ry)
        self.col_taps = _row_taps(self.rx_t.t())

    def crop(self, low: Tensor) -> Tensor:
        """The part of the low-res logits that the image sees."""
        return low[..., : self.ky, : self.kx]

    def __call__(self, low: Tensor) -> Tensor:
        low = self.crop(low)
        if self.banded is None:  # dense products: what a GPU prefers
            return torch.matmul(self.ry, torch.matmul(low, self.rx_t))
        rows, cols = self.banded
        return rows(cols(low.transpose(1, 2)).transpose(1, 2))

    def stability(self, low: Tensor, threshold: float, offset: float) -> tuple[Tensor, Tensor] | None:
        """Stability scores of cropped low-res logits at full resolution, counted without storing the
        full-resolution logits (the fused native loop, CPU), with the logits resized along the columns
        (for :meth:`masks`); None where that loop is unavailable."""
        if not native.usable(low) or len(low) == 0:
            return None
        low = low.contiguous()
        start, weights = self.col_taps
        cols = low.new_empty(len(low), low.shape[1], weights.shape[0])  # (n, ky, W): resized along x
        native.kernels().resize_cols(low.data_ptr(), len(low), low.shape[1], low.shape[2], start.data_ptr(),
                                     weights.data_ptr(), weights.shape[0], weights.shape[1], cols.data_ptr())
        start, weights = self.row_taps
        counts = torch.empty(2, len(low), dtype=torch.int32)
        native.kernels().stability_counts(cols.data_ptr(), len(low), cols.shape[1], cols.shape[2],
                                          start.data_ptr(), weights.data_ptr(), weights.shape[0],
                                          weights.shape[1],
                                          float(threshold + offset), float(threshold - offset),
                                          counts[0].data_ptr(), counts[1].data_ptr())
        return counts[0] / counts[1], cols

    def masks(self, cols: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
        """Full-resolution binary masks and their XYXY boxes from column-resized logits (from
        :meth:`stability`), in one native pass (rows resized, thresholded, boxed)."""
        start, weights = self.row_taps
        n, h = len(cols), weights.shape[0]
        masks = torch.empty(n, h, cols.shape[2], dtype=torch.bool)
        boxes = torch.empty(n, 4, dtype=torch.int64)
        if n:
            native.kernels().threshold_masks(cols.data_ptr(), n, cols.shape[1], cols.shape[2],
                                             start.data_ptr(), weights.data_ptr(), h, weights.shape[1],
                                             float(threshold),
                                             masks.data_ptr(), boxes.data_ptr())
        return masks, boxes

    def stability_upper_bound(self, low: Tensor, threshold: float, offset: float) -> Tensor | None:
        """An upper bound of the full-resolution stability score of cropped low-res logits, per mask.

        Every output pixel is a convex combination of a window of inputs, so it can exceed
        ``threshold + offset`` only if the window's maximum does and it surely exceeds
        ``threshold - offset`` if the window's minimum does. Counting output pixels through their
        windows (with multiplicities) bounds the intersection from above and the union from below;
        a mask whose bound is under the stability threshold is rejected exactly as the reference would.
        """
        if self.windows is None:
            return None
        (wy, my), (wx, mx) = self.windows
        high = _window_extreme(_window_extreme(low, wy, -2, torch.maximum), wx, -1, torch.maximum)
        low_ = _window_extreme(_window_extreme(low, wy, -2, torch.minimum), wx, -1, torch.minimum)
        slack = 1e-4  # covers float rounding of the exact resize (weights summing to 1 +- ulp)
        inter = torch.einsum("i,nij,j->n", my, (high > threshold + offset - slack).to(my.dtype), mx)
        union = torch.einsum("i,nij,j->n", my, (low_ > threshold - offset + slack).to(my.dtype), mx)
        return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("inf")))


def _row_taps(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """A banded (out, in) matrix as per-row ``(start, weights)``: int32 (out,), float (out, taps) with
    ``row y = sum_j weights[y, j] * input[start[y] + j]`` (zero-padded to a common tap count)."""
    matrix = matrix.cpu()
    nz = matrix != 0
    first = torch.where(nz.any(1), nz.float().argmax(1), torch.zeros(len(matrix), dtype=torch.long))
    last = matrix.shape[1] - 1 - nz.flip(1).float().argmax(1)
    taps = max(1, int((last - first + 1).max()))
    start = first.clamp(max=matrix.shape[1] - taps)
    index = start[:, None] + torch.arange(taps)
    return start.to(torch.int32).contiguous(), matrix.gather(1, index).contiguous()


def _tap_windows(matrix: Tensor) -> tuple[Tensor, Tensor] | None:
    """Distinct input windows ``(start, length)`` of a resize matrix's rows, with how many rows use each.

    None unless every row is a convex combination of consecutive inputs (true of bilinear resizing),
    which is what makes the stability bound below valid.
    """
    nz = matrix > 0
    if (matrix < 0).any() or not torch.allclose(matrix.sum(1), torch.ones_like(matrix[:, 0]), atol=1e-5):
        return None
    start = nz.float().argmax(1)
    length = nz.sum(1)
    if not torch.equal(nz.flip(1).float().argmax(1), matrix.shape[1] - start - length) or (length == 0).any():
        return None
    windows, counts = torch.unique(torch.stack([start, length], 1), dim=0, return_counts=True)
    return windows, counts.to(matrix.dtype)


def _window_extreme(x: Tensor, windows: Tensor, dim: int, op) -> Tensor:
    """``op`` (max or min) of ``x`` over each window ``(start, length)`` along ``dim``."""
    x = x.movedim(dim, -1)
    longest = int(windows[:, 1].max())
    levels, cur = [x], x
    for k in range(1, longest):
        cur = op(cur[..., :-1], x[..., k:])
        levels.append(F.pad(cur, (0, k)))
    out = torch.stack(levels, -1)[..., windows[:, 0], windows[:, 1] - 1]
    return out.movedim(-1, dim)


def stability_score(logits: Tensor, threshold: float, offset: float) -> Tensor:
    """|logits > t + offset| / |logits > t - offset| per mask (as segment-anything computes it)."""
    inter = (logits > threshold + offset).flatten(1).sum(1, dtype=torch.int32)
    union = (logits > threshold - offset).flatten(1).sum(1, dtype=torch.int32)
    return inter / union


def masks_to_boxes_xyxy(masks: Tensor) -> Tensor:
    """Inclusive XYXY boxes of (n, H, W) bool masks; zeros for empty masks (as segment-anything)."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.int64, device=masks.device)
    rows, cols = masks.any(2), masks.any(1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    bottom = torch.where(rows, ar_h, -1).amax(1)
    top = torch.where(rows, ar_h, h).amin(1)
    right = torch.where(cols, ar_w, -1).amax(1)
    left = torch.where(cols, ar_w, w).amin(1)
    boxes = torch.stack([left, top, right, bottom], 1)
    empty = (right < left) | (bottom < top)
    return boxes * (~empty).unsqueeze(1)


def near_crop_edge(boxes: Tensor, crop_box: list[int], orig_box: list[int], atol: float = 20.0) -> Tensor:
    """Boxes (crop frame) touching an inner crop edge but not the image edge."""
    offset = torch.tensor([crop_box[0], crop_box[1], crop_box[0], crop_box[1]], device=boxes.device)
    boxes = (boxes + offset).float()
    crop_t = torch.tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig_t = torch.tensor(orig_box, dtype=torch.float, device=boxes.device)
    near_crop = torch.isclose(boxes, crop_t[None], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, orig_t[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(1)


def _empty(device: torch.device, size: tuple[int, int]) -> dict[str, Tensor]:
    return {"masks": torch.zeros(0, *size, dtype=torch.bool, device=device),
            "iou": torch.zeros(0, device=device), "stability": torch.zeros(0, device=device),
            "boxes": torch.zeros(0, 4, dtype=torch.int64, device=device)}


@dataclass
class _Crop:
    """Everything the prompts of one crop share."""

    ctx: object
    sparse: Tensor
    upsampler: MaskUpsampler
    crop_box: list[int]
    orig_size: tuple[int, int]
    size: tuple[int, int]


@dataclass
class _Counter:
    """Per-call statistics and stage timings (summed over worker threads)."""

    stats: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            for key, value in counts.items():
                self.stats[key] = self.stats.get(key, 0) + int(value)

    @contextmanager
    def timed(self, name: str, device: torch.device):
        start = time.perf_counter()
        try:
            yield
        finally:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            with self.lock:
                self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


class FastMaskGenerator(MaskGenerator):
    """Segment-everything with the reference's results at a fraction of its cost (the default impl).

    ``prompts_per_call``: prompts per decoder call (few on CPU keeps tensors in cache; more on GPU).
    ``settings.points_per_batch`` only sets the reference's batching and has no effect here.
    ``encoder_batch``: images per image-encoder call in :meth:`generate_batch` (default 8 on CUDA, 1 on
    CPU, where batching measured no faster).
    ``workers``: CPU threads decoding prompt chunks in parallel, each single-threaded (default
    ``torch.get_num_threads()``): coarse parallelism, as many small operations parallelised inside
    spend their time in thread barriers, and collapse when the cores are shared.
    ``screen``: (off by default: it costs more than it saves, see the module docstring) drop
    candidates whose stability upper bound (computed on the low-res logits, see
    :meth:`MaskUpsampler.stability_upper_bound`) is below the threshold before upsampling them;
    ``encoder_runtime``: ``"auto"`` (ONNX Runtime on the CPU, PyTorch elsewhere), ``"torch"`` or
    ``"onnxruntime"`` (:func:`goodsam.sam.onnx_encoder.image_encoder`; same masks, the CPU encoder about
    1.6x faster); the one chosen is in ``encoder_runtime`` afterwards.
    ``check_screen``: also upsample what the screen drops and count in ``stats["screen_misses"]``
    the ones the exact score would have kept (a validation aid: slower; always 0 as the bound holds).
    After each call, ``stats`` counts prompts and candidates per stage and ``timings`` holds seconds
    per stage (summed over workers).
    """

    impl = "fast"

    def __init__(self, sam: LoadedSam, settings: AMGSettings, prompts_per_call: int | None = None,
                 workers: int | None = None, screen: bool = False, check_screen: bool = False,
                 encoder_batch: int | None = None, encoder_runtime: str = "auto") -> None:
        from importlib import import_module

        self.sam = sam
        self.model_name = sam.name
        self.weights_sha256 = sam.weights_sha256
        self.settings = settings.validate()
        model = sam.model
        check_fast_path_structure(model, sam.package)
        on_gpu = sam.device.type == "cuda"
        self.decoder = FastMaskDecoder(model.mask_decoder, tile=1 << 16 if on_gpu else 4096,
                                       mask_tile=1 << 16 if on_gpu else 2048)
        self.image_encoder, self.encoder_runtime = image_encoder(sam, encoder_runtime)
        self.predictor = sam.package.SamPredictor(model)
        check_predictor_structure(self.predictor)
        amg_utils = import_module(f"{sam.package.__name__}.utils.amg")
        self.point_grids = amg_utils.build_all_layer_point_grids(settings.points_per_side,
                                                                  settings.crop_n_layers, 1)
        self._generate_crop_boxes = amg_utils.generate_crop_boxes
        self._remove_small_regions = amg_utils.remove_small_regions
        self.prompts_per_call = prompts_per_call or (64 if on_gpu else 16)
        self.encoder_batch = max(1, encoder_batch or (8 if on_gpu else 1))
        self.workers = workers
        self.screen = screen
        self.check_screen = check_screen
        self.stats: dict[str, int] = {}
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def generate(self, image: np.ndarray, encoded: tuple[Tensor, tuple[int, int]] | None = None) -> MaskSet:
        """Masks of one image; ``encoded``: its :meth:`encode` output, when already computed (only
        without crop layers, where the whole image is the one crop)."""
        image = check_image(image)
        h, w = image.shape[:2]
        s = self.settings
        counter = _Counter()
        crop_boxes, layer_idxs = self._generate_crop_boxes((h, w), s.crop_n_layers, CROP_OVERLAP_RATIO)
        if encoded is not None and len(crop_boxes) > 1:
            raise ValueError("encoded features are those of the whole image: only without crop layers")
        parts = [self._process_crop(image, box, layer, (h, w), counter, encoded)
                 for box, layer in zip(crop_boxes, layer_idxs, strict=True)]
        with counter.timed("filters", self.sam.device):
            data = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
            if len(crop_boxes) > 1:
                scores = 1.0 / box_area(data["crop_boxes"].float())
                keep = batched_nms(data["boxes"].float(), scores, torch.zeros_like(scores), CROP_NMS_THRESH)
                data = {key: value[keep] for key, value in data.items()}
            if s.min_mask_region_area > 0 and len(data["masks"]):
                nms = max(s.box_nms_thresh, CROP_NMS_THRESH)
                data = self._remove_small(data, s.min_mask_region_area, nms)
        self.stats, self.timings = dict(counter.stats), dict(counter.timings)
        masks = data["masks"].cpu().numpy()
        boxes = data["boxes"].cpu().numpy().astype(np.int64)
        return MaskSet(
            masks=masks,
            area=masks.sum(axis=(1, 2)).astype(np.int64),
            predicted_iou=data["iou"].float().cpu().numpy(),
            stability_score=data["stability"].float().cpu().numpy(),
            boxes=np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1),
        )

    @torch.no_grad()
    def generate_batch(self, images: Sequence[np.ndarray]) -> list[MaskSet]:
        """Masks of several images: their encoder passes ``encoder_batch`` at a time, then each image's
        prompts as in :meth:`generate` (same masks). With crop layers, one image at a time."""
        images = [check_image(image) for image in images]
        if self.settings.crop_n_layers > 0 or self.encoder_batch < 2:
            return [self.generate(image) for image in images]
        out: list[MaskSet] = []
        for start in range(0, len(images), self.encoder_batch):
            chunk = images[start:start + self.encoder_batch]
            counter = _Counter()
            with counter.timed("encoder", self.sam.device):
                encoded = self.encode(chunk)
            for image, features in zip(chunk, encoded, strict=True):
                out.append(self.generate(image, features))
                self.timings["encoder"] = counter.timings["encoder"] / len(chunk)  # this image's share
        return out

    @torch.no_grad()
    def encode(self, crops: Sequence[np.ndarray]) -> list[tuple[Tensor, tuple[int, int]]]:
        """Image-encoder features ``(1, C, h, w)`` and resized input size of each crop, from one encoder
        call: ``SamPredictor.set_image``'s steps (resize the long side, normalise, pad to the square
        canvas) on a batch."""
        model, transform, device = self.sam.model, self.predictor.transform, self.sam.device
        inputs, sizes = [], []
        for crop in crops:
            if model.image_format != "RGB":
                crop = crop[..., ::-1]
            resized = torch.as_tensor(transform.apply_image(crop), device=device)
            resized = resized.permute(2, 0, 1).contiguous()[None]
            sizes.append(tuple(resized.shape[-2:]))
            inputs.append(model.preprocess(resized))
        features = self.image_encoder(torch.cat(inputs))
        return [(features[k:k + 1], size) for k, size in enumerate(sizes)]

    # ------------------------------------------------------------------ one crop
    def prepare_crop(self, image: np.ndarray, crop_box: list[int], layer: int, orig_size: tuple[int, int],
                     counter: _Counter | None = None,
                     encoded: tuple[Tensor, tuple[int, int]] | None = None) -> _Crop:
        """Encode one crop (unless ``encoded`` holds its :meth:`encode` output) and prepare what all its
        point prompts share (decoder context, prompt embeddings of the layer's point grid, upsampler)."""
        model = self.sam.model
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        size = crop.shape[:2]
        device = self.sam.device
        if encoded is None:
            with counter.timed("encoder", device) if counter is not None else nullcontext():
                encoded = self.encode([crop])[0]
        features, input_size = encoded
        points = self.point_grids[layer] * np.array(size)[None, ::-1]
        coords = torch.as_tensor(self.predictor.transform.apply_coords(points, size), device=device,
                                 dtype=torch.float)
        labels = torch.ones(len(coords), dtype=torch.int, device=device)
        sparse, dense = model.prompt_encoder(points=(coords[:, None], labels[:, None]), boxes=None,
                                             masks=None)
        ctx = self.decoder.prepare(features, model.prompt_encoder.get_dense_pe(), dense[:1])
        upsampler = MaskUpsampler(model.image_encoder.img_size, input_size, size, device)
        return _Crop(ctx, sparse, upsampler, list(crop_box), orig_size, size)

    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer: int, orig_size: tuple[int, int],
                      counter: _Counter, encoded: tuple[Tensor, tuple[int, int]] | None = None
                      ) -> dict[str, Tensor]:
        job = self.prepare_crop(image, crop_box, layer, orig_size, counter, encoded)
        device = self.sam.device
        starts = range(0, len(job.sparse), self.prompts_per_call)
        workers = self.workers or (1 if device.type == "cuda" else torch.get_num_threads())
        if workers > 1 and len(starts) > 1:
            with ThreadPoolExecutor(workers, initializer=_single_threaded_worker) as pool:
                chunks = list(pool.map(lambda start: self._process_prompts(job, start, counter), starts))
        else:
            chunks = [self._process_prompts(job, start, counter) for start in starts]
        chunks = [c for c in chunks if c is not None]
        with counter.timed("filters", device):
            data = _empty(device, job.size)
            if chunks:
                data = {key: torch.cat([c[key] for c in chunks]) for key in data}
            if len(data["masks"]):
                keep = batched_nms(data["boxes"].float(), data["iou"], torch.zeros_like(data["iou"]),
                                   self.settings.box_nms_thresh)
                data = {key: value[keep] for key, value in data.items()}
        counter.add(nms_kept=len(data["masks"]))
        return self._uncrop(data, crop_box, orig_size)

    @torch.no_grad()
    def _process_prompts(self, job: _Crop, start: int, counter: _Counter) -> dict[str, Tensor] | None:
        """Decoder, IoU filter, upscaling, stability filter, boxes for one chunk of prompts."""
        s, device = self.settings, self.sam.device
        threshold = float(self.sam.model.mask_threshold)
        with counter.timed("transformer", device):
            state = self.decoder.transform(job.ctx, job.sparse[start:start + self.prompts_per_call])
            iou = state.iou[:, 1:]  # the three multimask outputs
            keep = iou > s.pred_iou_thresh if s.pred_iou_thresh > 0 else torch.ones_like(iou).bool()
            rows = keep.any(1).nonzero()[:, 0]
        counter.add(prompts=len(iou), upscaled_prompts=len(rows), iou_kept=int(keep.sum()))
        if len(rows) == 0:
            return None
        with counter.timed("upscaling", device):
            tokens = list(range(1, self.decoder.decoder.num_mask_tokens))
            low = self.decoder.masks(state, job.ctx, None if len(rows) == len(iou) else rows, tokens,
                                     job.upsampler.tokens)
            sel = keep[rows]
            low, iou = job.upsampler.crop(low)[sel], iou[rows][sel]
        with counter.timed("filters", device):
            bound = None
            if s.stability_score_thresh > 0 and self.screen:
                bound = job.upsampler.stability_upper_bound(low, threshold, s.stability_score_offset)
            if bound is not None:
                ok = bound >= s.stability_score_thresh
                counter.add(screened_out=int((~ok).sum()))
                if self.check_screen and not ok.all():
                    exact = stability_score(job.upsampler(low[~ok]), threshold, s.stability_score_offset)
                    counter.add(screen_misses=int((exact >= s.stability_score_thresh).sum()))
                low, iou = low[ok], iou[ok]
            if len(low) == 0:
                return None
            native_path = job.upsampler.stability(low, threshold, s.stability_score_offset)
            if native_path is not None:  # masks only for what the stability filter keeps
                stability, cols = native_path
                if s.stability_score_thresh > 0:
                    ok = stability >= s.stability_score_thresh
                    cols, iou, stability = cols[ok], iou[ok], stability[ok]
                masks, boxes = job.upsampler.masks(cols, threshold)
                counter.add(upsampled=len(masks))
            else:
                full = job.upsampler(low)
                counter.add(upsampled=len(full))
                stability = stability_score(full, threshold, s.stability_score_offset)
                if s.stability_score_thresh > 0:
                    ok = stability >= s.stability_score_thresh
                    full, iou, stability = full[ok], iou[ok], stability[ok]
                masks = full > threshold
                boxes = masks_to_boxes_xyxy(masks)
            orig_box = [0, 0, job.orig_size[1], job.orig_size[0]]
            if job.crop_box != orig_box:
                ok = ~near_crop_edge(boxes, job.crop_box, orig_box)
                masks, iou, stability, boxes = masks[ok], iou[ok], stability[ok], boxes[ok]
        counter.add(stability_kept=len(masks))
        return {"masks": masks, "iou": iou, "stability": stability, "boxes": boxes}

    # ------------------------------------------------------------------ crops and small regions
    @staticmethod
    def _uncrop(data: dict[str, Tensor], crop_box: list[int],
                orig_size: tuple[int, int]) -> dict[str, Tensor]:
        x0, y0, x1, y1 = crop_box
        h, w = orig_size
        masks = data["masks"]
        if (x0, y0, x1, y1) != (0, 0, w, h):
            masks = F.pad(masks, (x0, w - x1, y0, h - y1), value=False)
        offset = torch.tensor([x0, y0, x0, y0], device=masks.device)
        crops = torch.tensor([crop_box], device=masks.device).expand(len(masks), 4)
        return {"masks": masks, "iou": data["iou"], "stability": data["stability"],
                "boxes": data["boxes"] + offset, "crop_boxes": crops}

    def _remove_small(self, data: dict[str, Tensor], min_area: int, nms_thresh: float) -> dict[str, Tensor]:
        """segment-anything's small-region post-processing: fill holes, drop islands, NMS again."""
        new_masks, scores = [], []
        for mask in data["masks"].cpu().numpy():
            mask, changed_holes = self._remove_small_regions(mask, min_area, mode="holes")
            mask, changed_islands = self._remove_small_regions(mask, min_area, mode="islands")
            new_masks.append(torch.as_tensor(mask))
            scores.append(float(not (changed_holes or changed_islands)))
        masks = torch.stack(new_masks).to(data["masks"].device)
        boxes = masks_to_boxes_xyxy(masks)
        score_t = torch.tensor(scores, device=masks.device)
        keep = batched_nms(boxes.float(), score_t, torch.zeros_like(score_t), nms_thresh)
        changed = score_t == 0
        data = dict(data)
        data["masks"] = torch.where(changed[:, None, None], masks, data["masks"])
        data["boxes"] = torch.where(changed[:, None], boxes, data["boxes"])
        return {key: value[keep] for key, value in data.items()}
