"""Build any segmenter by name: the ESPNetv2 zoo (real Cityscapes weights) and SegFormer B0..B5."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from goodsam import assets
from goodsam.devices import resolve_device
from goodsam.errors import AssetError, ConfigError
from goodsam.segmenters.base import Segmenter, load_state_checked
from goodsam.segmenters.espnetv2 import SCALES, ESPNetv2
from goodsam.segmenters.segformer import VARIANTS, SegFormer

ESPNET_NAMES = tuple(f"espnetv2-s{scale}" for scale in SCALES)
SEGFORMER_NAMES = tuple(VARIANTS)
SEGMENTER_NAMES: tuple[str, ...] = ESPNET_NAMES + SEGFORMER_NAMES
_STATE_FILES = (".pth", ".pt", ".safetensors")

_DESCRIPTIONS = {
    **{name: f"ESPNetv2 s={name[10:]}, Cityscapes 1024x512 weights (pretrained=False: random init)"
       for name in ESPNET_NAMES},
    **{name: f"SegFormer-{name[-2:].upper()} (random init; weights=hub id or directory to load one)"
       for name in SEGFORMER_NAMES},
}


def available_segmenters() -> dict[str, str]:
    """Zoo name -> one-line description, for help texts."""
    return dict(_DESCRIPTIONS)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.pth`` / ``.safetensors`` state_dict safely (tensors only, on CPU); AssetError if not."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file can fail in any layer (zip, pickle, storage); one line
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise AssetError(f"cannot read weight file {path} as a tensor state_dict ({reason}); it is "
                         "probably corrupt or truncated: re-download it or pass another file") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AssetError(f"{path} does not hold a state_dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _load_into(model: Segmenter, path: Path) -> None:
    """Load the state-dict file ``path`` into ``model`` (names and shapes checked, one-line AssetError)."""
    load_state_checked(model, load_state_dict_file(path), path, model.name)


def _explicit_file(weights: str | os.PathLike) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise AssetError(f"weight file {path} not found")
    return path


def _build_espnet(name: str, weights: str | os.PathLike | None, pretrained: bool) -> ESPNetv2:
    model = ESPNetv2(name.removeprefix("espnetv2-s"))
    if weights is not None:  # an explicit file (maybe fine-tuned): no checksum, but must match exactly
        _load_into(model, _explicit_file(weights))
    elif pretrained:  # the zoo file, checksum-verified
        _load_into(model, assets.resolve_weight(name))
    return model


def build_segmenter(name: str, weights: str | os.PathLike | None = None, pretrained: bool = True,
                    device: str | torch.device = "cpu") -> Segmenter:
    """A segmenter by zoo name, SegFormer hub id or SegFormer directory, in eval mode on ``device``.

    * ``espnetv2-s{0.5,1.0,1.5,2.0}``: Cityscapes weights from the asset roots (``pretrained=True``),
      an explicit ``.pth`` (``weights``), or random init (``pretrained=False`` and no ``weights``);
    * ``segformer-b0`` .. ``segformer-b5``: random init, or ``weights`` = hub id / directory, or a
      ``.safetensors`` / ``.pth`` state_dict of this wrapper (e.g. a goodsam checkpoint's weights);
    * a hub id (``nvidia/segformer-b5-finetuned-cityscapes-1024-1024``) or an existing directory.
    """
    target = resolve_device(device)
    text = str(name).strip()
    key = text.lower()
    if key in ESPNET_NAMES:
        model: Segmenter = _build_espnet(key, weights, pretrained)
    elif key in SEGFORMER_NAMES and weights is not None and Path(weights).suffix.lower() in _STATE_FILES:
        model = SegFormer(key)
        _load_into(model, _explicit_file(weights))
    elif key in SEGFORMER_NAMES:
        model = SegFormer(key, weights=weights)
    elif "/" in text or Path(text).expanduser().is_dir():
        if weights is not None:
            raise ConfigError(f"'{text}' already names the weights; do not also pass weights={weights}")
        model = SegFormer(None, weights=text)
    else:
        raise ConfigError(f"unknown segmenter '{name}'; known: {', '.join(SEGMENTER_NAMES)} "
                          "(or a SegFormer hub id / directory)")
    return model.to(target).eval()
