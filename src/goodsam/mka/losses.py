"""MKA (Multi-level Knowledge Adaptation) losses of GoodSAM (eq. 4-9) and the per-panorama objective.

Notation (one panorama, ``N`` sliding windows ``W_i``, overlaps ``O_k``):

* ``S_i``: TA logits of window ``W_i`` (``(C, H, w)``), computed with gradient.
* ``E_i``, ``M_i``: the ensemble pseudo-labels (255 = unlabelled) and weights of window ``i`` from the
  fusion (CTCF, eq. 3) of the cached SAM masks with the *current* TA logits (no gradient).
* ``E_H``: the high-confidence ensemble, ``E_H = E_i`` where ``M_i = 1`` and 255 elsewhere.
* ``P``: the student's logits on the whole ERP panorama ``(C, H, W)``; ``P|W_i``, ``P|O_k`` its crops.
* ``B_ref``: the refined boundary of each overlap (DAR, built from the TA's hard boundaries of both
  windows and SAM's boundary of the overlap; no gradient).

Gradient routing: every target (TA argmax, ``E``, ``E_H``, ``B_ref``) is detached, so the student terms
(eq. 4, 5, 7) reach the student only and the TA terms (eq. 6, eq. 1, eq. 2) reach the TA only. A term
whose weight is 0 is not computed at all (paper Table 3 ablation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from goodsam.dar import (
    boundary_disagreement_loss,
    boundary_from_logits,
    fuse,
    refine_from_logits,
    soft_boundary_map,
)
from goodsam.dar.overlap_losses import Crops, overlap_terms
from goodsam.dar.safeguards import apply_safeguards
from goodsam.fastops import channel_argmax
from goodsam.panorama.windows import WindowLayout, assemble_tiles, crop_overlaps, crop_windows, overlap_pairs
from goodsam.profiling import stage

IGNORE_INDEX = 255

STUDENT_TERMS = ("eq4_erp", "eq5_student_ensemble", "eq7_student_boundary")
TA_TERMS = ("eq6_ta_ensemble", "eq1_consistency", "eq2_boundary_enhanced")


@dataclass(frozen=True)
class LossWeights:
    """Weight of every term; 0 switches a term off. ``high_conf_lambda`` is λ of eq. 5/6 (0.2)."""

    eq4_erp: float = 1.0
    eq5_student_ensemble: float = 1.0
    eq7_student_boundary: float = 1.0
    eq6_ta_ensemble: float = 1.0
    eq1_consistency: float = 1.0
    eq2_boundary_enhanced: float = 1.0
    high_conf_lambda: float = 0.2
    # eq. 2 / eq. 7 form: "paper" (L1 over the whole overlap / |B_ref|) or "disagreement" (only where the
    # model's hard boundary and B_ref differ; :func:`goodsam.dar.boundary_disagreement_loss`).
    boundary_form: str = "paper"
    # eq. 4 target: "hard" (the paper's: CE against the argmax of the TA's tiled logits) or "soft" (CE
    # against the TA's softmax, its whole distribution per pixel: knowledge distillation at temperature 1)
    eq4_target: str = "hard"

    def term_weights(self) -> dict[str, float]:
        """The weights of the six loss terms (without λ and the boundary form)."""
        return {name: getattr(self, name) for name in (*STUDENT_TERMS, *TA_TERMS)}


def _zero(reference: torch.Tensor) -> torch.Tensor:
    """A zero loss that stays connected to ``reference``'s graph (so backward and DDP see it)."""
    return reference.sum() * 0.0


