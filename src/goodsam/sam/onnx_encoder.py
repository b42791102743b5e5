"""SAM's image encoder run by ONNX Runtime on the CPU: the same network, exported once per machine.

On 2 CPU cores MobileSAM's encoder takes about 1.0 s per 1024x1024 input in PyTorch and 0.6 s in ONNX
Runtime (its graph optimiser folds the batch norms into the convolutions and fuses the activations;
``benchmarks/amg.py`` prints both). The features agree to float rounding (about 1e-6 of their
largest value), and the fast mask generator's masks are pixel-identical either way (tests/test_sam.py,
benchmarks/amg.py).

The export (``torch.onnx``, a few seconds for MobileSAM) is cached in ``~/.cache/goodsam/sam_onnx/``,
named by the model, its weights' SHA-256 and the exporting library versions, so a changed checkpoint or
PyTorch never loads a stale graph. ``runtime="auto"`` (what :class:`~goodsam.sam.fast_amg.FastMaskGenerator`
uses) picks ONNX Runtime on the CPU for encoders under :data:`MAX_ONNX_BYTES` (MobileSAM, SAM ViT-B) and
PyTorch elsewhere; where the export or ONNX Runtime fails it warns and stays with PyTorch. Pixel-identical
masks were measured with MobileSAM (the weights at hand); ``runtime="torch"`` is the way back for any model.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from goodsam.assets import user_cache_dir
from goodsam.errors import ConfigError, first_line
from goodsam.fileio import atomic_path
from goodsam.sam.models import LoadedSam

RUNTIMES = ("auto", "torch", "onnxruntime")
OPSET = 17
MAX_ONNX_BYTES = 1 << 30  # an ONNX file holds up to 2 GiB; SAM ViT-L/H encoders (1.2, 2.5 GB) stay in PyTorch
INPUT, OUTPUT = "image", "features"


def export_path(sam: LoadedSam) -> Path:
    """Where the exported encoder of ``sam`` is cached (named by everything the graph depends on)."""
    import onnx

    key = (f"{sam.name} {sam.weights_sha256} batch 1 torch {torch.__version__} onnx {onnx.__version__} "
           f"opset {OPSET}")
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return user_cache_dir() / "sam_onnx" / f"{sam.name}_{digest}.onnx"


def export_encoder(sam: LoadedSam) -> Path:
    """The cached ONNX file of ``sam``'s image encoder (exported on first use, for one image per call:
    MobileSAM's graph bakes its batch size into reshapes)."""
    path = export_path(sam)
    if path.exists():
        return path
    encoder = sam.model.image_encoder
    size = encoder.img_size
    example = torch.zeros(1, 3, size, size, device=sam.device)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(encoder, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=[OUTPUT])
    return path


class OnnxImageEncoder:
    """``sam.model.image_encoder`` as ONNX Runtime runs it: (B, 3, S, S) float32 -> (B, C, h, w), one
    image per run (on the CPU batching is no faster: ``benchmarks/amg.py --encoder-batch``).

    One session per thread count (the intra-op threads are fixed when a session is made); it follows
    ``torch.get_num_threads()`` at each call, as the PyTorch encoder would.
    """

    def __init__(self, sam: LoadedSam) -> None:
        self.path = export_encoder(sam)
        self._sessions: dict[int, object] = {}
        self.session(torch.get_num_threads())  # fail here, not at the first image

    def session(self, threads: int):
        if threads not in self._sessions:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._sessions[threads] = ort.InferenceSession(str(self.path), options,
                                                           providers=["CPUExecutionProvider"])
        return self._sessions[threads]

    def __call__(self, images: Tensor) -> Tensor:
        session = self.session(torch.get_num_threads())
        array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        out = [session.run([OUTPUT], {INPUT: array[k:k + 1]})[0] for k in range(len(array))]
        return torch.from_numpy(np.concatenate(out))


def _encoder_bytes(sam: LoadedSam) -> int:
    return sum(p.numel() * p.element_size() for p in sam.model.image_encoder.parameters())


def image_encoder(sam: LoadedSam, runtime: str = "auto") -> tuple[Callable[[Tensor], Tensor], str]:
    """The image encoder to run for ``sam`` and the runtime it uses (``"torch"`` or ``"onnxruntime"``).

    ``runtime``: ``"torch"``; ``"onnxruntime"`` (CPU only; errors propagate); ``"auto"``: ONNX Runtime
    on the CPU for encoders under :data:`MAX_ONNX_BYTES`, else PyTorch, and PyTorch with a warning where
    the export or ONNX Runtime fails.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown SAM encoder runtime '{runtime}'; choose one of {', '.join(RUNTIMES)}")
    on_cpu = sam.device.type == "cpu"
    if runtime == "onnxruntime" and not on_cpu:
        raise ConfigError("the ONNX Runtime SAM encoder runs on the CPU only; use runtime 'torch' on "
                          f"{sam.device}")
    if runtime == "torch" or (runtime == "auto" and (not on_cpu or _encoder_bytes(sam) > MAX_ONNX_BYTES)):
        return sam.model.image_encoder, "torch"
    try:
        return OnnxImageEncoder(sam), "onnxruntime"
    except Exception as exc:  # noqa: BLE001 - any export or runtime failure: the PyTorch encoder still works
        if runtime == "onnxruntime":  # asked for by name: no fallback
            raise
        warnings.warn(f"SAM encoder stays in PyTorch: ONNX export or runtime failed ({first_line(exc)})",
                      RuntimeWarning, stacklevel=2)
        return sam.model.image_encoder, "torch"


__all__ = ["RUNTIMES", "OnnxImageEncoder", "export_encoder", "export_path", "image_encoder"]
