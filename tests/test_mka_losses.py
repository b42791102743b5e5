"""MKA losses (eq. 4-9) on hand-made tensors: known values, zeros, and which model gets gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from goodsam.mka import (
    LossWeights,
    erp_distillation_loss,
    high_confidence_ensemble,
    masked_cross_entropy,
    panorama_losses,
    panorama_targets,
    soft_erp_distillation_loss,
    student_boundary_loss,
    student_ensemble_loss,
    student_total_loss,
    ta_ensemble_loss,
    ta_total_loss,
)
from goodsam.panorama.windows import crop_overlaps, crop_windows, sliding_windows
from goodsam.sam.base import MaskSet
from goodsam.train import augment

LOG2 = math.log(2.0)


def onehot_logits(labels: torch.Tensor, classes: int, scale: float = 20.0) -> torch.Tensor:
    """(H, W) labels -> (C, H, W) confident logits."""
    return torch.nn.functional.one_hot(labels, classes).permute(2, 0, 1).float() * scale


def test_masked_cross_entropy_known_values() -> None:
    logits = torch.zeros(1, 19, 2, 3)
    labels = torch.tensor([[[0, 5, 255], [18, 255, 3]]])
    assert masked_cross_entropy(logits, labels).item() == pytest.approx(math.log(19))
    empty = torch.full((1, 2, 3), 255)
    assert masked_cross_entropy(logits.requires_grad_(), empty).item() == 0.0  # not NaN


def test_eq4_against_ta_argmax_and_no_grad_to_ta() -> None:
    ta = torch.randn(19, 4, 6, requires_grad=True)
    student = torch.zeros(19, 4, 6, requires_grad=True)
    loss = erp_distillation_loss(student, ta)
    assert loss.item() == pytest.approx(math.log(19), rel=1e-6)
    loss.backward()
    assert ta.grad is None and student.grad is not None and student.grad.abs().sum() > 0
    perfect = onehot_logits(ta.detach().argmax(0), 19)
    assert erp_distillation_loss(perfect, ta).item() < 1e-6


def test_soft_eq4_is_cross_entropy_against_the_tas_softmax() -> None:
    """``loss.eq4_target: soft``: -sum_c p_TA log p_S per pixel, mean over the pixels outside the void;
    its gradient is (p_S - p_TA) / pixels, none reaches the TA; a confident TA gives the hard eq. 4."""
    torch.manual_seed(0)
    ta = torch.randn(5, 3, 4, requires_grad=True)
    student = torch.randn(5, 3, 4, requires_grad=True)
    void = torch.zeros(3, 4, dtype=torch.bool)
    void[:, 3] = True
    loss = soft_erp_distillation_loss(student.log_softmax(0), ta, void)
    p_ta, p_s = ta.detach().softmax(0), student.detach().softmax(0)
    expected = -(p_ta * p_s.log()).sum(0)[~void].mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert ta.grad is None
    torch.testing.assert_close(student.grad[:, ~void], ((p_s - p_ta) / 9)[:, ~void])
    assert student.grad[:, void].abs().sum() == 0
    confident = onehot_logits(ta.detach().argmax(0), 5, scale=50.0)
    hard = erp_distillation_loss(student.detach(), confident)
    soft = soft_erp_distillation_loss(student.detach().log_softmax(0), confident)
    torch.testing.assert_close(soft, hard)


def test_panorama_losses_take_the_soft_eq4_target_when_asked() -> None:
    layout, ta, student, masks, sam = _toy_panorama()
    targets = panorama_targets(ta, layout, masks, sam)
    soft = panorama_losses(student, ta, layout, targets, LossWeights(eq4_target="soft"))
    expected = soft_erp_distillation_loss(student.float().log_softmax(0), targets.ta_tiled)
    torch.testing.assert_close(soft["eq4_erp"], expected)
    hard = panorama_losses(student, ta, layout, targets, LossWeights())
    assert not torch.allclose(hard["eq4_erp"], soft["eq4_erp"])
    torch.testing.assert_close(hard["eq5_student_ensemble"], soft["eq5_student_ensemble"])


def test_high_confidence_ensemble_definition() -> None:
    labels = torch.tensor([[0, 1, 255, 2]])
    weights = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    assert high_confidence_ensemble(labels, weights).tolist() == [[0, 255, 255, 2]]


def test_eq5_known_value_with_lambda() -> None:
    student = torch.zeros(1, 2, 1, 4, requires_grad=True)  # CE = log 2 at every pixel
    labels = torch.tensor([[[0, 1, 255, 0]]])
    weights = torch.tensor([[[1.0, 0.0, 0.0, 1.0]]])
    # CE(S, E) over 3 labelled pixels = log 2; M*CE(S, E_H) over the 2 confident pixels = log 2.
    assert student_ensemble_loss(student, labels, weights, 0.2).item() == pytest.approx(1.2 * LOG2)
    assert student_ensemble_loss(student, labels, weights, 0.0).item() == pytest.approx(LOG2)
    nothing = torch.full_like(labels, 255)
    assert student_ensemble_loss(student, nothing, torch.zeros_like(weights)).item() == 0.0


def test_eq6_gradient_reaches_the_ta_only() -> None:
    ta = torch.randn(2, 19, 4, 4, requires_grad=True)
    labels = ta.argmax(1)  # targets from the TA itself (as the fusion does), integer: no graph
    weights = torch.ones(2, 4, 4)
    loss = ta_ensemble_loss(ta, labels, weights)
    loss.backward()
    assert ta.grad.abs().sum() > 0
    assert loss.item() > 0


def test_eq7_zero_on_matching_boundary_and_counts_extra_edges() -> None:
    labels = torch.zeros(4, 6, dtype=torch.long)
    labels[:, 3:] = 1
    logits = onehot_logits(labels, 3).requires_grad_()
    b_ref = torch.zeros(4, 6, dtype=torch.bool)
    b_ref[:, 2:4] = True  # both pixels of the vertical edge
    assert student_boundary_loss([logits], [b_ref]).item() == pytest.approx(0.0, abs=1e-6)
    flat = torch.zeros(3, 4, 6, requires_grad=True)
    assert student_boundary_loss([flat], [torch.zeros(4, 6, dtype=torch.bool)]).item() == 0.0
    # A student edge where B_ref has none: sum |B~| = 8 boundary pixels, divided by max(1, |B_ref|) = 1.
    extra = student_boundary_loss([logits], [torch.zeros(4, 6, dtype=torch.bool)])
    assert extra.item() == pytest.approx(8.0, rel=1e-4)
    # The soft boundary carries gradient.
    soft = torch.randn(3, 4, 6, requires_grad=True)
    student_boundary_loss([soft], [b_ref]).backward()
    assert soft.grad.abs().sum() > 0


def test_totals_eq8_eq9_and_switches() -> None:
    terms = {name: torch.tensor(float(i + 1)) for i, name in enumerate(
        ["eq4_erp", "eq5_student_ensemble", "eq7_student_boundary",
         "eq6_ta_ensemble", "eq1_consistency", "eq2_boundary_enhanced"])}
    weights = LossWeights()
    assert student_total_loss(terms, weights).item() == 1 + 2 + 3
    assert ta_total_loss(terms, weights).item() == 4 + 5 + 6
    halved = LossWeights(eq4_erp=0.5, eq2_boundary_enhanced=2.0)
    assert student_total_loss(terms, halved).item() == 0.5 + 2 + 3
    assert ta_total_loss(terms, halved).item() == 4 + 5 + 12


def _toy_panorama():
    """8x32 panorama, windows 16 wide every 8 columns (3 windows, 2 overlaps), hand-made SAM masks."""
    layout = sliding_windows(8, 32, 16, 8)
    torch.manual_seed(0)
    ta = torch.randn(layout.num_windows, 5, 8, 16, requires_grad=True)
    student = torch.randn(5, 8, 32, requires_grad=True)
    window_masks = []
    for _ in layout.windows:
        masks = np.zeros((2, 8, 16), dtype=bool)
        masks[0, :, :8] = True
        masks[1, :4, 8:] = True
        window_masks.append(MaskSet(masks, masks.reshape(2, -1).sum(1), np.ones(2, np.float32),
                                    np.ones(2, np.float32)))
    sam_boundaries = [torch.zeros(8, o.width, dtype=torch.bool) for o in layout.overlaps]
    for b in sam_boundaries:
        b[:, 3] = True
    return layout, ta, student, window_masks, sam_boundaries


def test_panorama_losses_route_gradients_to_the_right_model() -> None:
    layout, ta, student, masks, sam = _toy_panorama()
    targets = panorama_targets(ta, layout, masks, sam)
    assert targets.labels.shape == (3, 8, 16) and targets.ta_tiled.shape == (5, 8, 32)
    assert not targets.labels.requires_grad and len(targets.refined) == 2
    assert ((targets.labels == 255) == torch.from_numpy(~np.stack([m.masks.any(0) for m in masks]))).all()
    terms = panorama_losses(student, ta, layout, targets, LossWeights())
    assert set(terms) >= {"eq4_erp", "eq5_student_ensemble", "eq7_student_boundary", "eq6_ta_ensemble",
                          "eq1_consistency", "eq2_boundary_enhanced", "student", "ta"}
    terms["student"].backward(retain_graph=True)
    assert ta.grad is None and student.grad.abs().sum() > 0
    student.grad = None
    terms["ta"].backward()
    assert student.grad is None and ta.grad.abs().sum() > 0


def test_panorama_terms_equal_the_equations_on_crops() -> None:
    """panorama_losses gathers eq. 5 from the panorama; it must equal eq. 5 on cropped windows."""
    layout, ta, student, masks, sam = _toy_panorama()
    targets = panorama_targets(ta, layout, masks, sam)
    terms = panorama_losses(student, ta, layout, targets, LossWeights())
    crops = crop_windows(student, layout)
    expected = student_ensemble_loss(crops, targets.labels, targets.weights, 0.2)
    torch.testing.assert_close(terms["eq5_student_ensemble"], expected)
    torch.testing.assert_close(terms["eq4_erp"], erp_distillation_loss(student, targets.ta_tiled))
    eq6 = ta_ensemble_loss(ta, targets.labels, targets.weights)
    torch.testing.assert_close(terms["eq6_ta_ensemble"], eq6)
    eq5_grad = torch.autograd.grad(terms["eq5_student_ensemble"], student)[0]
    torch.testing.assert_close(eq5_grad, torch.autograd.grad(expected, student)[0])


def test_void_pixels_are_no_target_of_any_student_term() -> None:
    """``data.void_rgb``: pixels outside the scene get no E_i label, no B_ref edge and no eq. 4 target."""
    layout, ta, student, masks, sam = _toy_panorama()
    void = torch.zeros(8, 32, dtype=torch.bool)
    void[:, 20:] = True  # the right part of the panorama is fill
    plain = panorama_targets(ta, layout, masks, sam)
    targets = panorama_targets(ta, layout, masks, sam, void=void)
    window_void = crop_windows(void, layout)
    assert (targets.labels[window_void] == 255).all() and (targets.weights[window_void] == 0).all()
    assert torch.equal(targets.labels[~window_void], plain.labels[~window_void])
    for b_ref, v in zip(targets.refined, crop_overlaps(void, layout), strict=True):
        assert not b_ref[v].any()
    terms = panorama_losses(student, ta, layout, targets, LossWeights())
    for name in ("eq4_erp", "eq5_student_ensemble"):
        grad = torch.autograd.grad(terms[name], student, retain_graph=True)[0]
        assert grad[:, void].abs().sum() == 0 and grad[:, ~void].abs().sum() > 0, name
    labels = plain.ta_tiled.argmax(0).masked_fill(void, 255)
    expected = -student.log_softmax(0).gather(0, labels.clamp(max=4)[None])[0][~void].mean()
    torch.testing.assert_close(terms["eq4_erp"], expected)


def test_switched_off_terms_are_not_computed() -> None:
    layout, ta, student, masks, sam = _toy_panorama()
    targets = panorama_targets(ta, layout, masks, sam)
    off = LossWeights(eq4_erp=0, eq7_student_boundary=0, eq6_ta_ensemble=0, eq1_consistency=0,
                      eq2_boundary_enhanced=0)
    terms = panorama_losses(student, ta, layout, targets, off)
    assert "eq4_erp" not in terms and "eq1_consistency" not in terms
    assert terms["ta"].item() == 0.0
    assert terms["student"].item() == pytest.approx(terms["eq5_student_ensemble"].item())


def test_consistency_zero_when_windows_agree() -> None:
    layout = sliding_windows(8, 32, 16, 8)
    panorama = torch.randn(5, 8, 32)
    ta = crop_windows(panorama, layout).clone().requires_grad_()  # windows cut from one map agree on overlaps
    terms = panorama_losses(torch.randn(5, 8, 32), ta, layout,
                            panorama_targets(ta, layout, [np.zeros((0, 8, 16), bool)] * 3,
                                             [torch.zeros(8, 8, dtype=torch.bool)] * 2),
                            LossWeights())
    assert terms["eq1_consistency"].item() == 0.0
    assert terms["eq6_ta_ensemble"].item() == 0.0  # no SAM masks: everything unlabelled


def test_augmentation_is_an_invertible_column_permutation() -> None:
    x = torch.arange(2 * 3 * 10, dtype=torch.float32).view(2, 3, 10)
    aug = augment.Augmentation(10, shift=3, flip=True)
    assert torch.equal(augment.apply(x, aug), torch.roll(torch.flip(x, [-1]), 3, -1))
    assert torch.equal(augment.invert(augment.apply(x, aug), aug), x)
    a = augment.sample_augmentation(10, seed=1, step=5, sample=2)
    assert a == augment.sample_augmentation(10, seed=1, step=5, sample=2)
    assert augment.Augmentation(10).is_identity
