"""Load any segmentation model goodsam can run, and run it on whole images or sliding windows.

:func:`load_model` accepts

* a zoo name (``espnetv2-s0.5`` … ``espnetv2-s2.0``, ``segformer-b0`` … ``segformer-b5``);
* a SegFormer Hugging Face hub id (``nvidia/segformer-b0-finetuned-cityscapes-1024-1024``) or a local
  directory holding such a model (``config.json`` + weights);
* an exported goodsam model directory (``model.safetensors`` + ``goodsam_model.json``, see
  :mod:`goodsam.model_format`);
* an ``.onnx`` file written by ``goodsam export`` (run with ONNX Runtime).

Every loaded model has ``segment(images uint8 (B,3,H,W)) -> SegmenterOutput`` with logits at the input
resolution, so prediction, evaluation and export share one code path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from goodsam.devices import resolve_device
from goodsam.errors import AssetError, ConfigError, first_line
from goodsam.imageio import MIN_IMAGE_SIDE, check_image_size, resize_rgb
from goodsam.imageio import resize_label as resize_label  # re-exported: its old home
from goodsam.model_format import MODEL_CONFIG, MODEL_WEIGHTS, is_exported_model, load_exported_model
from goodsam.panorama.windows import WindowLayout, crop_windows, sliding_windows, stitch_windows
from goodsam.segmenters import build_segmenter
from goodsam.segmenters.base import SegmenterOutput
from goodsam.segmenters.scale import forward_at_scale, resolve_scale

ONNX_INPUT = "images"
ONNX_OUTPUT = "logits"


class SegmentationModel(Protocol):
    """What inference needs from a model (PyTorch :class:`Segmenter` or :class:`OnnxSegmenter`)."""

    name: str
    num_classes: int

    def segment(self, images: torch.Tensor) -> SegmenterOutput: ...


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads in PyTorch (None: leave the default).

    On a busy machine fewer threads can be much faster: PyTorch's threads wait for each other after
    every small operation, and ESPNetv2 runs about a thousand of them per image.
    """
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


class OnnxSegmenter:
    """An exported model run by ONNX Runtime, with the :class:`Segmenter` ``segment`` interface.

    The graph takes float32 RGB in 0..255, ``(B, 3, H, W)``, and returns logits ``(B, C, H, W)``.
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        providers = ["CPUExecutionProvider"]
        if resolve_device(device).type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError("this onnxruntime has no CUDA support (install onnxruntime-gpu) or use "
                                  "--device cpu")
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            first = first_line(exc)
            raise AssetError(f"cannot load ONNX model {self.path}: {first}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise AssetError(f"{self.path} is not a goodsam segmentation model (expected one (B,3,H,W) "
                             "input)")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        meta = self.session.get_modelmeta().custom_metadata_map
        self.name = meta.get("goodsam_architecture", self.path.stem)
        classes = outputs[0].shape[1]
        self.num_classes = int(meta.get("goodsam_num_classes", classes if isinstance(classes, int) else 19))
        height = inputs[0].shape[2]
        self.fixed_height: int | None = height if isinstance(height, int) else None
        self.device = torch.device("cuda" if providers[0].startswith("CUDA") else "cpu")
        # older exports did not record it: the minimum of the ESPNetv2 / SegFormer networks goodsam exports
        self.min_input_side = int(meta.get("goodsam_min_input_side", MIN_IMAGE_SIDE))

    def eval(self) -> OnnxSegmenter:
        return self

    def segment(self, images: torch.Tensor) -> SegmenterOutput:
        if self.fixed_height is not None and images.shape[2] != self.fixed_height:
            raise ConfigError(f"{self.path.name} was exported for height {self.fixed_height}, got "
                              f"{images.shape[2]}; pass --height {self.fixed_height} (or re-export with "
                              "--dynamic-height)")
        array = images.detach().to("cpu", torch.float32).numpy()
        logits = self.session.run([self.output_name], {self.input_name: array})[0]
        return SegmenterOutput(torch.from_numpy(logits))


def load_model(name_or_path: str | Path, device: str = "cpu", weights: str | Path | None = None,
               onnx_threads: int | None = None) -> SegmentationModel:
    """Load a model by zoo name, SegFormer hub id/dir, checkpoint directory or ``.onnx`` file (eval mode)."""
    resolve_device(device)
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() == ".onnx":
            return OnnxSegmenter(path, device=device, threads=onnx_threads)
        if path.is_file() and path.name in (MODEL_WEIGHTS, MODEL_CONFIG):
            path = path.parent
        if path.is_dir() and is_exported_model(path):
            model = load_exported_model(path, device=device)
        elif path.is_dir() and (path / "config.json").is_file():  # a Hugging Face SegFormer directory
            model = build_segmenter(str(path), device=device)
        else:
            raise AssetError(f"{path} is not a model: expected an .onnx file, a goodsam checkpoint directory "
                             f"({MODEL_WEIGHTS} + {MODEL_CONFIG}) or a SegFormer directory")
    elif text.lower().endswith((".onnx", ".safetensors", ".pth", ".pt")):
        raise AssetError(f"model file {path} not found")
    else:  # a zoo name, or a SegFormer hub id such as nvidia/segformer-b0-finetuned-cityscapes-1024-1024
        model = build_segmenter(text, weights=weights, device=device)
    return model.eval()


def model_device(model: SegmentationModel) -> torch.device:
    """Where a model's inputs should live."""
    if isinstance(model, torch.nn.Module):
        tensor = next(model.buffers(), None)
        if tensor is None:
            tensor = next(model.parameters(), None)
        return tensor.device if tensor is not None else torch.device("cpu")
    return torch.device("cpu")


