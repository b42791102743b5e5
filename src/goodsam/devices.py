"""Which torch device to run on: one check for every model goodsam loads (SAM, segmenters, training)."""

from __future__ import annotations

import torch

from goodsam.errors import ConfigError

DEVICE_TYPES = ("cpu", "cuda")


def resolve_device(device: str | torch.device) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N`` (or a torch device) -> a torch device that exists here;
    :class:`ConfigError` for an unknown device, another device type, or CUDA on a machine without it."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device '{device}'; use cpu, cuda or cuda:N") from None
    if resolved.type not in DEVICE_TYPES:
        raise ConfigError(f"unsupported device '{device}'; use cpu, cuda or cuda:N")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' was asked for but no CUDA GPU is available; use --device cpu")
    return resolved


def auto_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """:func:`resolve_device`, plus ``auto``: this process's GPU (``cuda:<local_rank>``, the ``LOCAL_RANK``
    of a distributed job) when CUDA is available, else the CPU."""
    if device == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    return resolve_device(device)
