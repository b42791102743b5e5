"""Export a model to ONNX (dynamic batch and width) and check it against PyTorch with ONNX Runtime.

The graph includes preprocessing: input ``images`` float32 RGB in 0..255, ``(B, 3, H, W)``; output
``logits`` ``(B, C, H, W)``. Parity: max |ONNX - PyTorch| over the logits, relative to max |PyTorch|,
must be at most ``1e-3``, and the argmax must agree on at least 99.9 % of pixels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from goodsam.errors import GoodSAMError, first_line
from goodsam.fileio import atomic_path
from goodsam.imageio import resize_rgb
from goodsam.inference import ONNX_INPUT, ONNX_OUTPUT, OnnxSegmenter
from goodsam.segmenters.base import Segmenter

MAX_RELATIVE_DIFF = 1e-3
MIN_ARGMAX_AGREEMENT = 0.999
DEFAULT_SIZE = (400, 2048)


class ExportError(GoodSAMError):
    """Export failed or the exported model does not match PyTorch."""


class _Exportable(nn.Module):
    """0..255 float images -> logits, through the segmenter's own preprocessing."""

    def __init__(self, model: Segmenter):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.segment(images).logits


def export_onnx(model: Segmenter, path: str | Path, height: int = DEFAULT_SIZE[0],
                width: int = DEFAULT_SIZE[1], opset: int = 17, dynamic_height: bool = False) -> Path:
    """Trace ``model`` on a ``height x width`` input and write an ONNX file with dynamic batch and width."""
    if not isinstance(model, nn.Module):
        raise ExportError("only PyTorch models can be exported (this one is already ONNX)")
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ExportError(f"--out must name an .onnx file, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _Exportable(model.cpu().eval()).eval()
    example = torch.zeros(1, 3, height, width)
    axes = {0: "batch", 3: "width", **({2: "height"} if dynamic_height else {})}
    with atomic_path(path) as tmp:
        try:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapper, (example,), str(tmp), dynamo=False, opset_version=opset,
                                  input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                                  dynamic_axes={ONNX_INPUT: axes, ONNX_OUTPUT: axes},
                                  do_constant_folding=True)
        except Exception as exc:  # the exporter raises many types; one line for the user
            first = first_line(exc)
            raise ExportError(f"ONNX export of {getattr(model, 'name', 'model')} failed: {first}") from None
        _add_metadata(tmp, model)
    return path


def _add_metadata(path: Path, model: Segmenter) -> None:
    import onnx

    proto = onnx.load(str(path))
    for key, value in {"goodsam_architecture": getattr(model, "name", "segmenter"),
                       "goodsam_num_classes": str(model.num_classes),
                       "goodsam_min_input_side": str(getattr(model, "min_input_side", 1)),
                       "goodsam_input": "float32 RGB 0..255, (B, 3, H, W)"}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


@dataclass(frozen=True)
class ParityReport:
    """How closely ONNX Runtime reproduces PyTorch on one image."""

    shape: tuple[int, ...]
    max_abs_diff: float
    max_abs_logit: float
    argmax_agreement: float

    @property
    def max_rel_diff(self) -> float:
        return self.max_abs_diff / max(self.max_abs_logit, 1e-12)

    @property
    def passed(self) -> bool:
        return self.max_rel_diff <= MAX_RELATIVE_DIFF and self.argmax_agreement >= MIN_ARGMAX_AGREEMENT

    def summary(self) -> str:
        return (f"logits {'x'.join(map(str, self.shape))}: max |diff| {self.max_abs_diff:.3g} "
                f"(relative {self.max_rel_diff:.3g}, limit {MAX_RELATIVE_DIFF:g}), argmax agreement "
                f"{100 * self.argmax_agreement:.3f} % (limit {100 * MIN_ARGMAX_AGREEMENT:g} %)")


@torch.inference_mode()
def check_parity(model: Segmenter, onnx_path: str | Path, image: np.ndarray, height: int | None = None,
                 width: int | None = None, threads: int | None = None) -> ParityReport:
    """Compare PyTorch and ONNX Runtime logits on one HxWx3 uint8 image (resized if a size is given)."""
    if height is not None and width is not None:
        image = resize_rgb(image, height, width)
    batch = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None].contiguous()
    reference = model.cpu().eval().segment(batch).logits.float()
    onnx_logits = OnnxSegmenter(onnx_path, threads=threads).segment(batch).logits
    if onnx_logits.shape != reference.shape:
        raise ExportError(f"ONNX logits have shape {tuple(onnx_logits.shape)}, PyTorch "
                          f"{tuple(reference.shape)}")
    diff = (onnx_logits - reference).abs()
    agreement = (onnx_logits.argmax(1) == reference.argmax(1)).float().mean()
    return ParityReport(tuple(reference.shape), float(diff.max()), float(reference.abs().max()),
                        float(agreement))


def export_checked(model: Segmenter, path: str | Path, image: np.ndarray | None,
                   height: int = DEFAULT_SIZE[0], width: int = DEFAULT_SIZE[1], opset: int = 17,
                   dynamic_height: bool = False, threads: int | None = None
                   ) -> tuple[Path, list[tuple[str, ParityReport]]]:
    """``goodsam export``: :func:`export_onnx`, then (with ``image``) :func:`check_parity` at the export
    size and at half the width; returns the file and ``(size, report)`` per check, and raises
    :class:`ExportError` naming every size where ONNX Runtime does not match PyTorch."""
    written = export_onnx(model, path, height, width, opset, dynamic_height)
    reports = []
    if image is not None:
        for check_width in (width, max(64, width // 2)):
            size = f"{height}x{check_width}"
            reports.append((size, check_parity(model, written, image, height, check_width, threads=threads)))
    failures = [f"{size}: {report.summary()}" for size, report in reports if not report.passed]
    if failures:
        raise ExportError(f"ONNX output does not match PyTorch ({'; '.join(failures)})")
    return written, reports
