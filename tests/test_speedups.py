"""The faster forms (issue 14) equal what they replace: class-axis reductions, batched overlap losses,
column permutations, fusion statistics; the optional stage timer; freed memory kept for reuse."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from goodsam.dar import (
    boundary_disagreement_loss,
    boundary_enhanced_loss,
    boundary_from_logits,
    fuse,
    soft_boundary_from_probs,
    soft_boundary_map,
    window_consistency_loss,
)
from goodsam.dar.fusion import mask_statistics
from goodsam.dar.overlap_losses import Crops, overlap_terms
from goodsam.fastops import channel_argmax, channel_top2
from goodsam.mka import LossWeights, panorama_losses, panorama_targets, student_boundary_loss
from goodsam.panorama.windows import crop_overlaps, overlap_pairs, sliding_windows
from goodsam.profiling import StageTimer, stage, timed_method, use_timer
from goodsam.sam.base import MaskSet
from goodsam.train import augment


@pytest.mark.parametrize("shape, dim", [((19, 7, 9), 0), ((3, 19, 5, 6), 1), ((2, 5, 4, 3), -3)])
def test_channel_argmax_and_top2_equal_torch_with_ties(shape: tuple[int, ...], dim: int) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, shape, generator=generator).float()  # many ties
    assert torch.equal(channel_argmax(x, dim), x.argmax(dim))
    first, second = channel_top2(x, dim)
    top = x.topk(2, dim=dim).values
    assert torch.equal(first, top.select(dim, 0)) and torch.equal(second, top.select(dim, 1))
    y = torch.randn(shape, generator=generator)
    assert torch.equal(channel_argmax(y, dim), y.argmax(dim))


def _masks(layout, generator: torch.Generator) -> list[MaskSet]:
    sets = []
    for _ in range(layout.num_windows):
        masks = torch.rand((4, layout.height, layout.windows[0].width), generator=generator) > 0.6
        masks = masks.numpy()
        n = len(masks)
        sets.append(MaskSet(masks, masks.reshape(n, -1).sum(1), np.full(n, 0.9, np.float32),
                            np.full(n, 0.95, np.float32), np.zeros((n, 4), np.int64)))
    return sets


def _eq2_per_overlap(ta: torch.Tensor, layout, refined: list[torch.Tensor], form: str) -> torch.Tensor:
    """Eq. 2 overlap by overlap with the public functions, in the paper's or the disagreement form."""
    losses = []
    for (a, c), b in zip(overlap_pairs(ta, layout), refined, strict=True):
        soft = [soft_boundary_map(a), soft_boundary_map(c)]
        if form == "disagreement":
            hard = [boundary_from_logits(a.detach()), boundary_from_logits(c.detach())]
            losses.append(boundary_disagreement_loss(b, soft, hard))
        else:
            losses.append(boundary_enhanced_loss(b, *soft))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("form", ["paper", "disagreement"])
@pytest.mark.parametrize("width, window, stride, wrap", [(64, 16, 8, False), (70, 16, 8, False),
                                                         (64, 16, 8, True)])
def test_batched_overlap_terms_equal_the_per_overlap_equations(width: int, window: int, stride: int,
                                                               wrap: bool, form: str) -> None:
    """eq. 1, 2, 7 from panorama_losses (one softmax, views of all overlaps) vs the public per-overlap
    functions, values and gradients, on a regular, an odd-width (unequal overlaps) and a wrapped layout,
    in both boundary forms (the paper's; only where the hard boundary and B_ref disagree)."""
    generator = torch.Generator().manual_seed(1)
    layout = sliding_windows(6, width, window, stride, wrap)
    ta = torch.randn((layout.num_windows, 5, 6, window), generator=generator, requires_grad=True)
    student = torch.randn((5, 6, width), generator=generator, requires_grad=True)
    sam = [torch.rand((6, o.width), generator=generator) > 0.7 for o in layout.overlaps]
    targets = panorama_targets(ta, layout, _masks(layout, generator), sam)
    terms = panorama_losses(student, ta, layout, targets, LossWeights(boundary_form=form))
    eq1 = window_consistency_loss(ta, layout)
    eq2 = _eq2_per_overlap(ta, layout, targets.refined, form)
    eq7 = student_boundary_loss(crop_overlaps(student, layout), targets.refined, form)
    assert eq2 > 0 and eq7 > 0
    for name, expected, source in (("eq1_consistency", eq1, ta), ("eq2_boundary_enhanced", eq2, ta),
                                   ("eq7_student_boundary", eq7, student)):
        torch.testing.assert_close(terms[name], expected)
        got = torch.autograd.grad(terms[name], source, retain_graph=True)[0]
        torch.testing.assert_close(got, torch.autograd.grad(expected, source, retain_graph=True)[0])


@pytest.mark.parametrize("left, right", [(Crops((0, 1), (4, 4), 4), Crops((1, 2), (0, 0), 4)),
                                         (Crops((2, 0), (4, 1), 4), Crops((0, 1), (0, 3), 4))])
