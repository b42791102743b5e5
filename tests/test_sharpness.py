"""The CVRG-line diagnosis (issue 12): resampling, the proxy's content rows, scoring by rows (the report's
section 1e: tests/test_evidence_report.py)."""

from __future__ import annotations

import numpy as np
import pytest

from goodsam.evaluation.class_maps import get_class_map
from goodsam.experiments.sharpness import content_rows, mask_purity, score_whole
from goodsam.imageio import resample
from goodsam.inference import load_model, predict_labels


def test_resample_keeps_the_size_and_removes_detail_finer_than_the_factor() -> None:
    checker = ((np.indices((40, 64)).sum(0) % 2) * 255).astype(np.uint8)
    image = np.repeat(checker[..., None], 3, axis=2)
    assert resample(image, 1.0) is image
    soft = resample(image, 2.0)
    assert soft.shape == image.shape
    assert np.abs(soft.astype(int) - 128).max() < 40  # a 1-px pattern averages out to grey
    blocks = np.kron(checker[::8, ::8] // 255, np.ones((8, 8), dtype=np.uint8)) * 255
    coarse = np.repeat(blocks[..., None], 3, axis=2)
    assert np.abs(resample(coarse, 2.0).astype(int) - coarse).mean() < 20  # 8-px blocks survive
    with pytest.raises(ValueError, match=">= 1"):
        resample(image, 0.5)


def test_content_rows_are_the_rows_with_any_labelled_pixel() -> None:
    a, b = np.full((10, 6), 255, np.uint8), np.full((10, 6), 255, np.uint8)
    a[3, 2], b[6, :] = 1, 0
    assert content_rows([a, b]) == (3, 7)
    with pytest.raises(ValueError, match="no labelled pixel"):
        content_rows([np.full((4, 4), 255, np.uint8)])


def test_score_whole_splits_the_rows_it_scores() -> None:
    model = load_model("espnetv2-s0.5")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
    class_map = get_class_map("cityscapes19")
    own = class_map.map_prediction(predict_labels(model, image, scale=1))
    target = own.copy()
    target[40:] = (own[40:] + 1) % class_map.num_classes  # wrong below row 40, right above it
    scores = score_whole(model, [(image, target)], class_map, "1", rows=(0, 40))
    assert scores["inside"] == pytest.approx(100.0)
    assert scores["outside"] == pytest.approx(0.0)
    assert 0.0 < scores["all"] < 100.0
    assert set(score_whole(model, [(image, own)], class_map, "1")) == {"all"}


def test_mask_purity_is_the_share_of_mask_pixels_on_their_majority_label() -> None:
    from goodsam.panorama.windows import sliding_windows
    from goodsam.sam.base import MaskSet
    from goodsam.sam.cache import PanoramaMasks

    layout = sliding_windows(4, 8, 4, 4)  # two windows: columns 0-3 and 4-7
    left = np.zeros((1, 4, 4), dtype=bool)
    left[0, :, :2] = True  # 8 pixels
    right = np.zeros((1, 4, 4), dtype=bool)
    right[0, :2] = True  # 8 pixels of the second window
    prediction = np.zeros((4, 8), dtype=np.uint8)
    prediction[0, 0] = 3  # one of the left mask's pixels disagrees
    prediction[0, 4:8] = 5  # the right mask: 4 pixels of 5, 4 of 0

    def masks(m: np.ndarray) -> MaskSet:
        ones = np.ones(1, np.float32)
        return MaskSet(m, m.sum((1, 2)).astype(np.int64), ones, ones, np.zeros((1, 4), np.int64))
    panorama = PanoramaMasks(layout, [masks(left), masks(right)], [])
    assert mask_purity(prediction, panorama) == pytest.approx(100 * (7 + 4) / 16)