def _pick(log_probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log_probs[..., label, y, x]`` for every pixel (0 where unlabelled) and the labelled mask."""
    labels = labels.to(device=log_probs.device, dtype=torch.long)
    valid = labels != IGNORE_INDEX
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    picked = log_probs.gather(-3, safe.unsqueeze(-3)).squeeze(-3)
    return torch.where(valid, picked, torch.zeros_like(picked)), valid


def _nll(picked: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean negative log-likelihood over the labelled pixels (0, not NaN, when there are none)."""
    loss = -picked if weights is None else -picked * weights.to(picked)
    return loss.sum() / valid.sum().clamp(min=1)


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                         weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel cross-entropy of ``(..., C, H, W)`` logits against ``(..., H, W)`` labels (255 ignored).

    With ``weights`` the per-pixel losses are multiplied by them. The sum is divided by the number of
    labelled pixels (at least 1), so an all-unlabelled target gives exactly 0 (not NaN).
    """
    picked, valid = _pick(logits.float().log_softmax(dim=-3), labels)
    return _nll(picked, valid, weights)


def _ensemble_from_picked(picked: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor,
                          high_conf_lambda: float) -> torch.Tensor:
    """``CE(., E) + λ·M·CE(., E_H)`` from the log-probabilities of ``E`` (shared by eq. 5 and eq. 6).

    ``E_H`` equals ``E`` where it is labelled, so the second term reuses the same log-probabilities.
    """
    loss = _nll(picked, valid)
    if high_conf_lambda:
        weights = weights.detach().to(picked)
        high = valid & (weights >= 1.0)
        confident = torch.where(high, picked, torch.zeros_like(picked))
        loss = loss + high_conf_lambda * _nll(confident, high, weights)
    return loss


def high_confidence_ensemble(labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``E_H``: the ensemble labels ``E`` where ``M = 1`` (CTCF's confident masks), 255 elsewhere."""
    return torch.where(weights.to(labels.device) >= 1.0, labels, torch.full_like(labels, IGNORE_INDEX))


def ensemble_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                  high_conf_lambda: float = 0.2) -> torch.Tensor:
    """``CE(S, E) + λ · M·CE(S, E_H)`` on windows (shared form of eq. 5 and eq. 6).

    ``logits`` ``(N, C, H, w)``; ``labels`` ``E`` and ``weights`` ``M`` ``(N, H, w)``. Both CE terms are
    averaged over their own labelled pixels (``E != 255`` and ``E_H != 255`` respectively).
    """
    picked, valid = _pick(logits.float().log_softmax(dim=-3), labels.detach())
    return _ensemble_from_picked(picked, valid, weights, high_conf_lambda)


