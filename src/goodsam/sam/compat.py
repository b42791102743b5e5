"""What the fast mask generator reads inside the SAM packages, checked when it is built.

The fast path (``fast_amg``, ``fast_decoder``) reads SAM's modules by attribute name, as written for
``segment-anything`` 1.0 and ``mobilesam-mirror`` 1.0 (``pyproject.toml`` bounds both below 1.1). A
release that renames or restructures one of them fails here with one line naming the missing part and
the way out, instead of deep inside a decoder call.
"""

from __future__ import annotations

import contextlib
import importlib
from types import ModuleType

from torch import nn

from goodsam.errors import ConfigError

TESTED = "segment-anything 1.0 / mobilesam-mirror 1.0"
_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")
_LAYER = ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token", "mlp", "norm1", "norm2",
          "norm3", "norm4", "skip_first_layer_pe")
_DECODER = ("transformer", "iou_token", "mask_tokens", "num_mask_tokens", "iou_prediction_head",
            "output_hypernetworks_mlps", "output_upscaling")
_TRANSFORMER = ("layers", "num_heads", "final_attn_token_to_image", "norm_final_attn")
_MODEL = ("image_encoder.img_size", "prompt_encoder.get_dense_pe", "mask_decoder", "mask_threshold")
_PACKAGE = ("SamPredictor", "utils.amg.build_all_layer_point_grids", "utils.amg.generate_crop_boxes",
            "utils.amg.remove_small_regions")
_PREDICTOR = ("transform.apply_image", "transform.apply_coords")


def _lookup(root: object, path: str) -> object:
    value = root
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _missing(root: object, prefix: str, paths: tuple[str, ...]) -> list[str]:
    out = []
    for path in paths:
        try:
            _lookup(root, path)
        except AttributeError:
            out.append(f"{prefix}{path}")
    return out


def check_fast_path_structure(model: nn.Module, package: ModuleType) -> None:
    """Raise :class:`ConfigError` if ``model`` (a loaded SAM) or its ``package`` lacks what the fast path
    reads."""
    with contextlib.suppress(ImportError):  # a missing module is reported below as a missing attribute
        importlib.import_module(f"{package.__name__}.utils.amg")
    missing = _missing(package, f"{package.__name__}.", _PACKAGE) + _missing(model, "sam.", _MODEL)
    decoder = getattr(model, "mask_decoder", None)
    if decoder is not None:
        missing += _missing(decoder, "mask_decoder.", _DECODER)
        transformer = getattr(decoder, "transformer", None)
        if transformer is not None:
            missing += _missing(transformer, "mask_decoder.transformer.", _TRANSFORMER)
            layers = list(getattr(transformer, "layers", []))
            if len(layers) != 2:
                missing.append(f"mask_decoder.transformer.layers (2 layers, found {len(layers)})")
            for k, layer in enumerate(layers[:2]):
                prefix = f"mask_decoder.transformer.layers[{k}]."
                missing += _missing(layer, prefix, _LAYER)
                for name in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token"):
                    if hasattr(layer, name):
                        missing += _missing(getattr(layer, name), f"{prefix}{name}.", _ATTENTION)
            final = getattr(transformer, "final_attn_token_to_image", None)
            if final is not None:
                prefix = "mask_decoder.transformer.final_attn_token_to_image."
                missing += _missing(final, prefix, _ATTENTION)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ConfigError(f"the installed {package.__name__} does not have what goodsam's fast mask "
                          f"generator reads ({shown}); it was written for {TESTED}: install those versions "
                          "or use --impl reference")


def check_predictor_structure(predictor: object) -> None:
    """The :class:`SamPredictor` methods the fast path calls (same error as above)."""
    missing = _missing(predictor, "SamPredictor.", _PREDICTOR)
    if missing:
        raise ConfigError(f"the installed SAM package's SamPredictor lacks {', '.join(missing)}; goodsam's "
                          f"fast mask generator was written for {TESTED}: install those versions or use "
                          "--impl reference")
