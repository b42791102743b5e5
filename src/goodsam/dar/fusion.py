"""Fusing SAM masks with TA predictions into ensemble pseudo-labels (GoodSAM eq. 3, CTCF).

For every SAM mask ``m`` the TA's argmax labels inside it are counted; ``top-3`` are the three most
frequent labels.

* **CTCF** (Class-aware Transformation with Coverage Filtering, eq. 3): the coverage of the top label
  is ``count / area(m)``. The threshold ``theta`` depends on the mask area: ``theta_small`` (0.5) below
  ``small_area`` (100 px), ``theta_large`` (0.5) above ``large_area`` (1000 px), ``theta_medium`` (0.7)
  in between (bounds inclusive in the medium bin). Coverage ``>= theta`` -> the top label, weight 1.
  Otherwise -> the top-3 label of lowest entropy, weight 0, where the **entropy of a label** is the mean
  Shannon entropy ``-sum_c p_c log p_c`` of the TA's softmax over the mask pixels whose argmax is that
  label (labels absent from the mask are not candidates).
* **SSA** (Semantic Segment Anything): the majority label of the mask, weight 1.
* **SEPL**: the majority label if it covers more than half of the mask (weight 1), else unlabelled.

Overlapping masks: **smaller masks paint over larger ones** (masks are painted from the largest to the
smallest area, ties by mask order), as in SAM's own visualisation order — a pixel takes the decision of
the smallest mask covering it. Pixels no mask covers get ``ignore_index`` (255) and weight 0.

Everything is vectorised over masks (matrix products and scatter), in chunks of masks to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from goodsam.errors import ConfigError
from goodsam.fastops import channel_argmax
from goodsam.sam.base import MaskSet

IGNORE_INDEX = 255
_CHUNK_ELEMENTS = 1 << 24  # masks x pixels processed at once


@dataclass
class FusionResult:
    """Ensemble pseudo-labels ``E`` ``(H, W)`` long (255 = unlabelled) and weights ``M`` ``(H, W)`` float.

    ``mask_labels``/``mask_weights``: the decision for each input mask (``(N,)``, in input order).
    """

    labels: torch.Tensor
    weights: torch.Tensor
    mask_labels: torch.Tensor
    mask_weights: torch.Tensor


@dataclass
class MaskStats:
    """The TA inside each mask: areas ``(N,)``, label counts and entropy sums ``(N, C)``."""

    area: torch.Tensor
    counts: torch.Tensor
    entropy_sums: torch.Tensor


def _as_mask_tensor(masks: MaskSet | np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    stack = masks.masks if isinstance(masks, MaskSet) else masks
    stack = torch.as_tensor(stack, device=device).bool()
    if stack.ndim != 3:
        raise ValueError(f"expected (N, H, W) masks, got shape {tuple(stack.shape)}")
    return stack


def mask_statistics(masks: torch.Tensor, logits: torch.Tensor) -> MaskStats:
    """Counts of the TA argmax labels and sums of pixel entropy per (mask, label), vectorised over masks."""
    num_classes = logits.shape[0]
    probs = logits.float().softmax(dim=0)
    entropy = -(probs * probs.clamp(min=1e-12).log()).sum(dim=0)  # (H, W)
    labels = channel_argmax(logits, dim=0).flatten()[:, None]
    features = probs.new_zeros((labels.shape[0], 2 * num_classes))  # (P, 2C): one-hot, one-hot * entropy
    features.scatter_(1, labels, 1.0)
    features.scatter_(1, labels + num_classes, entropy.flatten()[:, None])
    flat = masks.flatten(1)
    step = _chunk_len(flat)
    parts = [flat[start:start + step].float() @ features for start in range(0, flat.shape[0], step)]
    sums = torch.cat(parts) if parts else features.new_zeros((0, 2 * num_classes))
    counts = sums[:, :num_classes]
    area = counts.sum(dim=1).round().long()  # every pixel has one label: exact (integers below 2**24)
    return MaskStats(area, counts, sums[:, num_classes:])


def _chunk_len(flat: torch.Tensor) -> int:
    return max(1, _CHUNK_ELEMENTS // max(flat.shape[1], 1))


def paint_masks(masks: torch.Tensor, mask_labels: torch.Tensor, mask_weights: torch.Tensor,
                ignore_index: int = IGNORE_INDEX, area: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Paint per-mask decisions into ``(H, W)`` labels and weights; smaller masks paint over larger ones.

    ``area``: the masks' pixel counts when already known (else counted here).
    """
    num, height, width = masks.shape
    labels = torch.full((height * width,), ignore_index, dtype=torch.long, device=masks.device)
    weights = torch.zeros(height * width, dtype=torch.float32, device=masks.device)
    if num == 0:
        return labels.view(height, width), weights.view(height, width)
    flat = masks.flatten(1)
    area = flat.sum(dim=1) if area is None else area.to(masks.device)
    order = torch.argsort(-area, stable=True)  # largest first; later (smaller) masks win
    rank = torch.empty(num, dtype=torch.int32, device=masks.device)
    rank[order] = torch.arange(1, num + 1, dtype=torch.int32, device=masks.device)
    winner = torch.zeros(height * width, dtype=torch.int32, device=masks.device)  # rank of the painting mask
    step = _chunk_len(flat)
    for start in range(0, num, step):
        ranks = torch.where(flat[start:start + step], rank[start:start + step, None], 0)
        winner = torch.maximum(winner, ranks.amax(dim=0))
    covered = winner > 0
    mask_index = order[(winner.long() - 1).clamp(min=0)]
    labels = torch.where(covered, mask_labels.to(labels.device)[mask_index], labels)
    weights = torch.where(covered, mask_weights.to(weights)[mask_index], weights)
    return labels.view(height, width), weights.view(height, width)


