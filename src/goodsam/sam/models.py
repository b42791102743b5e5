"""SAM models by name: MobileSAM (``mobile_sam``, ``vit_t``) and SAM ViT-B/L/H (``segment_anything``)."""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from goodsam.assets import resolve_weight, sha256_file
from goodsam.devices import resolve_device
from goodsam.errors import AssetError, ConfigError, first_line

# model name -> (python package providing it, key in that package's sam_model_registry)
MODELS: dict[str, tuple[str, str]] = {
    "mobile_sam": ("mobile_sam", "vit_t"),
    "sam_vit_b": ("segment_anything", "vit_b"),
    "sam_vit_l": ("segment_anything", "vit_l"),
    "sam_vit_h": ("segment_anything", "vit_h"),
}


@dataclass(frozen=True)
class LoadedSam:
    """A SAM model in eval mode on ``device`` with where its weights came from."""

    name: str
    model: nn.Module
    package: ModuleType
    weights_path: Path
    weights_sha256: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


_LOADED: dict[tuple[str, str, int, float, str], LoadedSam] = {}


def check_model_name(model: str) -> tuple[str, str]:
    """(package, registry key) of ``model``; :class:`ConfigError` for unknown names."""
    if model not in MODELS:
        raise ConfigError(f"unknown SAM model '{model}'; choose one of {', '.join(MODELS)}")
    return MODELS[model]


def load_sam(model: str = "mobile_sam", weights: str | os.PathLike | None = None,
             device: str | torch.device = "cpu") -> LoadedSam:
    """Build SAM ``model`` and load its verified weights (memoised per file and device)."""
    package_name, key = check_model_name(model)
    dev = resolve_device(device)
    path = resolve_weight(model, weights)
    stat = path.stat()
    cache_key = (model, str(path.resolve()), stat.st_size, stat.st_mtime, str(dev))
    if cache_key in _LOADED:
        return _LOADED[cache_key]
    with warnings.catch_warnings():  # mobile_sam's old timm imports and TinyViT names: noise, not a problem
        warnings.filterwarnings("ignore", message="Overwriting tiny_vit", category=UserWarning)
        warnings.filterwarnings("ignore", message="Importing from timm", category=FutureWarning)
        package = importlib.import_module(package_name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise AssetError(f"cannot read {model} weights {path}: corrupt or not a checkpoint "
                         f"({type(exc).__name__})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    sam = package.sam_model_registry[key]()
    try:
        sam.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = first_line(exc)
        raise AssetError(f"{path} is not a {model} checkpoint ({first})") from None
    sam.eval().requires_grad_(False).to(dev)
    loaded = LoadedSam(model, sam, package, path, sha256_file(path))
    _LOADED[cache_key] = loaded
    return loaded