def _segment_logits(model: SegmentationModel, batch: torch.Tensor) -> torch.Tensor:
    logits = model.segment(batch).logits
    if tuple(logits.shape[-2:]) != tuple(batch.shape[-2:]):
        logits = F.interpolate(logits, size=batch.shape[-2:], mode="bilinear", align_corners=False)
    return logits


def _run(model: SegmentationModel, images: torch.Tensor, batch_size: int, scale: float = 1.0) -> torch.Tensor:
    device = model_device(model)
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size].to(device)
        logits = forward_at_scale(lambda x: _segment_logits(model, x), batch, scale)
        chunks.append(logits.float().cpu())
    return torch.cat(chunks)


def default_scale(model: SegmentationModel, scale: float | str | None = None) -> float | str:
    """The input scale to run ``model`` at: ``scale`` when given, else the one the model records (a
    trained student's ``input_scale``, its ``student.scale``), else 1."""
    return scale if scale is not None else getattr(model, "input_scale", 1.0)


def model_scale(model: SegmentationModel, scale: float | str, width: int) -> float:
    """The numeric input scale of ``model`` for images ``width`` columns wide (``auto``: its zoo density)."""
    return resolve_scale(scale, getattr(model, "name", None), width)


@torch.inference_mode()
def predict_logits(model: SegmentationModel, image: np.ndarray, window: int | None = None,
                   stride: int | None = None, wrap: bool = False, batch_size: int = 4,
                   scale: float | str = 1.0) -> torch.Tensor:
    """Logits ``(C, H, W)`` (float32, CPU) for one HxWx3 uint8 image.

    Whole image when ``window`` is None; otherwise full-height windows of ``window`` columns every
    ``stride`` columns (default ``window // 2``), their logits averaged where they overlap
    (``goodsam.panorama.windows``); ``wrap`` continues windows across the 360° seam. ``scale``: the
    input scale (:mod:`goodsam.segmenters.scale`; ``auto`` treats the image width as 360°): the image
    or each window is resized by it before the model, the logits resized back.
    """
    tensor = torch.tensor(image, dtype=torch.uint8).permute(2, 0, 1).contiguous()  # a writable copy
    factor = model_scale(model, scale, tensor.shape[2])
    if window is None:
        return _run(model, tensor[None], 1, factor)[0]
    layout = sliding_windows(tensor.shape[1], tensor.shape[2], window, stride or max(1, window // 2), wrap)
    crops = crop_windows(tensor, layout)
    return stitch_windows(_run(model, crops, batch_size, factor), layout)


@torch.inference_mode()
def predict_window_logits(model: SegmentationModel, image: np.ndarray, layout: WindowLayout,
                          batch_size: int = 1, scale: float | str = 1.0) -> torch.Tensor:
    """Logits ``(N, C, H, w)`` (float32, CPU) of every window of ``layout`` of one HxWx3 uint8 image,
    not stitched (e.g. to fuse each with its window's SAM masks, eq. 3); ``scale`` as in
    :func:`predict_logits`."""
    tensor = torch.tensor(image, dtype=torch.uint8).permute(2, 0, 1).contiguous()
    return _run(model, crop_windows(tensor, layout), batch_size, model_scale(model, scale, tensor.shape[2]))


def predict_labels(model: SegmentationModel, image: np.ndarray, window: int | None = None,
                   stride: int | None = None, wrap: bool = False, size: tuple[int, int] | None = None,
                   output_size: tuple[int, int] | None = None, scale: float | str = 1.0) -> np.ndarray:
    """HxW uint8 trainIds for one image; ``size`` (h, w) resizes the input first, ``output_size``
    resizes the logits (bilinear) before the argmax; ``scale`` as in :func:`predict_logits`."""
    if size is not None:
        image = resize_rgb(image, *size)
    logits = predict_logits(model, image, window, stride, wrap, scale=scale)
    if output_size is not None and tuple(logits.shape[-2:]) != tuple(output_size):
        logits = F.interpolate(logits[None], size=output_size, mode="bilinear", align_corners=False)[0]
    return logits.argmax(0).to(torch.uint8).numpy()


ProgressCallback = Callable[[int, int, str], None]


def check_input_size(model: SegmentationModel, path: str | Path, image: np.ndarray) -> None:
    """Refuse an image below the model's smallest meaningful input (``min_input_side``)."""
    check_image_size(path, *image.shape[:2], getattr(model, "min_input_side", 1),
                     getattr(model, "name", "the model"))
