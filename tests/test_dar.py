"""DAR on hand-built cases: boundaries, L_CC (eq. 1), refinement + L_BE (eq. 2), CTCF/SSA/SEPL (eq. 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from goodsam.dar import (
    boundary_enhanced_loss,
    boundary_from_labels,
    boundary_from_logits,
    boundary_from_masks,
    consistency_loss,
    ctcf_fusion,
    fuse,
    overlap_boundary_loss,
    refine_boundary,
    refine_from_logits,
    sepl_fusion,
    soft_boundary_map,
    ssa_fusion,
    window_boundary_loss,
    window_consistency_loss,
)
from goodsam.dar.refinement import nearest_vertical, top2_gap
from goodsam.errors import ConfigError
from goodsam.panorama.windows import crop_overlaps, crop_windows, sliding_windows
from goodsam.sam.base import MaskSet

C = 19


# ---------------------------------------------------------------- boundaries


def test_boundary_from_labels_marks_both_sides_of_a_change() -> None:
    labels = torch.tensor([[0, 0, 1], [0, 0, 1], [0, 0, 1]])
    expected = torch.tensor([[0, 1, 1]] * 3, dtype=torch.bool)
    assert torch.equal(boundary_from_labels(labels), expected)
    assert not boundary_from_labels(torch.zeros(4, 5, dtype=torch.long)).any()  # image border is no boundary
    with_ignore = torch.tensor([[0, 255, 1]])
    assert not boundary_from_labels(with_ignore, ignore_index=255).any()


def test_boundary_from_masks_inner_edges_union() -> None:
    masks = np.zeros((2, 6, 6), bool)
    masks[0, 1:4, 1:4] = True
    masks[1, :, :] = True  # a full-window mask has no edge inside the window
    ones = np.ones(2, np.float32)
    edge = boundary_from_masks(MaskSet(masks, masks.sum((1, 2)), ones, ones))
    expected = np.zeros((6, 6), bool)
    expected[1:4, 1:4] = True
    expected[2, 2] = False
    assert np.array_equal(edge.numpy(), expected)
    assert not boundary_from_masks(np.zeros((0, 6, 6), bool)).any()


def test_soft_boundary_has_gradient_and_matches_hard_boundary_when_confident() -> None:
    labels = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    logits = (torch.nn.functional.one_hot(labels, C).permute(2, 0, 1).float() * 50.0).requires_grad_(True)
    soft = soft_boundary_map(logits)
    assert torch.allclose(soft, boundary_from_logits(logits).float(), atol=1e-6)
    noisy = torch.randn(2, C, 5, 7, requires_grad=True)
    soft_noisy = soft_boundary_map(noisy)
    assert soft_noisy.shape == (2, 5, 7) and soft_noisy.min() >= 0 and soft_noisy.max() <= 1
    soft_noisy.sum().backward()
    assert noisy.grad is not None and noisy.grad.abs().sum() > 0
    flat = torch.randn(C, 1, 1).expand(C, 4, 4)  # identical uncertain prediction everywhere: no boundary
    assert soft_boundary_map(flat).abs().max() < 1e-6


# ---------------------------------------------------------------- L_CC (eq. 1)


def test_consistency_zero_for_identical_overlaps_and_positive_otherwise() -> None:
    a = torch.randn(2, C, 8, 16)
    assert consistency_loss(a, a.clone()) == 0
    assert consistency_loss(a, torch.randn(2, C, 8, 16)) > 0
    layout = sliding_windows(8, 64, window_width=16, stride=8)
    windows = crop_windows(torch.randn(C, 8, 64), layout).clone().requires_grad_(True)
    assert window_consistency_loss(windows, layout) == 0  # windows cut from one map agree on overlaps
    perturbed = windows + 0.5 * torch.randn_like(windows)
    loss = window_consistency_loss(perturbed, layout)
    assert loss > 0
    loss.backward()
    assert windows.grad is not None and windows.grad.abs().sum() > 0


# ---------------------------------------------------------------- refinement (eq. 2)

H, W = 7, 3


def _probs(gap_map: torch.Tensor) -> torch.Tensor:
    """(H, W) desired top-2 gaps -> (3, H, W) probabilities with exactly that gap."""
    top2 = (1.0 - gap_map) / 2.0 * 0.9
    top1 = top2 + gap_map
    return torch.stack([top1, top2, 1.0 - top1 - top2])


def _bool(*pixels: tuple[int, int]) -> torch.Tensor:
    out = torch.zeros(H, W, dtype=torch.bool)
    for r, c in pixels:
        out[r, c] = True
    return out


def test_top2_gap_and_nearest_vertical() -> None:
    gap = torch.rand(H, W) * 0.9
    assert torch.allclose(top2_gap(_probs(gap)), gap, atol=1e-6)
    rows, found = nearest_vertical(_bool((1, 1), (5, 1), (3, 0)))
    assert rows[3, 1] == 1  # tie between rows 1 and 5 -> the upper pixel
    assert rows[4, 1] == 5 and rows[0, 1] == 1 and rows[6, 0] == 3
    assert found[:, :2].all() and not found[:, 2].any()


def test_refinement_reliable_pixel_is_kept() -> None:
    p = _bool((3, 1))
    confident = _probs(torch.full((H, W), 0.9))
    assert torch.equal(refine_boundary(p, p, p | _bool((5, 1)), confident, confident), p)


@pytest.mark.parametrize("gap_i,gap_j,accepted", [(0.1, 0.9, True), (0.9, 0.1, True), (0.9, 0.9, False),
                                                  (0.29, 0.31, True), (0.31, 0.31, False)])
def test_refinement_nearest_vertical_sam_pixel(gap_i: float, gap_j: float, accepted: bool) -> None:
    b_ta_i = _bool((3, 1))
    b_ta_j = _bool((2, 2))  # disagrees at (3, 1): not reliable
    b_sam = _bool((5, 1), (3, 0))  # (3, 0) is closer but in another column: not a vertical neighbour
    gaps_i = torch.full((H, W), 0.9)
    gaps_j = torch.full((H, W), 0.9)
    gaps_i[5, 1], gaps_j[5, 1] = gap_i, gap_j
    b_ref = refine_boundary(b_ta_i, b_ta_j, b_sam, _probs(gaps_i), _probs(gaps_j), alpha=0.3)
    expected = _bool((5, 1)) if accepted else _bool((3, 1))
    assert torch.equal(b_ref, expected)


def test_refinement_column_without_sam_keeps_ta_pixel_and_batches() -> None:
    b_ta_i = _bool((3, 2), (4, 1))
    b_sam = _bool((0, 1))
    unsure = _probs(torch.full((H, W), 0.05))
    b_ref = refine_boundary(b_ta_i, torch.zeros_like(b_ta_i), b_sam, unsure, unsure)
    assert torch.equal(b_ref, _bool((3, 2), (0, 1)))
    batched = refine_boundary(b_ta_i.expand(2, H, W), torch.zeros(2, H, W, dtype=torch.bool), b_sam,
                              unsure.expand(2, 3, H, W), unsure.expand(2, 3, H, W))
    assert torch.equal(batched[1], b_ref)


def test_refine_from_logits_and_boundary_loss_gradient() -> None:
    labels = torch.zeros(8, 6, dtype=torch.long)
    labels[4:] = 1
    logits_i = torch.nn.functional.one_hot(labels, C).permute(2, 0, 1).float() * 10.0
    logits_j = logits_i.clone()
    sam = boundary_from_labels(labels)
    assert torch.equal(refine_from_logits(logits_i, logits_j, sam), sam)  # all three agree
    logits_i.requires_grad_(True)
    loss = overlap_boundary_loss(logits_i, logits_j, sam)
    loss.backward()
    assert loss >= 0 and logits_i.grad is not None and logits_i.grad.abs().sum() > 0


def test_boundary_enhanced_loss_value() -> None:
    b_ref = torch.tensor([[True, False], [True, False]])
    soft_i = torch.tensor([[1.0, 0.0], [0.5, 0.0]])
    soft_j = torch.tensor([[0.0, 0.0], [1.0, 0.5]])
    # |1-1|+|0|+|1-.5|+|0| = 0.5 ; |1-0|+0+0+|0-.5| = 1.5 ; C_o = 2
    assert boundary_enhanced_loss(b_ref, soft_i, soft_j).item() == pytest.approx(1.0)
    no_boundary = torch.zeros(2, 2, dtype=torch.bool)  # C_o clamps at 1
    assert boundary_enhanced_loss(no_boundary, soft_i, soft_j).item() == pytest.approx(3.0)


def test_window_boundary_loss_over_layout() -> None:
    layout = sliding_windows(8, 48, window_width=16, stride=8)
    logits = torch.randn(C, 8, 48)
    windows = crop_windows(logits, layout).clone().requires_grad_(True)
    sams = [boundary_from_logits(o) for o in crop_overlaps(logits, layout)]
    loss = window_boundary_loss(windows, layout, sams)
    loss.backward()
    assert torch.isfinite(loss) and windows.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="one per overlap"):
        window_boundary_loss(windows, layout, sams[:1])


# ---------------------------------------------------------------- fusion (eq. 3)

SIDE = 50  # 2500-pixel canvas


def _case(area: int, parts: list[tuple[int, int, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """One mask of ``area`` pixels (the first ones in raster order) whose TA labels are ``parts``:
    (label, pixel count, confidence of the argmax). Other pixels: label 18 at confidence 0.9."""
    assert sum(n for _, n, _ in parts) == area
    labels = torch.full((SIDE * SIDE,), 18)
    conf = torch.full((SIDE * SIDE,), 0.9)
    start = 0
    for label, count, confidence in parts:
        labels[start:start + count] = label
        conf[start:start + count] = confidence
        start += count
    probs = ((1 - conf) / (C - 1))[:, None].expand(-1, C).clone()
    probs[torch.arange(SIDE * SIDE), labels] = conf
    mask = torch.zeros(1, SIDE * SIDE, dtype=torch.bool)
    mask[0, :area] = True
    return mask.view(1, SIDE, SIDE), probs.log().T.reshape(C, SIDE, SIDE)


@pytest.mark.parametrize("area,top_share,confident", [
    (80, 0.5, True), (80, 0.45, False),  # small: theta 0.5
    (100, 0.65, False), (400, 0.7, True), (400, 0.65, False), (1000, 0.65, False),  # medium: theta 0.7
    (1600, 0.5, True), (1600, 0.45, False),  # large: theta 0.5
])
def test_ctcf_coverage_threshold_per_area_bin(area: int, top_share: float, confident: bool) -> None:
    top = round(area * top_share)
    second = (area - top) // 2
    third = area - top - second
    # top label 3 (uncertain), label 7 the most confident of the rest, label 9 in between
    masks, logits = _case(area, [(3, top, 0.4), (7, second, 0.95), (9, third, 0.6)])
    result = ctcf_fusion(masks, logits)
    label, weight = (3, 1.0) if confident else (7, 0.0)
    assert result.mask_labels.tolist() == [label] and result.mask_weights.tolist() == [weight]
    assert (result.labels.flatten()[:area] == label).all() and (result.labels.flatten()[area:] == 255).all()
    assert (result.weights.flatten()[:area] == weight).all() and (result.weights.flatten()[area:] == 0).all()


def test_ctcf_entropy_pick_is_restricted_to_top3() -> None:
    # coverage 0.4 < 0.7; label 5 has the lowest entropy overall but is only 4th by count
    masks, logits = _case(500, [(1, 200, 0.5), (2, 120, 0.6), (4, 100, 0.8), (5, 80, 0.99)])
    result = ctcf_fusion(masks, logits)
    assert result.mask_labels.tolist() == [4] and result.mask_weights.tolist() == [0.0]


def test_ctcf_thresholds_are_configurable() -> None:
    masks, logits = _case(400, [(3, 260, 0.4), (7, 140, 0.95)])  # coverage 0.65
    assert ctcf_fusion(masks, logits).mask_labels.tolist() == [7]
    assert ctcf_fusion(masks, logits, theta_medium=0.6).mask_labels.tolist() == [3]
    assert ctcf_fusion(masks, logits, large_area=300).mask_labels.tolist() == [3]  # now a large mask
    with pytest.raises(ConfigError):
        ctcf_fusion(masks, logits, small_area=2000)


def test_fusion_overlapping_masks_smaller_paints_over_larger() -> None:
    labels = torch.zeros(10, 10, dtype=torch.long)
    labels[2:5, 2:5] = 6
    logits = torch.nn.functional.one_hot(labels, C).permute(2, 0, 1).float() * 5
    small = torch.zeros(10, 10, dtype=torch.bool)
    small[2:5, 2:5] = True
    large = torch.zeros(10, 10, dtype=torch.bool)
    large[:, :8] = True
    for order in ([small, large], [large, small]):
        for name in ("ctcf", "ssa", "sepl"):
            result = fuse(name, torch.stack(order), logits)
            assert (result.labels[2:5, 2:5] == 6).all()
            assert (result.labels[:, :8][~small[:, :8]] == 0).all()
            assert (result.labels[:, 8:] == 255).all() and (result.weights[:, 8:] == 0).all()


def test_ssa_and_sepl_small_cases() -> None:
    labels = torch.tensor([[1, 1, 2, 2], [1, 2, 3, 3]])
    logits = torch.nn.functional.one_hot(labels, C).permute(2, 0, 1).float()
    left = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)  # 3x label 1, 1x label 2
    right = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)  # 2x label 2, 2x label 3: a tie
    masks = torch.stack([left, right])
    ssa = ssa_fusion(masks, logits)
    assert ssa.mask_labels[0] == 1 and ssa.mask_labels[1] in (2, 3) and ssa.weights.eq(1).all()
    sepl = sepl_fusion(masks, logits)
    assert sepl.mask_labels.tolist() == [1, 255]  # exactly half is not more than half
    assert sepl.labels.tolist() == [[1, 1, 255, 255], [1, 1, 255, 255]]
    assert sepl.weights.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0]]


def test_fuse_dispatch_and_inputs() -> None:
    masks, logits = _case(80, [(3, 80, 0.9)])
    assert fuse("CTCF", masks, logits).mask_labels.tolist() == [3]
    mask_set = MaskSet(masks.numpy(), np.array([80]), np.ones(1, np.float32), np.ones(1, np.float32))
    assert fuse("ssa", mask_set, logits).mask_labels.tolist() == [3]
    with pytest.raises(ConfigError, match="unknown fusion"):
        fuse("majority", masks, logits)
    empty = ctcf_fusion(torch.zeros(0, SIDE, SIDE, dtype=torch.bool), logits)
    assert (empty.labels == 255).all() and (empty.weights == 0).all()
