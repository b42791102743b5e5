"""MKA (Multi-level Knowledge Adaptation) of GoodSAM: the student and TA losses (eq. 4-9)."""

from goodsam.mka.losses import (
    STUDENT_TERMS,
    TA_TERMS,
    LossWeights,
    PanoramaTargets,
    ensemble_loss,
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

__all__ = [
    "STUDENT_TERMS",
    "TA_TERMS",
    "LossWeights",
    "PanoramaTargets",
    "ensemble_loss",
    "erp_distillation_loss",
    "high_confidence_ensemble",
    "masked_cross_entropy",
    "panorama_losses",
    "panorama_targets",
    "soft_erp_distillation_loss",
    "student_boundary_loss",
    "student_ensemble_loss",
    "student_total_loss",
    "ta_ensemble_loss",
    "ta_total_loss",
]
