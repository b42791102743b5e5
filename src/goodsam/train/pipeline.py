"""Masks, then training: what ``goodsam train`` does, as one library call.

:func:`run_training` fills the mask cache for the images that have none (the masks stage with the
config's ``sam.*``, windows and image size; each process of a ``torchrun`` job its shard), then trains.
Cached masks must match the config exactly as ``goodsam masks`` requires
(:func:`goodsam.sam.cache.check_compatible`, the one definition of a reusable cache).
"""

from __future__ import annotations

from pathlib import Path

from goodsam.devices import auto_device
from goodsam.errors import ConfigError
from goodsam.sam.cache import CacheUser
from goodsam.sam.folder import compute_masks
from goodsam.train.config import TrainConfig, load_config
from goodsam.train.distributed import barrier, init_distributed
from goodsam.train.trainer import TrainResult, train
from goodsam.train.validation import Validation

# Cache mismatches as `goodsam train` words them: its ways out (it has no --overwrite).
TRAINING = CacheUser("config", "use another --masks folder, set sam.* to match them, or recompute them with "
                               "`goodsam masks DATA --out MASKS --config CONFIG --overwrite`")


def mask_options(config: str | Path | TrainConfig) -> dict:
    """The :func:`~goodsam.sam.folder.compute_masks` options a training config implies (its ``sam.*``,
    windows and image size): masks made with them are the ones training on that config accepts."""
    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    return {"model": cfg.sam.model, "weights": cfg.sam.weights, "impl": cfg.sam.impl,
            "settings": cfg.sam.amg_settings(), "window": cfg.windows.width, "stride": cfg.windows.stride,
            "wrap": cfg.windows.wrap, "height": cfg.data.height, "width": cfg.data.width}


def ensure_masks(config: TrainConfig, data_dir: str | Path, masks_dir: str | Path, device: str = "cpu",
                 rank: int = 0, world_size: int = 1, progress: bool = True) -> int:
    """Fill the mask cache for images that have none; returns how many were computed here.

    Process ``rank`` of ``world_size`` does its shard (the caller waits for all). Caches already there
    are checked against the config first; a mismatch raises :class:`MaskCacheError` naming the ways out
    of ``goodsam train``."""
    summary = compute_masks(data_dir, masks_dir, **mask_options(config), shard=f"{rank}/{world_size}",
                            device=device, progress=progress, strict=True, cache_user=TRAINING)
    return summary.done


def run_training(config: str | Path, data: str | Path, masks: str | Path, out: str | Path, *,
                 steps: int | None = None, resume: bool = False, force_resume: bool = False,
                 overrides: list[str] | tuple[str, ...] = (), device: str = "auto", progress: bool = True,
                 tensorboard: bool = True, val_images: str | Path | None = None,
                 val_labels: str | Path | None = None, val_label_pattern: str = "{stem}.png",
                 class_map: str = "cityscapes19", val_every: int = 50) -> TrainResult:
    """Masks first (missing ones only), then training; returns the result (``goodsam train``).

    ``val_images``/``val_labels``: a labelled set scored every ``val_every`` steps (student and TA)."""
    if (val_images is None) != (val_labels is None):
        raise ConfigError("give both --val-images and --val-labels, or neither")
    validation = None
    if val_images is not None:
        validation = Validation.from_folders(val_images, val_labels, val_label_pattern, class_map, val_every)
    info = init_distributed()
    cfg = load_config(config, list(overrides))
    if steps is not None:
        if steps < 0:
            raise ConfigError(f"--steps must be >= 0, got {steps}")
        cfg.train.steps = steps
    torch_device = auto_device(device, info.local_rank)
    ensure_masks(cfg, data, masks, device=str(torch_device), rank=info.rank, world_size=info.world_size,
                 progress=progress and info.is_main)
    barrier()
    return train(cfg, data, masks, out, device=str(torch_device), resume=resume, force_resume=force_resume,
                 progress=progress, tensorboard=tensorboard, validation=validation)
