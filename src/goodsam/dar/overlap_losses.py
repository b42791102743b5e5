"""Eq. 1 and the L1 sums of eq. 2 / eq. 7 on a stack of overlap crops, with a hand-written backward.

The crops are taken from one ``(N, C, H, W)`` probability tensor (the softmax of the windows' logits, or
of the student's overlap columns). Autograd would give each crop, and each of the four neighbour
differences inside :func:`goodsam.dar.soft_boundary_from_probs`, its own zero-filled full-size gradient;
here the gradient of all of them is accumulated into one buffer instead. The forward values are those of
the autograd formulas (the same operations), the gradient is the same as autograd's (including how
``torch.maximum`` splits a tie in half) up to the order of floating-point additions. Tested against
:func:`goodsam.dar.consistency_loss` and :func:`goodsam.dar.soft_boundary_map` in
``tests/test_speedups.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from goodsam.dar.boundaries import soft_boundary_parts


@dataclass(frozen=True)
class Crops:
    """``maps[sources[k]][..., offsets[k]:offsets[k] + width]`` for ``k = 0 .. K-1``."""

    sources: tuple[int, ...]
    offsets: tuple[int, ...]
    width: int

    @property
    def regular(self) -> bool:
        """Consecutive sources at one offset: the stack is a view of the maps."""
        first = self.sources[0]
        return len(set(self.offsets)) == 1 and self.sources == tuple(range(first, first + len(self.sources)))

    def take(self, maps: torch.Tensor) -> torch.Tensor:
        """The ``(K, ..., width)`` stack (a view when :attr:`regular`, else a copy)."""
        if self.regular:
            return self.view_of(maps)
        if len(set(self.offsets)) == 1:
            offset = self.offsets[0]
            return maps[..., offset:offset + self.width].index_select(
                0, torch.tensor(self.sources, device=maps.device))
        return torch.stack([maps[s][..., o:o + self.width] for s, o in zip(self.sources, self.offsets,
                                                                            strict=True)])

    def add_into(self, buffer: torch.Tensor, grad: torch.Tensor) -> None:
        """``buffer[crop k] += grad[k]`` (the adjoint of :meth:`take`)."""
        if self.regular:
            self.view_of(buffer).add_(grad)
            return
        for k, (source, offset) in enumerate(zip(self.sources, self.offsets, strict=True)):
            buffer[source][..., offset:offset + self.width].add_(grad[k])

    def view_of(self, maps: torch.Tensor) -> torch.Tensor:
        """The stack as a view of ``maps`` (only when :attr:`regular`)."""
        offset, first = self.offsets[0], self.sources[0]
        return maps[first:first + len(self.sources), ..., offset:offset + self.width]


def _maximum_backward(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Autograd's gradient of ``torch.maximum(x, y)``: to the larger input, half to each on a tie."""
    tie = x == y
    shared = torch.where(tie, grad * 0.5, grad)
    return shared.masked_fill(x < y, 0.0), shared.masked_fill(x > y, 0.0)


def _soft_boundary_backward(grad_out: torch.Tensor, parts: dict[str, torch.Tensor],
                            into: torch.Tensor) -> None:
    """Add to ``into`` the gradient w.r.t. the probabilities of the soft boundary whose ``parts`` the
    forward kept, given the gradient ``grad_out`` of its output."""
    grad_second, grad_d = _maximum_backward(grad_out, parts["second"], parts["d"])
    grad_first, grad_c = _maximum_backward(grad_second, parts["first"], parts["c"])
    grad_a, grad_b = _maximum_backward(grad_first, parts["a"], parts["b"])
    grad_v = grad_a[..., :-1, :] + grad_b[..., 1:, :]
    grad_h = grad_c[..., :, :-1] + grad_d[..., :, 1:]
    grad_dv = (0.5 * grad_v).unsqueeze(-3) * parts["dv"].sgn()
    grad_dh = (0.5 * grad_h).unsqueeze(-3) * parts["dh"].sgn()
    into[..., 1:, :] += grad_dv
    into[..., :-1, :] -= grad_dv
    into[..., :, 1:] += grad_dh
    into[..., :, :-1] -= grad_dh