def _prepare(masks, logits: torch.Tensor) -> tuple[torch.Tensor, MaskStats]:
    if logits.ndim != 3:
        raise ValueError(f"expected (C, H, W) logits, got shape {tuple(logits.shape)}")
    stack = _as_mask_tensor(masks, logits.device)
    if tuple(stack.shape[1:]) != tuple(logits.shape[1:]):
        raise ValueError(f"masks {tuple(stack.shape[1:])} and logits {tuple(logits.shape[1:])} "
                         "differ in size")
    with torch.no_grad():
        return stack, mask_statistics(stack, logits.detach())


def ctcf_fusion(masks: MaskSet | np.ndarray | torch.Tensor, logits: torch.Tensor, *, small_area: int = 100,
                large_area: int = 1000, theta_small: float = 0.5, theta_medium: float = 0.7,
                theta_large: float = 0.5, top_k: int = 3, ignore_index: int = IGNORE_INDEX) -> FusionResult:
    """CTCF (eq. 3): coverage-filtered top label (weight 1) or the lowest-entropy top-k label (weight 0).

    ``masks``: ``(N, H, W)`` bool or a :class:`MaskSet`; ``logits``: the TA's ``(C, H, W)`` logits.
    """
    if small_area > large_area:
        raise ConfigError(f"small_area {small_area} must not exceed large_area {large_area}")
    stack, stats = _prepare(masks, logits)
    k = min(top_k, stats.counts.shape[1])
    top_counts, top_labels = stats.counts.topk(k, dim=1)  # (N, k), most frequent first
    area = stats.area.float()
    theta = torch.full_like(area, theta_medium)
    theta = torch.where(area < small_area, torch.full_like(area, theta_small), theta)
    theta = torch.where(area > large_area, torch.full_like(area, theta_large), theta)
    coverage = top_counts[:, 0] / area.clamp(min=1.0)
    confident = coverage >= theta
    mean_entropy = stats.entropy_sums.gather(1, top_labels) / top_counts.clamp(min=1.0)
    mean_entropy = torch.where(top_counts > 0, mean_entropy, torch.full_like(mean_entropy, float("inf")))
    lowest = top_labels.gather(1, mean_entropy.argmin(dim=1, keepdim=True)).squeeze(1)
    mask_labels = torch.where(confident, top_labels[:, 0], lowest)
    mask_weights = confident.float()
    return _result(stack, stats, mask_labels, mask_weights, ignore_index)


def ssa_fusion(masks: MaskSet | np.ndarray | torch.Tensor, logits: torch.Tensor, *,
               ignore_index: int = IGNORE_INDEX) -> FusionResult:
    """SSA: every mask takes the TA's majority label inside it (weight 1)."""
    stack, stats = _prepare(masks, logits)
    mask_labels = stats.counts.argmax(dim=1)
    return _result(stack, stats, mask_labels, torch.ones_like(mask_labels, dtype=torch.float32), ignore_index)


def sepl_fusion(masks: MaskSet | np.ndarray | torch.Tensor, logits: torch.Tensor, *,
                min_coverage: float = 0.5, ignore_index: int = IGNORE_INDEX) -> FusionResult:
    """SEPL: the majority label if it covers more than ``min_coverage`` of the mask, else unlabelled."""
    stack, stats = _prepare(masks, logits)
    top_counts, top_labels = stats.counts.max(dim=1)
    keep = top_counts.float() > min_coverage * stats.area.float()
    mask_labels = torch.where(keep, top_labels, torch.full_like(top_labels, ignore_index))
    return _result(stack, stats, mask_labels, keep.float(), ignore_index)


def _result(stack: torch.Tensor, stats: MaskStats, mask_labels: torch.Tensor, mask_weights: torch.Tensor,
            ignore_index: int) -> FusionResult:
    empty = stats.area == 0  # masks without pixels decide nothing
    mask_labels = torch.where(empty, torch.full_like(mask_labels, ignore_index), mask_labels)
    mask_weights = torch.where(empty, torch.zeros_like(mask_weights), mask_weights)
    labels, weights = paint_masks(stack, mask_labels, mask_weights, ignore_index, area=stats.area)
    return FusionResult(labels, weights, mask_labels, mask_weights)


FUSIONS = {"ctcf": ctcf_fusion, "ssa": ssa_fusion, "sepl": sepl_fusion}


def fuse(name: str, masks: MaskSet | np.ndarray | torch.Tensor, logits: torch.Tensor,
         **options) -> FusionResult:
    """Run the fusion called ``name`` (``ctcf``, ``ssa`` or ``sepl``, any case) with its keyword options."""
    key = name.lower()
    if key not in FUSIONS:
        raise ConfigError(f"unknown fusion '{name}'; choose one of {', '.join(FUSIONS)}")
    return FUSIONS[key](masks, logits, **options)