def test_overlap_terms_equal_autograd_on_flat_maps(left: Crops, right: Crops) -> None:
    """The hand-written backward of eq. 1 + the eq. 2/7 L1 sums equals autograd's on piecewise-constant
    probabilities (many ties of the max over the four neighbour differences, and zero differences),
    for crops that are a view (consecutive windows, one offset) and for a gathered stack."""
    generator = torch.Generator().manual_seed(3)
    coarse = torch.randint(0, 3, (3, 4, 4, 4), generator=generator).float() * 4
    logits = coarse.repeat_interleave(2, -1).repeat_interleave(2, -2).requires_grad_()  # (3, 4, 8, 8)
    target = (torch.rand((2, 8, 4), generator=generator) > 0.6).float()
    weights = torch.rand(3, generator=generator)
    mse, l1_left, l1_right = overlap_terms(logits.softmax(1), left, right, target)
    total = (weights[0] * mse + weights[1] * l1_left + weights[2] * l1_right).sum()
    got = torch.autograd.grad(total, logits)[0]
    probs = logits.softmax(1)
    a, b = left.take(probs), right.take(probs)
    expected = [((a - b) ** 2).flatten(1).mean(1),
                (target - soft_boundary_from_probs(a)).abs().flatten(1).sum(1),
                (target - soft_boundary_from_probs(b)).abs().flatten(1).sum(1)]
    for value, reference in zip((mse, l1_left, l1_right), expected, strict=True):
        assert torch.equal(value, reference)
    loss = (weights[0] * expected[0] + weights[1] * expected[1] + weights[2] * expected[2]).sum()
    torch.testing.assert_close(got, torch.autograd.grad(loss, logits)[0])


def test_augmentation_permutation_fast_path_equals_a_gather() -> None:
    data = torch.arange(2 * 3 * 11, dtype=torch.float32).view(2, 3, 11)
    for shift in range(11):
        for flip in (False, True):
            aug = augment.Augmentation(11, shift, flip)
            for columns in (aug.columns(), aug.inverse_columns()):
                expected = data.index_select(-1, torch.as_tensor(columns))
                assert torch.equal(augment._permute(data, columns), expected)
    other = np.array([3, 1, 2, 0, 4, 5, 6, 7, 8, 9, 10])  # no flip/roll: the general gather
    assert torch.equal(augment._permute(data, other), data.index_select(-1, torch.as_tensor(other)))


def test_mask_statistics_equal_the_one_hot_product() -> None:
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn((6, 9, 11), generator=generator)
    masks = torch.rand((5, 9, 11), generator=generator) > 0.5
    masks[3] = False  # an empty mask
    stats = mask_statistics(masks, logits)
    probs = logits.softmax(0)
    entropy = -(probs * probs.clamp(min=1e-12).log()).sum(0).flatten()
    onehot = torch.nn.functional.one_hot(logits.argmax(0).flatten(), 6).float()
    flat = masks.flatten(1).float()
    assert torch.equal(stats.area, masks.flatten(1).sum(1))
    assert torch.equal(stats.counts, flat @ onehot)
    torch.testing.assert_close(stats.entropy_sums, flat @ (onehot * entropy[:, None]))
    result = fuse("ctcf", masks, logits)
    assert result.labels.shape == (9, 11) and int(result.mask_labels[3]) == 255


def test_stage_timer_is_a_no_op_unless_active() -> None:
    with stage("anything"):
        pass  # no timer active: nothing to record, nothing fails
    timer = StageTimer()
    with use_timer(timer):
        with stage("a"):
            time.sleep(0.01)
        with stage("a"):
            pass
        with stage("b"):
            pass
    assert list(timer.seconds) == ["a", "b"] and timer.calls["a"] == 2 and timer.seconds["a"] >= 0.01

    class Owner:
        timer: StageTimer | None = None

        @timed_method
        def work(self) -> int:
            with stage("work"):
                return 3

    owner = Owner()
    assert owner.work() == 3
    owner.timer = StageTimer()
    assert owner.work() == 3 and owner.timer.calls["work"] == 1
    timer.reset()
    assert timer.snapshot() == {}


FAULTS_OF_A_STEP = """
import resource, sys, torch
from goodsam.devices import keep_freed_memory
from goodsam.segmenters import build_segmenter
kept = keep_freed_memory()
torch.set_num_threads(1)
model, image = build_segmenter("espnetv2-s0.5", pretrained=False), torch.randn(2, 3, 400, 1024)
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model(image).logits.square().mean().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, faults[-1])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_freed_memory_stops_the_page_faults_of_every_training_step() -> None:
    """With :func:`keep_freed_memory` a repeated forward + backward reuses its memory (no page faults
    once warm); without it (``GOODSAM_KEEP_FREED_MEMORY=0``, glibc's default) every step faults its large
    activations in again."""
    runs = {}
    for setting in ("1", "0"):
        env = {**os.environ, "GOODSAM_KEEP_FREED_MEMORY": setting}
        done = subprocess.run([sys.executable, "-c", FAULTS_OF_A_STEP], env=env, capture_output=True,
                              text=True, check=True)
        kept, faults = done.stdout.split()
        runs[setting] = (kept, int(faults))
    assert runs["1"][0] == "True" and runs["0"][0] == "False"
    assert runs["0"][1] > 20_000  # hundreds of MB zero-filled again at every step
    assert runs["1"][1] < runs["0"][1] / 10
