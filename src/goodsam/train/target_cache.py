"""On-disk cache of a frozen TA's window logits (``train.ta_ema: 1.0`` makes the targets from the initial TA).

With a frozen target TA the logits ``S_i`` of every window are a pure function of the panorama, the
TA's weights, its input scale and the window layout, so they are computed once per panorama and read
back on every later step and by every run that shares them (the expensive part of a step at TA scale
> 1). One ``<stem>.safetensors`` per panorama; the identity (a hash of the TA's weights, the scale, the
layout and the precision) is stored in the file's metadata and a file of another identity is
recomputed, never used. Reading returns exactly the tensor that was computed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

from goodsam.fileio import save_tensors


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 (16 hex) of a model's state dict: names, dtypes, shapes and values."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        tensor = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


class TargetLogitCache:
    """``get(name, compute)``: the cached ``(N, C, H, w)`` logits of panorama ``name``, else ``compute()``."""

    def __init__(self, root: str | Path, identity: dict) -> None:
        self.root = Path(root)
        self.identity = json.dumps(identity, sort_keys=True, default=str)

    def path(self, name: str) -> Path:
        return self.root / f"{Path(name).stem}.safetensors"

    def _read(self, path: Path, tensor: bool = True) -> torch.Tensor | bool | None:
        """The cached logits (``tensor``) or True (just checking) for a file of this identity, else None."""
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                if (handle.metadata() or {}).get("identity") != self.identity:
                    return None
                return handle.get_tensor("logits") if tensor else True
        except (OSError, ValueError, RuntimeError):
            return None  # torn or foreign file: recompute

    def has(self, name: str) -> bool:
        """Whether panorama ``name`` has a usable file (of this identity); reads only its header."""
        return self._read(self.path(name), tensor=False) is not None

    def get(self, name: str, compute: Callable[[], torch.Tensor], device: torch.device | None = None
            ) -> torch.Tensor:
        path = self.path(name)
        cached = self._read(path)
        if cached is None:
            cached = compute().detach().float().cpu()
            save_tensors(path, {"logits": cached}, {"identity": self.identity})
        return cached.to(device) if device is not None else cached
