"""Boundary refinement and the boundary-enhanced loss (GoodSAM §3.2, eq. 2).

On an overlap ``O`` shared by windows ``i`` and ``j``, the refined boundary ``B_ref`` is built from the
TA's hard boundaries ``B_TA^i``, ``B_TA^j`` and SAM's boundary ``B_SAM`` of the overlap:

* a TA boundary pixel ``p`` of ``B_TA^i`` that is also in ``B_TA^j`` and in ``B_SAM`` is reliable and kept;
* otherwise the nearest SAM boundary pixel ``q`` in the same column (vertical search; ties go to the
  upper pixel) is looked up, with the top-2 softmax gaps ``D_i(q)``, ``D_j(q)`` of the two windows'
  TA probabilities there. If ``D_i(q) < alpha`` or ``D_j(q) < alpha`` the TA is unsure at ``q`` and
  SAM's pixel ``q`` goes into ``B_ref`` instead of ``p``; otherwise ``p`` is kept. A column without
  any SAM boundary keeps ``p``.

``L_BE = 1/C_o * sum_x (|B_ref(x) - B~_i(x)| + |B_ref(x) - B~_j(x)|)`` where ``B~`` are the soft
(differentiable) TA boundary maps and ``C_o`` the number of boundary pixels of ``B_ref`` (at least 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from goodsam.dar.boundaries import boundary_from_logits, soft_boundary_map
from goodsam.fastops import channel_top2
from goodsam.panorama.windows import WindowLayout, overlap_pairs


def top2_gap(probs: torch.Tensor) -> torch.Tensor:
    """``(..., C, H, W)`` probabilities -> ``(..., H, W)`` gap between the two largest (D in the paper)."""
    first, second = channel_top2(probs, dim=-3)
    return first - second


def nearest_vertical(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every pixel, the row of the nearest True pixel of ``mask[..., H, W]`` in its column.

    Returns ``(rows, found)``: ``rows`` long ``(..., H, W)`` (ties -> the upper pixel; 0 where none),
    ``found`` bool, False in columns without any True pixel.
    """
    height = mask.shape[-2]
    rows = torch.arange(height, device=mask.device).view(height, 1).expand(mask.shape)
    above = torch.where(mask, rows, torch.full_like(rows, -1)).cummax(dim=-2).values  # last True row <= r
    below_flipped = torch.where(mask, rows, torch.full_like(rows, height)).flip(-2).cummin(dim=-2).values
    below = below_flipped.flip(-2)  # first True row >= r
    dist_above = torch.where(above >= 0, rows - above, torch.full_like(rows, 2 * height + 1))
    dist_below = torch.where(below < height, below - rows, torch.full_like(rows, 2 * height + 1))
    nearest = torch.where(dist_above <= dist_below, above, below)
    found = (above >= 0) | (below < height)
    return torch.where(found, nearest, torch.zeros_like(nearest)), found


def refine_boundary(b_ta_i: torch.Tensor, b_ta_j: torch.Tensor, b_sam: torch.Tensor, probs_i: torch.Tensor,
                    probs_j: torch.Tensor, alpha: float = 0.3) -> torch.Tensor:
    """``B_ref`` ``(..., H, w)`` bool from the three hard boundaries and both windows' TA probabilities.

    ``b_ta_i``, ``b_ta_j``, ``b_sam``: bool ``(..., H, w)`` (``b_sam`` may omit batch dims);
    ``probs_i``, ``probs_j``: ``(..., C, H, w)`` softmax of the TA logits of windows i and j on the overlap.
    """
    b_ta_i, b_ta_j = b_ta_i.bool(), b_ta_j.bool()
    b_sam = b_sam.bool().expand_as(b_ta_i)
    reliable = b_ta_i & b_ta_j & b_sam
    unsure = b_ta_i & ~reliable
    rows, found = nearest_vertical(b_sam)
    gap_i = top2_gap(probs_i).gather(-2, rows)
    gap_j = top2_gap(probs_j).gather(-2, rows)
    accept = unsure & found & ((gap_i < alpha) | (gap_j < alpha))
    moved = torch.zeros(b_ta_i.shape, dtype=torch.int32, device=b_ta_i.device)
    moved = moved.scatter_add(-2, rows, accept.to(torch.int32)) > 0  # SAM pixels q taken instead of p
    return reliable | (unsure & ~accept) | moved