class _OverlapTerms(torch.autograd.Function):
    """Per crop pair: eq. 1's MSE and the two L1 sums ``sum |t - b~|`` of eq. 2 / eq. 7."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor, left: Crops, right: Crops | None, target: torch.Tensor | None,
                consistency: bool, where: tuple[torch.Tensor, ...] | None):
        ctx.set_materialize_grads(False)  # an output no loss uses gets no backward work
        crops = [left.take(probs)] + ([right.take(probs)] if right is not None else [])
        parts = [soft_boundary_parts(crop) for crop in crops] if target is not None else []
        mse = (((crops[0] - crops[1]) ** 2).flatten(1).mean(1) if right is not None and consistency
               else probs.new_zeros(len(left.sources)))
        distances = [(target - p["out"]).abs() for p in parts]
        if where is not None:  # only the pixels each side's weights keep
            distances = [d * w for d, w in zip(distances, where, strict=False)]
        sums = [d.flatten(1).sum(1) for d in distances]
        while len(sums) < 2:
            sums.append(probs.new_zeros(len(left.sources)))
        ctx.left, ctx.right, ctx.parts, ctx.shape, ctx.where = left, right, parts, probs.shape, where
        ctx.save_for_backward(*crops, *([target] if target is not None else []))
        return mse, sums[0], sums[1]

    @staticmethod
    def backward(ctx, grad_mse, grad_left_sum, grad_right_sum):
        saved = ctx.saved_tensors
        sides = [ctx.left] + ([ctx.right] if ctx.right is not None else [])
        crops, target = saved[:len(sides)], (saved[len(sides)] if len(saved) > len(sides) else None)
        buffer = crops[0].new_zeros(ctx.shape)
        # accumulate straight into the buffer where a side's crops are a view of it, else via a stack
        grads = [side.view_of(buffer) if side.regular else torch.zeros_like(crop)
                 for side, crop in zip(sides, crops, strict=True)]
        if ctx.right is not None and grad_mse is not None:
            grad = (grad_mse / crops[0][0].numel()).view(-1, 1, 1, 1) * (2.0 * (crops[0] - crops[1]))
            grads[0] += grad
            grads[1] -= grad
        for k, (parts, grad_sum) in enumerate(zip(ctx.parts, (grad_left_sum, grad_right_sum), strict=False)):
            if grad_sum is not None:
                grad_out = -(grad_sum.view(-1, 1, 1) * (target - parts["out"]).sgn())
                if ctx.where is not None:
                    grad_out = grad_out * ctx.where[k]
                _soft_boundary_backward(grad_out, parts, grads[k])
        for side, grad in zip(sides, grads, strict=True):
            if not side.regular:
                side.add_into(buffer, grad)
        return buffer, None, None, None, None, None


def overlap_terms(probs: torch.Tensor, left: Crops, right: Crops | None = None,
                  target: torch.Tensor | None = None, consistency: bool = True,
                  where: Sequence[torch.Tensor] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mse, l1_left, l1_right)``, each ``(K,)``, of the crops ``left`` and ``right`` of ``probs``.

    ``mse[k]``: eq. 1's ``mean((p_left - p_right)^2)`` over the crop (zeros without ``right`` or
    ``consistency``);
    ``l1_*[k]``: ``sum_x |target[k](x) - b~(x)|`` with ``b~`` the soft boundary
    (:func:`goodsam.dar.soft_boundary_from_probs`) of that crop (zeros without ``target``), the
    numerators of eq. 2 (both crops) and eq. 7 (one crop). Differentiable w.r.t. ``probs``.
    ``where``: per side, ``(K, H, w)`` pixel weights of those sums (the ``disagreement`` form's pixels,
    :func:`goodsam.dar.boundary_disagreement_loss`); None: every pixel.
    """
    if target is not None:
        target = target.to(probs)
    if where is not None:
        where = tuple(w.to(probs) for w in where)
    return _OverlapTerms.apply(probs, left, right, target, consistency, where)