def _window_pick(panorama_log_probs: torch.Tensor, layout: WindowLayout, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_pick` on every window crop of ``(C, H, W)`` log-probabilities, without cropping them.

    Same values as ``_pick(crop_windows(log_probs), labels)`` (``labels`` ``(N, H, w)``), but gathers only
    the ``N x H x w`` chosen entries instead of copying ``N`` full ``C``-channel windows.
    """
    labels = labels.to(device=panorama_log_probs.device, dtype=torch.long)
    valid = labels != IGNORE_INDEX
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    columns = torch.as_tensor(np.stack([layout.window_columns(i) for i in range(layout.num_windows)]),
                              device=labels.device)
    rows = torch.arange(layout.height, device=labels.device)
    picked = panorama_log_probs[safe, rows[None, :, None], columns[:, None, :]]
    return torch.where(valid, picked, torch.zeros_like(picked)), valid


def erp_distillation_loss(student_logits: torch.Tensor, ta_tiled_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 4: CE of the student's whole-ERP logits against the argmax of the TA's tiled window logits.

    ``ta_tiled_logits``: the TA's non-overlapping window predictions assembled into a panorama
    (:func:`goodsam.panorama.windows.assemble_tiles`), same shape as ``student_logits`` ``(..., C, H, W)``.
    The pseudo-labels are an argmax, so no gradient reaches the TA.
    """
    return _erp_from_log_probs(student_logits.float().log_softmax(dim=-3), ta_tiled_logits)


def soft_erp_distillation_loss(student_log_probs: torch.Tensor, ta_tiled_logits: torch.Tensor,
                               void: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 4 with soft targets (``loss.eq4_target: soft``; not the paper's): the cross-entropy of the
    student's whole-ERP log-probabilities against the TA's softmax of its tiled window logits,
    ``-sum_c p_TA(c) log p_S(c)``, averaged over the pixels outside ``void``. Its gradient is
    ``p_S - p_TA``: the student learns the TA's whole distribution, not only its argmax. Detached targets."""
    targets = ta_tiled_logits.detach().float().softmax(dim=-3)
    picked = (targets * student_log_probs).sum(dim=-3)  # the expected log-probability per pixel
    if void is None:
        return _nll(picked, torch.ones_like(picked, dtype=torch.bool))
    keep = ~void.to(picked.device)
    return _nll(torch.where(keep, picked, torch.zeros_like(picked)), keep)


def _erp_from_log_probs(student_log_probs: torch.Tensor, ta_tiled_logits: torch.Tensor,
                        void: torch.Tensor | None = None) -> torch.Tensor:
    labels = channel_argmax(ta_tiled_logits.detach(), dim=-3)
    if void is not None:  # pixels outside the scene are no target
        labels = torch.where(void.to(labels.device), torch.full_like(labels, IGNORE_INDEX), labels)
    picked, valid = _pick(student_log_probs, labels)
    return _nll(picked, valid)


def student_ensemble_loss(student_window_logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                          high_conf_lambda: float = 0.2) -> torch.Tensor:
    """Eq. 5: ``CE(P|W_i, E_i) + λ · M_i·CE(P|W_i, E_H)`` on windows cropped from the student's ERP logits.

    ``E_H = E_i`` where ``M_i = 1`` and 255 elsewhere (see :func:`ensemble_loss`); λ = 0.2 in the paper.
    """
    return ensemble_loss(student_window_logits, labels, weights, high_conf_lambda)


def ta_ensemble_loss(ta_window_logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                     high_conf_lambda: float = 0.2) -> torch.Tensor:
    """Eq. 6: ``CE(S_i, E_i) + λ · M_i·CE(S_i, E_H)``: the TA adapts to its own fused ensemble.

    ``E_H`` as in eq. 5. The ensemble is computed from the TA without gradient, so only ``S_i`` carries it.
    """
    return ensemble_loss(ta_window_logits, labels, weights, high_conf_lambda)


def student_boundary_loss(student_overlap_logits: Sequence[torch.Tensor],
                          refined_boundaries: Sequence[torch.Tensor], form: str = "paper") -> torch.Tensor:
    """Eq. 7: L1 between the student's soft boundary map on every overlap and ``B_ref``.

    Per overlap ``O_k``: ``sum_x |B_ref(x) - B~_S(x)| / max(1, |B_ref|)`` (normalised like eq. 2), where
    ``B~_S`` is :func:`goodsam.dar.soft_boundary_map` of ``P|O_k`` (differentiable); averaged over overlaps.
    ``form="disagreement"``: only where the student's hard boundary and ``B_ref`` differ
    (:func:`goodsam.dar.boundary_disagreement_loss`).
    """
    if len(student_overlap_logits) != len(refined_boundaries):
        raise ValueError(f"{len(student_overlap_logits)} overlap crops but {len(refined_boundaries)} "
                         "B_ref maps")
    losses = []
    for logits, b_ref in zip(student_overlap_logits, refined_boundaries, strict=True):
        soft = soft_boundary_map(logits.float())
        if form == "disagreement":
            losses.append(boundary_disagreement_loss(b_ref.detach(), [soft], [boundary_from_logits(logits)]))
            continue
        target = b_ref.detach().to(soft).expand_as(soft)
        losses.append((target - soft).abs().sum() / target.sum().clamp(min=1.0))
    if not losses:
        raise ValueError("eq. 7 needs at least one overlap")
    return torch.stack(losses).mean()


def _overlaps_by_width(layout: WindowLayout) -> list[list[int]]:
    """Overlap indices grouped by overlap width (one group for a regular layout), in order."""
    groups: dict[int, list[int]] = {}
    for k, overlap in enumerate(layout.overlaps):
        groups.setdefault(overlap.width, []).append(k)
    return list(groups.values())


def _panorama_overlap_crops(maps: torch.Tensor, layout: WindowLayout, group: list[int]) -> torch.Tensor:
    """The ``(C, H, W)`` panorama map on the overlaps of ``group`` (equal widths): ``(K, C, H, w)``.

    Same values as stacking :func:`crop_overlaps`; a view when the overlaps tile one column range.
    """
    columns = np.concatenate([layout.overlap_columns(k) for k in group])
    width = layout.overlaps[group[0]].width
    start = int(columns[0])
    if np.array_equal(columns, np.arange(start, start + len(columns))):
        taken = maps[..., start:start + len(columns)]
    else:
        taken = maps.index_select(-1, torch.as_tensor(columns, device=maps.device))
    return taken.unflatten(-1, (len(group), width)).movedim(-2, 0)


def _per_overlap_mean(values: list[tuple[list[int], torch.Tensor]]) -> torch.Tensor:
    """Mean over overlaps of per-overlap losses given per width group as ``(indices, (K,) losses)``."""
    order = [k for group, _ in values for k in group]
    stacked = torch.cat([losses for _, losses in values])
    return stacked[torch.as_tensor(np.argsort(order), device=stacked.device)].mean()


def _disagreement(target: torch.Tensor, logit_crops: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Per crop stack ``(K, C, H, w)``: the pixels where its hard boundary and ``B_ref`` ``(K, H, w)``
    disagree (the ``disagreement`` form's pixels, :func:`goodsam.dar.boundary_disagreement_loss`)."""
    target = target.bool()
    return tuple(target ^ boundary_from_logits(crops.detach()) for crops in logit_crops)


def _student_boundary_terms(student_logits: torch.Tensor, layout: WindowLayout,
                            refined: Sequence[torch.Tensor], form: str = "paper") -> torch.Tensor:
    """Eq. 7 (:func:`student_boundary_loss`, either form) on all overlaps at once, per group of equal
    widths."""
    parts = []
    for group in _overlaps_by_width(layout):
        crops = _panorama_overlap_crops(student_logits, layout, group)
        probs = crops.softmax(dim=1)
        target = torch.stack([refined[k] for k in group]).detach().to(probs)
        whole = Crops(tuple(range(len(group))), (0,) * len(group), probs.shape[-1])
        where = _disagreement(target, [crops]) if form == "disagreement" else None
        _, distance, _ = overlap_terms(probs, whole, target=target, where=where)
        counted = target if where is None else where[0]
        parts.append((group, distance / counted.flatten(1).sum(1).to(probs).clamp(min=1.0)))
    return _per_overlap_mean(parts)


def _ta_overlap_terms(ta_window_logits: torch.Tensor, layout: WindowLayout, refined: Sequence[torch.Tensor],
                      consistency: bool, boundary: bool, form: str = "paper") -> dict[str, torch.Tensor]:
    """Eq. 1 and eq. 2 (either form) on all overlaps at once, from one softmax of the TA's window
    logits."""
    probs = ta_window_logits.float().softmax(dim=-3)
    eq1, eq2 = [], []
    for group in _overlaps_by_width(layout):
        overlaps = [layout.overlaps[k] for k in group]
        width = overlaps[0].width
        left = Crops(tuple(o.left for o in overlaps), tuple(o.left_offset for o in overlaps), width)
        right = Crops(tuple(o.right for o in overlaps), tuple(o.right_offset for o in overlaps), width)
        target = torch.stack([refined[k] for k in group]).to(probs) if boundary else None
        where = None
        if boundary and form == "disagreement":
            where = _disagreement(target, [left.take(ta_window_logits), right.take(ta_window_logits)])
        mse, distance_left, distance_right = overlap_terms(probs, left, right, target, consistency, where)
        if consistency:
            eq1.append((group, mse))
        if boundary:
            count = (target.flatten(1).sum(1) if where is None
                     else (where[0].flatten(1).sum(1) + where[1].flatten(1).sum(1)).to(probs))
            eq2.append((group, (distance_left + distance_right) / count.clamp(min=1.0)))
    terms = {}
    if consistency:
        terms["eq1_consistency"] = _per_overlap_mean(eq1)
    if boundary:
        terms["eq2_boundary_enhanced"] = _per_overlap_mean(eq2)
    return terms


def _weighted_sum(terms: dict[str, torch.Tensor], names: Sequence[str], weights: LossWeights) -> torch.Tensor:
    present = [weights.term_weights()[name] * terms[name] for name in names if name in terms]
    if not present:
        raise ValueError(f"no loss term of {', '.join(names)} is switched on")
    return torch.stack(present).sum()


def student_total_loss(terms: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """Eq. 8: ``L_student = eq.4 + eq.5 + eq.7`` (each scaled by its weight; absent terms are off)."""
    return _weighted_sum(terms, STUDENT_TERMS, weights)


def ta_total_loss(terms: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """Eq. 9: ``L_TA = eq.6 + L_CC (eq. 1) + L_BE (eq. 2)`` (each scaled by its weight; absent = off)."""
    return _weighted_sum(terms, TA_TERMS, weights)


@dataclass
class PanoramaTargets:
    """What the current TA and the cached SAM masks give one panorama (all without gradient).

    ``labels``/``weights``: ``E_i``, ``M_i`` stacked ``(N, H, w)``; ``refined``: ``B_ref`` per overlap;
    ``ta_tiled``: the TA's non-overlapping windows assembled into ``(C, H, W)`` logits (eq. 4);
    ``void``: ``(H, W)`` bool of pixels outside the scene (no loss uses them), or None.
    """

    labels: torch.Tensor
    weights: torch.Tensor
    refined: list[torch.Tensor]
    ta_tiled: torch.Tensor
    void: torch.Tensor | None = None


def panorama_targets(ta_window_logits: torch.Tensor, layout: WindowLayout, window_masks: Sequence,
                     overlap_sam_boundaries: Sequence[torch.Tensor], fusion: str = "ctcf",
                     fusion_options: dict | None = None, alpha: float = 0.3,
                     void: torch.Tensor | None = None, ta_confidence: float | None = None,
                     uncertain: str = "paper", ta_classes: tuple[int, ...] | None = None) -> PanoramaTargets:
    """Fusion (eq. 3) per window with the current TA, ``B_ref`` per overlap and the tiled TA logits.

    ``window_masks``: one SAM mask set (``MaskSet`` or ``(n, H, w)`` bool) per window;
    ``overlap_sam_boundaries``: ``B_SAM`` ``(H, w_k)`` bool per overlap; ``void``: ``(H, W)`` bool of
    pixels outside the scene: unlabelled in ``E_i`` (255, weight 0), never a ``B_ref`` boundary, and no
    eq. 4 target (see :func:`panorama_losses`). ``ta_confidence``/``uncertain``/``ta_classes``: the fusion
    safeguards of :func:`goodsam.dar.safeguards.apply_safeguards` (defaults: the paper's fusion unchanged).
    """
    if len(window_masks) != layout.num_windows:
        raise ValueError(f"{len(window_masks)} window mask sets for {layout.num_windows} windows")
    with torch.no_grad():
        logits = ta_window_logits.detach().float()
        options = fusion_options or {}
        with stage("fusion (eq. 3)"):
            fused = [fuse(fusion, masks, logits[i], **options) for i, masks in enumerate(window_masks)]
            guarded = [apply_safeguards(f.labels.to(logits.device), f.weights.to(logits.device), logits[i],
                                        ta_confidence=ta_confidence, uncertain=uncertain,
                                        ta_classes=ta_classes)
                       for i, f in enumerate(fused)]
            labels = torch.stack([g[0] for g in guarded])
            weights = torch.stack([g[1] for g in guarded])
        with stage("boundary refinement (B_ref)"):
            pairs = overlap_pairs(logits, layout)
            refined = [refine_from_logits(a, b, sam, alpha)
                       for (a, b), sam in zip(pairs, overlap_sam_boundaries, strict=True)]
        with stage("eq. 4 tiling"):
            tiled = assemble_tiles(logits, layout)
        if void is not None:
            void = void.to(device=logits.device, dtype=torch.bool)
            window_void = crop_windows(void, layout)
            labels = torch.where(window_void, torch.full_like(labels, IGNORE_INDEX), labels)
            weights = torch.where(window_void, torch.zeros_like(weights), weights)
            refined = [b & ~v.to(b.device) for b, v in zip(refined, crop_overlaps(void, layout), strict=True)]
    return PanoramaTargets(labels, weights, refined, tiled, void)


def panorama_losses(student_logits: torch.Tensor, ta_window_logits: torch.Tensor | None, layout: WindowLayout,
                    targets: PanoramaTargets, weights: LossWeights) -> dict[str, torch.Tensor]:
    """All switched-on terms of one panorama plus the totals ``student`` (eq. 8) and ``ta`` (eq. 9).

    ``student_logits``: ``(C, H, W)`` on the panorama in its original orientation (undo any augmentation
    first); ``ta_window_logits``: ``(N, C, H, w)`` with gradient (may be None when no TA term is on).
    """
    on = {name: value != 0 for name, value in weights.term_weights().items()}
    terms: dict[str, torch.Tensor] = {}
    student_logits = student_logits.float()
    if on["eq4_erp"] or on["eq5_student_ensemble"]:
        log_probs = student_logits.log_softmax(dim=0)
    if on["eq4_erp"]:
        eq4 = soft_erp_distillation_loss if weights.eq4_target == "soft" else _erp_from_log_probs
        terms["eq4_erp"] = eq4(log_probs, targets.ta_tiled, targets.void)
    if on["eq5_student_ensemble"]:  # eq. 5 on the windows of the student's panorama (gathered, not copied)
        picked, valid = _window_pick(log_probs, layout, targets.labels)
        terms["eq5_student_ensemble"] = _ensemble_from_picked(picked, valid, targets.weights,
                                                              weights.high_conf_lambda)
    if on["eq7_student_boundary"] and layout.num_overlaps:
        if len(targets.refined) != layout.num_overlaps:
            raise ValueError(f"{layout.num_overlaps} overlaps but {len(targets.refined)} B_ref maps")
        terms["eq7_student_boundary"] = _student_boundary_terms(student_logits, layout, targets.refined,
                                                                weights.boundary_form)  # all at once
    if on["eq6_ta_ensemble"]:
        terms["eq6_ta_ensemble"] = ta_ensemble_loss(ta_window_logits, targets.labels, targets.weights,
                                                    weights.high_conf_lambda)
    if (on["eq1_consistency"] or on["eq2_boundary_enhanced"]) and layout.num_overlaps:
        # eq. 1 and eq. 2 share one softmax of the TA's windows and view its overlap columns
        terms.update(_ta_overlap_terms(ta_window_logits, layout, targets.refined, on["eq1_consistency"],
                                       on["eq2_boundary_enhanced"], weights.boundary_form))
    has_student = any(name in terms for name in STUDENT_TERMS)
    has_ta = any(name in terms for name in TA_TERMS)
    terms["student"] = student_total_loss(terms, weights) if has_student else _zero(student_logits)
    if has_ta:
        terms["ta"] = ta_total_loss(terms, weights)
    elif ta_window_logits is not None:
        terms["ta"] = _zero(ta_window_logits)
    else:  # no TA forward this step: a constant (nothing to back-propagate)
        terms["ta"] = torch.zeros((), device=student_logits.device)
    return terms
