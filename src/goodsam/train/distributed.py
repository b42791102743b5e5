"""Multi-GPU / multi-node training through ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node=G [--nnodes …] -m goodsam.cli train …`` sets ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``; :func:`init_distributed` then joins the process group (NCCL on GPUs, gloo on CPU). Every
rank builds the same models from the same seed, handles ``batch_size / world_size`` panoramas of each
global batch (:func:`goodsam.train.data.rank_indices`), and DDP averages the gradients, so a run on G
processes follows the single-process run with the same global batch. Rank 0 alone writes checkpoints,
logs and the export.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# Collective timeout: long enough for ranks waiting while others fill their share of the mask cache.
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=TIMEOUT)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def current() -> DistInfo:
    """The job position of an already-initialised process group (single process otherwise)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(value, src: int = 0):
    """Send a picklable value from ``src`` to every rank (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (for logging)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    out = values.clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """Wrap in DistributedDataParallel when running distributed and the model has trainable parameters.

    ``find_unused_parameters``: some zoo models own parameters their forward never uses (ESPNetv2's
    strided EESP activations), and a switched-off loss can leave a whole head without gradient.
    """
    if not info.enabled or not any(p.requires_grad for p in model.parameters()):
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                                     find_unused_parameters=True)
