"""Which torch device to run on: one check for every model goodsam loads (SAM, segmenters, training);
and how the CPU's memory allocator treats freed blocks during long CPU work (:func:`keep_freed_memory`)."""

from __future__ import annotations

import ctypes
import os
import sys

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


KEEP_FREED_MEMORY_ENV = "GOODSAM_KEEP_FREED_MEMORY"  # "0": leave the C allocator as it is
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt() parameters
_KEEP_BELOW = 1 << 30  # blocks under 1 GiB are kept for reuse; larger ones still go back at once
_kept: bool | None = None


def keep_freed_memory() -> bool:
    """Let the C allocator (glibc) keep freed blocks under 1 GiB for reuse instead of returning each one
    to the operating system; returns whether that is in effect.

    By default glibc maps every block over 32 MB afresh and unmaps it when freed, so each CPU training
    step page-faults (and the kernel zero-fills) every large activation and gradient again: about a
    fifth of an ESPNetv2 forward + backward on this project's 2-core machine. Kept blocks give the same
    values (only where memory comes from changes); the process holds on to its peak instead of
    shrinking between steps. Process-wide and done once; ``GOODSAM_KEEP_FREED_MEMORY=0`` or another C
    library leaves the allocator alone (returns False)."""
    global _kept
    if _kept is None:
        _kept = False
        if os.environ.get(KEEP_FREED_MEMORY_ENV, "1") != "0" and sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                _kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BELOW)
                             and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BELOW))
            except (OSError, AttributeError):  # no glibc here: the allocator is left alone
                pass
    return _kept
