"""Shared fixtures: the real assets in ../shared/assets (CI has them beside the clone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from goodsam import assets


@pytest.fixture(scope="session", autouse=True)
def _deterministic_threads() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """The asset root holding the real weights and images (fails loudly if absent)."""
    for _, root in assets.asset_roots():
        if (root / "weights").is_dir() and (root / "panoramas").is_dir():
            return root
    pytest.fail("real assets not found: put ../shared beside the checkout or set GOODSAM_ASSETS")


@pytest.fixture(scope="session")
def panorama_1027(assets_dir: Path) -> np.ndarray:
    """The real PASS panorama pass_1027U_0.png resized to DensePASS size 400x2048 (RGB uint8)."""
    from PIL import Image

    image = Image.open(assets_dir / "panoramas" / "pass_1027U_0.png").convert("RGB")
    return np.asarray(image.resize((2048, 400), Image.BILINEAR))