def refine_from_logits(logits_i: torch.Tensor, logits_j: torch.Tensor, b_sam: torch.Tensor,
                       alpha: float = 0.3) -> torch.Tensor:
    """:func:`refine_boundary` from the two windows' TA logits ``(..., C, H, w)`` on the overlap (no grad)."""
    with torch.no_grad():
        return refine_boundary(boundary_from_logits(logits_i), boundary_from_logits(logits_j),
                               b_sam.to(logits_i.device), logits_i.softmax(dim=-3), logits_j.softmax(dim=-3),
                               alpha)


def boundary_enhanced_loss(b_ref: torch.Tensor, soft_i: torch.Tensor, soft_j: torch.Tensor) -> torch.Tensor:
    """Eq. 2: L1 between ``B_ref`` and both soft TA boundary maps, summed, divided by ``C_o = |B_ref|``."""
    target = b_ref.to(soft_i.dtype).expand_as(soft_i)
    count = target.sum().clamp(min=1.0)
    return ((target - soft_i).abs().sum() + (target - soft_j).abs().sum()) / count


def boundary_disagreement_loss(b_ref: torch.Tensor, soft: Sequence[torch.Tensor],
                               hard: Sequence[torch.Tensor]) -> torch.Tensor:
    """Eq. 2 / eq. 7 evaluated only where they are meant to act (a safeguard beyond the paper).

    The paper's L1 runs over every overlap pixel, so wherever a model's probabilities vary between
    neighbours without a ``B_ref`` boundary (thin objects, uncertain regions) it pushes the model
    towards flat predictions, and its sum over all pixels divided by ``|B_ref|`` dwarfs the other
    terms. Here each model's L1 is taken only on the pixels where its own hard boundary and ``B_ref``
    disagree (``B_ref XOR B_hard``: boundaries to add where ``B_ref`` moved one, boundaries to drop
    where it removed one), normalised by the number of such pixels (at least 1); pixels where both
    agree, and the interiors of regions, get no gradient.
    """
    target = b_ref.bool()
    total, count = None, None
    for soft_map, hard_map in zip(soft, hard, strict=True):
        where = (target.expand_as(hard_map) ^ hard_map.bool()).to(soft_map.dtype)
        value = ((target.to(soft_map.dtype) - soft_map).abs() * where).sum()
        total = value if total is None else total + value
        count = where.sum() if count is None else count + where.sum()
    if total is None:
        raise ValueError("boundary_disagreement_loss needs at least one boundary map")
    return total / count.clamp(min=1.0)


def overlap_boundary_loss(logits_i: torch.Tensor, logits_j: torch.Tensor, b_sam: torch.Tensor,
                          alpha: float = 0.3) -> torch.Tensor:
    """Refine on one overlap (no grad), then eq. 2 against the soft boundaries of both windows' logits."""
    b_ref = refine_from_logits(logits_i, logits_j, b_sam, alpha)
    return boundary_enhanced_loss(b_ref, soft_boundary_map(logits_i), soft_boundary_map(logits_j))


def window_boundary_loss(window_logits: torch.Tensor, layout: WindowLayout,
                         sam_boundaries: list[torch.Tensor], alpha: float = 0.3) -> torch.Tensor:
    """Eq. 2 averaged over all overlaps of a layout.

    ``window_logits``: ``(N, ..., C, H, w)``; ``sam_boundaries``: one ``(..., H, w_k)`` bool map per overlap
    (see :func:`goodsam.dar.boundaries.boundary_from_masks`).
    """
    pairs = overlap_pairs(window_logits, layout)
    if len(sam_boundaries) != len(pairs):
        raise ValueError(f"expected {len(pairs)} SAM boundary maps (one per overlap), "
                         f"got {len(sam_boundaries)}")
    if not pairs:
        return window_logits.sum() * 0.0
    losses = [overlap_boundary_loss(a, b, s, alpha) for (a, b), s in zip(pairs, sam_boundaries, strict=True)]
    return torch.stack(losses).mean()
