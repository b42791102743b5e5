"""Safeguards on the fused pseudo-labels (beyond the paper; each off by default, switchable in the config).

CTCF (eq. 3) gives every pixel of a SAM mask one label. With coarse masks (a mask spanning road and
sidewalk, a building mask that swallows a pole) that label overrides classes the TA sees correctly
inside the mask, and the weight-0 masks (coverage below θ) still take a label, the top-3 label of
lowest entropy, with full weight in eq. 5/6. Three rules keep the TA where the mask has no better claim:

* :func:`keep_confident_ta`: inside a mask, a pixel whose TA top probability reaches ``threshold``
  keeps the TA's label (weight 0 where that differs from the mask's label, so it leaves ``E_H``);
* :func:`ta_labels_where_uncertain`: pixels of weight-0 masks take the TA's own per-pixel label
  instead of one label for the whole mask;
* :func:`keep_ta_classes`: a pixel where the TA predicts one of the given classes (thin objects that
  a coarse mask swallows: pole, traffic light, sign) keeps that label (weight 0 where it differs).

Pixels no mask covers stay unlabelled (255) either way.
"""

from __future__ import annotations

import torch

from goodsam.dar.fusion import IGNORE_INDEX
from goodsam.fastops import channel_argmax


def keep_confident_ta(labels: torch.Tensor, weights: torch.Tensor, logits: torch.Tensor,
                      threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``E``/``M`` ``(H, W)`` with the TA's label wherever its top probability is >= ``threshold``."""
    probs = logits.detach().float().softmax(dim=0)
    top, ta_labels = probs.amax(dim=0), channel_argmax(probs, dim=0)  # = probs.max(dim=0), faster
    confident = (top >= threshold) & (labels != IGNORE_INDEX)
    changed = confident & (ta_labels != labels)
    return torch.where(confident, ta_labels, labels), torch.where(changed, torch.zeros_like(weights), weights)


def ta_labels_where_uncertain(labels: torch.Tensor, weights: torch.Tensor, logits: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``E``/``M`` with the TA's argmax on every labelled pixel of weight 0 (CTCF's unsure masks)."""
    unsure = (labels != IGNORE_INDEX) & (weights < 1.0)
    return torch.where(unsure, channel_argmax(logits.detach(), dim=0), labels), weights


def keep_ta_classes(labels: torch.Tensor, weights: torch.Tensor, logits: torch.Tensor,
                    classes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``E``/``M`` with the TA's label wherever its argmax is one of ``classes`` (labelled pixels only)."""
    ta_labels = channel_argmax(logits.detach(), dim=0)
    kept = torch.isin(ta_labels, torch.tensor(classes, device=ta_labels.device)) & (labels != IGNORE_INDEX)
    changed = kept & (ta_labels != labels)
    return torch.where(kept, ta_labels, labels), torch.where(changed, torch.zeros_like(weights), weights)


def apply_safeguards(labels: torch.Tensor, weights: torch.Tensor, logits: torch.Tensor, *,
                     ta_confidence: float | None = None, uncertain: str = "paper",
                     ta_classes: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The rules as configured (``ta_confidence``/``ta_classes`` None, ``uncertain="paper"``: unchanged)."""
    if uncertain not in ("paper", "ta"):
        raise ValueError(f"uncertain must be 'paper' or 'ta', got {uncertain!r}")
    if uncertain == "ta":
        labels, weights = ta_labels_where_uncertain(labels, weights, logits)
    if ta_confidence is not None:
        labels, weights = keep_confident_ta(labels, weights, logits, ta_confidence)
    if ta_classes:
        labels, weights = keep_ta_classes(labels, weights, logits, tuple(ta_classes))
    return labels, weights
