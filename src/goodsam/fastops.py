"""Exact, faster forms of reductions over a short non-innermost axis (the class axis of logits).

``torch.argmax``/``torch.topk`` over the class axis of ``(..., C, H, W)`` logits walk that strided axis
pixel by pixel on the CPU; these versions use ``amax`` (vectorised across pixels) and elementwise
compares instead, and return exactly what the torch calls return (first index of the maximum; the two
largest values, ties included) for finite inputs.
"""

from __future__ import annotations

import torch


def channel_argmax(x: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """``x.argmax(dim)`` (int64; the first maximum wins ties), computed with ``amax`` and compares."""
    dim = dim % x.ndim
    count = x.shape[dim]
    if count == 0 or count > 255:
        return x.argmax(dim)
    top = x.amax(dim, keepdim=True)
    shape = [1] * x.ndim
    shape[dim] = count
    reverse = torch.arange(count, 0, -1, dtype=torch.uint8, device=x.device).view(shape)  # C .. 1
    first = ((x == top) * reverse).amax(dim)  # C - index of the first maximum (0 if none: NaN)
    return (count - first.long()).clamp(max=count - 1)


def channel_top2(x: torch.Tensor, dim: int = -3) -> tuple[torch.Tensor, torch.Tensor]:
    """``x.topk(2, dim).values`` as (largest, second largest), the second equal to the first on a tie."""
    dim = dim % x.ndim
    first = x.amax(dim, keepdim=True)
    is_first = x == first
    rest = x.masked_fill(is_first, float("-inf")).amax(dim)
    tied = is_first.sum(dim) > 1  # the maximum occurs twice or more: topk's second value is the maximum
    first = first.squeeze(dim)
    return first, torch.where(tied, first, rest)
