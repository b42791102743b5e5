"""ERP-aware augmentation (beyond the paper): random yaw roll and horizontal flip of the student's input.

How it stays consistent with the windows and the cached SAM masks: the augmentation is a permutation
``T`` of the panorama's columns (a flip, then a circular shift by any number of columns — a change of
yaw of a 360° image). Only the **student** sees the augmented panorama ``T(x)``. The TA, the fusion
with the cached masks and ``B_ref`` all work on the original windows, so the cache stays valid as is;
the student's logits are mapped back with ``T^-1`` (the inverse permutation, differentiable) before
any window or overlap is cropped from them. Because ``T`` only permutes pixels,
``CE(T^-1(f(T x)), y) = CE(f(T x), T y)``: exactly the loss of the augmented image against targets moved
into augmented coordinates. Boundary maps (eq. 7) are computed on the mapped-back crops; they differ
from ``T(boundaries)`` only at the one column where the roll cut the panorama, which is a true
neighbour pair on a 360° image anyway.

Each sample's augmentation is drawn from its own generator seeded by ``(seed, step, sample index)``, so
it does not depend on the process, rank or resume point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Augmentation:
    """Flip (left-right, first) then roll right by ``shift`` columns, on a panorama ``width`` wide."""

    width: int
    shift: int = 0
    flip: bool = False

    @property
    def is_identity(self) -> bool:
        return self.shift % self.width == 0 and not self.flip

    def columns(self) -> np.ndarray:
        """Source column of every output column: ``T(x)[..., c] = x[..., columns[c]]``."""
        source = np.arange(self.width)
        if self.flip:
            source = source[::-1]
        return np.roll(source, self.shift).copy()

    def inverse_columns(self) -> np.ndarray:
        """Columns that undo :meth:`columns`: ``x[..., c] = T(x)[..., inverse[c]]``."""
        return np.argsort(self.columns())


def sample_augmentation(width: int, seed: int, step: int, sample: int, roll: bool = True,
                        flip: bool = True) -> Augmentation:
    """The augmentation of sample ``sample`` at step ``step`` (uniform shift, flip with p = 0.5)."""
    rng = np.random.default_rng([seed, step, sample, 0xA5])
    shift = int(rng.integers(0, width)) if roll else 0
    flipped = bool(rng.random() < 0.5) if flip else False
    return Augmentation(width, shift, flipped)


def sample_detail_factor(seed: int, step: int, sample: int, maximum: float) -> float:
    """How many times smaller sample ``sample`` is stored and upscaled again for the student at step
    ``step`` (``data.resample_max``): uniform in [1, ``maximum``]; 1 when ``maximum`` is 1 (nothing drawn,
    so the roll / flip draws and every run without it stay as they were)."""
    if maximum <= 1:
        return 1.0
    return float(np.random.default_rng([seed, step, sample, 0xD7]).uniform(1.0, maximum))


def _permute(data: torch.Tensor, columns: np.ndarray) -> torch.Tensor:
    """``data[..., columns]``; a flip and/or a roll (every augmentation) as such, which copies whole rows
    instead of gathering single columns (same values)."""
    width = len(columns)
    flipped = width > 1 and columns[0] - columns[1] in (1, 1 - width)
    base = width - 1 - columns if flipped else columns
    shift = (-int(base[0])) % width
    if np.array_equal(np.roll(np.arange(width), shift), base):
        source = data.flip(-1) if flipped else data
        return torch.roll(source, shift, dims=-1) if shift else source
    return data.index_select(-1, torch.as_tensor(columns, device=data.device))


def apply(data: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """``T(data)`` on the last (column) axis."""
    return data if aug.is_identity else _permute(data, aug.columns())


def invert(data: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """``T^-1(data)``: maps maps predicted on the augmented panorama back to its original columns."""
    return data if aug.is_identity else _permute(data, aug.inverse_columns())
