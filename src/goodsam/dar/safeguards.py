"""Safeguards on the fused pseudo-labels (beyond the paper; each off by default, switchable in the config).

CTCF (eq. 3) gives every pixel of a SAM mask one label. With coarse masks (a mask spanning road and
sidewalk, a building mask that swallows a pole) that label overrides classes the TA sees correctly
inside the mask, and the weight-0 masks (coverage below θ) still take a label, the top-3 label of
lowest entropy, with full weight in eq. 5/6. Two rules keep the TA where the mask has no better claim:

* :func:`keep_confident_ta`: inside a mask, a pixel whose TA top probability reaches ``threshold``
  keeps the TA's label (weight 0 where that differs from the mask's label, so it leaves ``E_H``);
* :func:`ta_labels_where_uncertain`: pixels of weight-0 masks take the TA's own per-pixel label
  instead of one label for the whole mask.

Pixels no mask covers stay unlabelled (255) either way.
"""

from __future__ import annotations

import torch

from goodsam.dar.fusion import IGNORE_INDEX


def keep_confident_ta(labels: torch.Tensor, weights: torch.Tensor, logits: torch.Tensor,
                      threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``E``/``M`` ``(H, W)`` with the TA's label wherever its top probability is >= ``threshold``."""
    probs = logits.detach().float().softmax(dim=0)
    top, ta_labels = probs.max(dim=0)
    confident = (top >= threshold) & (labels != IGNORE_INDEX)
    changed = confident & (ta_labels != labels)
    return torch.where(confident, ta_labels, labels), torch.where(changed, torch.zeros_like(weights), weights)


def ta_labels_where_uncertain(labels: torch.Tensor, weights: torch.Tensor, logits: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``E``/``M`` with the TA's argmax on every labelled pixel of weight 0 (CTCF's unsure masks)."""
    unsure = (labels != IGNORE_INDEX) & (weights < 1.0)
    return torch.where(unsure, logits.detach().argmax(dim=0), labels), weights


def apply_safeguards(labels: torch.Tensor, weights: torch.Tensor, logits: torch.Tensor, *,
                     ta_confidence: float | None = None, uncertain: str = "paper"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Both rules as configured (``ta_confidence`` None and ``uncertain="paper"``: unchanged)."""
    if uncertain not in ("paper", "ta"):
        raise ValueError(f"uncertain must be 'paper' or 'ta', got {uncertain!r}")
    if uncertain == "ta":
        labels, weights = ta_labels_where_uncertain(labels, weights, logits)
    if ta_confidence is not None:
        labels, weights = keep_confident_ta(labels, weights, logits, ta_confidence)
    return labels, weights
