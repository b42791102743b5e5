"""The exported-model folder: what training writes (the student, the TA) and predict/eval/export load.

Layout::

    DIR/model.safetensors     the segmenter's state dict (safetensors metadata ``format: pt``)
    DIR/goodsam_model.json    {"architecture": zoo name, "num_classes": N, "source": ..., extras}

:func:`export_model` writes such a folder atomically (filled under a temporary name, then swapped in);
:func:`load_exported_model` builds the architecture from the zoo without pretrained weights and loads
the file into it, refusing a file whose tensor names or shapes do not match. Both sides use the
constants below, so the format has one definition.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from goodsam.devices import resolve_device
from goodsam.errors import AssetError
from goodsam.fileio import atomic_directory, atomic_write_text, save_tensors
from goodsam.segmenters import Segmenter, build_segmenter
from goodsam.segmenters.base import load_state_checked

MODEL_WEIGHTS = "model.safetensors"
MODEL_CONFIG = "goodsam_model.json"


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a model (unwrapping DDP)."""
    return getattr(model, "module", model).state_dict()


def is_exported_model(directory: Path) -> bool:
    """Whether ``directory`` looks like an exported model (it has ``goodsam_model.json``)."""
    return (Path(directory) / MODEL_CONFIG).is_file()


def export_model(model: torch.nn.Module, directory: str | Path, architecture: str, source: str,
                 num_classes: int = 19, extra: dict | None = None) -> Path:
    """Write ``directory/model.safetensors`` + ``directory/goodsam_model.json`` (replacing an existing
    folder atomically); ``architecture``: the zoo name that rebuilds ``model``."""
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        save_tensors(tmp / MODEL_WEIGHTS, model_state(model), metadata={"format": "pt"})
        info = {"architecture": architecture, "num_classes": num_classes, "source": source, **(extra or {})}
        atomic_write_text(tmp / MODEL_CONFIG, json.dumps(info, indent=2) + "\n")
    return directory


def load_exported_model(directory: str | Path, device: str = "cpu") -> Segmenter:
    """An exported-model folder (``model.safetensors`` + ``goodsam_model.json``) -> that model on
    ``device``, in the mode :func:`build_segmenter` returns it (eval)."""
    directory = Path(directory)
    config_path, weights_path = directory / MODEL_CONFIG, directory / MODEL_WEIGHTS
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AssetError(f"cannot read {config_path}: {exc}") from None
    architecture = config.get("architecture") if isinstance(config, dict) else None
    if not isinstance(architecture, str):
        raise AssetError(f"{config_path} has no 'architecture' (the segmenter name, e.g. espnetv2-s0.5)")
    if not weights_path.is_file():
        raise AssetError(f"checkpoint {directory} has no {MODEL_WEIGHTS}")
    model = build_segmenter(architecture, pretrained=False, device="cpu")
    if int(config.get("num_classes", model.num_classes)) != model.num_classes:
        raise AssetError(f"{config_path}: num_classes {config['num_classes']} but {architecture} predicts "
                         f"{model.num_classes} classes")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise AssetError(f"cannot read {weights_path}: corrupt safetensors file ({exc})") from None
    load_state_checked(model, state, weights_path, f"architecture {architecture}")
    model.input_scale = float(config.get("input_scale", 1.0))  # the scale it was trained at (student.scale)
    return model.to(resolve_device(device))
