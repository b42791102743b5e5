"""DAR (Distortion-Aware Rectification) module of GoodSAM: windows' consistency, boundaries, fusion."""

from goodsam.dar.boundaries import (
    boundary_from_labels,
    boundary_from_logits,
    boundary_from_masks,
    soft_boundary_from_probs,
    soft_boundary_map,
)
from goodsam.dar.consistency import consistency_loss, window_consistency_loss
from goodsam.dar.fusion import FusionResult, ctcf_fusion, fuse, sepl_fusion, ssa_fusion
from goodsam.dar.refinement import (
    boundary_disagreement_loss,
    boundary_enhanced_loss,
    overlap_boundary_loss,
    refine_boundary,
    refine_from_logits,
    window_boundary_loss,
)
from goodsam.dar.safeguards import apply_safeguards

__all__ = [
    "FusionResult",
    "apply_safeguards",
    "boundary_disagreement_loss",
    "boundary_enhanced_loss",
    "boundary_from_labels",
    "boundary_from_logits",
    "boundary_from_masks",
    "consistency_loss",
    "ctcf_fusion",
    "fuse",
    "overlap_boundary_loss",
    "refine_boundary",
    "refine_from_logits",
    "sepl_fusion",
    "soft_boundary_from_probs",
    "soft_boundary_map",
    "ssa_fusion",
    "window_boundary_loss",
    "window_consistency_loss",
]
