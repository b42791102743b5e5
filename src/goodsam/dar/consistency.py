"""Overlap consistency of the TA across sliding windows (GoodSAM eq. 1).

``L_CC = 1/|O| sum_{O_i} MSE(softmax(S_i)|O_i, softmax(S_j)|O_i)``: adjacent windows ``i, j`` see the
same columns ``O_i``; the TA's class probabilities there should agree.
"""

from __future__ import annotations

import torch

from goodsam.panorama.windows import WindowLayout, overlap_pairs


def consistency_loss(logits_i: torch.Tensor, logits_j: torch.Tensor) -> torch.Tensor:
    """MSE between the softmax (over dim -3) of two windows' logits ``(..., C, H, w)`` on one overlap."""
    if logits_i.shape != logits_j.shape:
        raise ValueError(f"overlap logits differ in shape: {tuple(logits_i.shape)} vs "
                         f"{tuple(logits_j.shape)}")
    return torch.mean((logits_i.softmax(dim=-3) - logits_j.softmax(dim=-3)) ** 2)


def window_consistency_loss(window_logits: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
    """Eq. 1 over all overlaps: mean of :func:`consistency_loss`; ``window_logits`` is ``(N, ..., C, H, w)``.

    Zero (with a graph) when the layout has no overlaps.
    """
    pairs = overlap_pairs(window_logits, layout)
    if not pairs:
        return window_logits.sum() * 0.0
    return torch.stack([consistency_loss(a, b) for a, b in pairs]).mean()
