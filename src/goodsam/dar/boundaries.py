"""Boundary maps used by the DAR module (GoodSAM §3.2, B_TA and B_SAM in eq. 2).

* :func:`boundary_from_labels` — hard boundary of a label map (e.g. the TA's argmax): a pixel whose
  label differs from one of its 4-neighbours.
* :func:`boundary_from_masks` — B_SAM: union of the inner edges of SAM's instance masks.
* :func:`soft_boundary_map` — a differentiable boundary of logits, the TA boundary maps that carry
  gradient in the boundary-enhanced loss (eq. 2).

Pixels outside the image are not neighbours: the image (window) border is never a boundary by itself.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from goodsam.fastops import channel_argmax
from goodsam.sam.base import MaskSet


def _neighbour_differs(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``values[..., H, W]`` -> (vertical, horizontal) "differs from the next pixel" maps."""
    return values[..., 1:, :] != values[..., :-1, :], values[..., :, 1:] != values[..., :, :-1]


def _spread(vertical: torch.Tensor, horizontal: torch.Tensor) -> torch.Tensor:
    """Mark both pixels of every differing pair (bool maps of size H-1 x W and H x W-1) -> H x W."""
    out = F.pad(vertical, (0, 0, 0, 1)) | F.pad(vertical, (0, 0, 1, 0))
    return out | F.pad(horizontal, (0, 1)) | F.pad(horizontal, (1, 0))


def boundary_from_labels(labels: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
    """Hard boundary ``(..., H, W)`` bool: the label changes to at least one 4-neighbour.

    Both pixels of a differing pair are boundary pixels. With ``ignore_index``, pixels of that label
    are never boundary and a change to an ignored neighbour does not count.
    """
    labels = torch.as_tensor(labels)
    vertical, horizontal = _neighbour_differs(labels)
    if ignore_index is not None:
        valid = labels != ignore_index
        vertical = vertical & valid[..., 1:, :] & valid[..., :-1, :]
        horizontal = horizontal & valid[..., :, 1:] & valid[..., :, :-1]
    return _spread(vertical, horizontal)


def boundary_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Hard TA boundary B_TA of ``(..., C, H, W)`` logits: :func:`boundary_from_labels` of the argmax."""
    return boundary_from_labels(channel_argmax(logits, dim=-3))


def boundary_from_masks(masks: MaskSet | np.ndarray | torch.Tensor, device: str | torch.device | None = None
                        ) -> torch.Tensor:
    """B_SAM ``(H, W)`` bool: pixels of a mask with a 4-neighbour outside that mask, over all masks.

    ``masks``: a :class:`MaskSet` or an ``(N, H, W)`` bool stack (numpy or torch). No masks -> all False.
    """
    stack = masks.masks if isinstance(masks, MaskSet) else masks
    stack = torch.as_tensor(np.asarray(stack) if isinstance(stack, np.ndarray) else stack, device=device)
    stack = stack.bool()
    if stack.ndim != 3:
        raise ValueError(f"expected (N, H, W) masks, got shape {tuple(stack.shape)}")
    if stack.shape[0] == 0:
        return torch.zeros(stack.shape[1:], dtype=torch.bool, device=stack.device)
    vertical, horizontal = _neighbour_differs(stack)
    edges = _spread(vertical, horizontal) & stack  # inner edge: the in-mask pixel of each differing pair
    return edges.any(dim=0)


def soft_boundary_map(logits: torch.Tensor) -> torch.Tensor:
    """Differentiable boundary map ``(..., H, W)`` in [0, 1] of ``(..., C, H, W)`` logits.

    ``b(x) = max_{n in N4(x)} 1/2 * sum_c |p_c(x) - p_c(n)|`` with ``p = softmax(logits)`` over C: the
    total-variation distance between the class distributions of a pixel and its most different
    4-neighbour. It is 0 inside regions of identical prediction (whatever their confidence, unlike
    ``1 - sum_c p_c(x) p_c(n)``, which is large for any uncertain pixel) and equals the hard boundary
    :func:`boundary_from_logits` when the predictions are one-hot.
    """
    return soft_boundary_from_probs(logits.softmax(dim=-3))


def soft_boundary_from_probs(probs: torch.Tensor) -> torch.Tensor:
    """:func:`soft_boundary_map` from the class probabilities ``(..., C, H, W)`` (the softmax of logits)."""
    return soft_boundary_parts(probs)["out"]


def soft_boundary_parts(probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`soft_boundary_from_probs` (``"out"``) with its intermediate maps, which the hand-written
    backward of :mod:`goodsam.dar.overlap_losses` reuses: the neighbour differences ``dv``/``dh``, the
    four padded candidates ``a``-``d`` and the running maxima ``first``/``second``."""
    dv = probs[..., 1:, :] - probs[..., :-1, :]
    dh = probs[..., :, 1:] - probs[..., :, :-1]
    vertical = 0.5 * dv.abs().sum(dim=-3)  # (..., H-1, W)
    horizontal = 0.5 * dh.abs().sum(dim=-3)  # (..., H, W-1)
    a, b = F.pad(vertical, (0, 0, 0, 1)), F.pad(vertical, (0, 0, 1, 0))
    c, d = F.pad(horizontal, (0, 1)), F.pad(horizontal, (1, 0))
    first = torch.maximum(a, b)
    second = torch.maximum(first, c)
    return {"dv": dv, "dh": dh, "a": a, "b": b, "c": c, "d": d, "first": first, "second": second,
            "out": torch.maximum(second, d)}
