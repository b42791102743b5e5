"""ERP sliding windows: geometry for 2048, odd widths, narrow panoramas and wrap; crops and stitching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from goodsam.errors import ConfigError
from goodsam.panorama.windows import (
    Overlap,
    Window,
    assemble_tiles,
    crop_overlaps,
    crop_windows,
    layout_from_dict,
    nonoverlapping_windows,
    overlap_pairs,
    sliding_windows,
    stitch_windows,
    tile_offset,
)


def test_densepass_2048_layout() -> None:
    layout = sliding_windows(400, 2048)
    assert [w.x0 for w in layout.windows] == [0, 256, 512, 768, 1024, 1280, 1536]
    assert all(w.width == 512 for w in layout.windows)
    assert len(layout.overlaps) == 6
    assert layout.overlaps[0] == Overlap(0, 1, 256, 256, 256, 0)
    assert [(o.left, o.right, o.x0, o.width) for o in layout.overlaps][-1] == (5, 6, 1536, 256)
    assert layout_from_dict(layout.as_dict()) == layout


def test_odd_width_last_window_right_aligned() -> None:
    layout = sliding_windows(100, 2100)
    starts = [w.x0 for w in layout.windows]
    assert starts == [0, 256, 512, 768, 1024, 1280, 1536, 1588]
    assert layout.windows[-1].x0 + layout.windows[-1].width == 2100
    last = layout.overlaps[-1]
    assert (last.left, last.right, last.x0, last.width, last.left_offset) == (6, 7, 1588, 460, 52)
    covered = np.zeros(2100, bool)
    for i in range(layout.num_windows):
        covered[layout.window_columns(i)] = True
    assert covered.all()


def test_narrow_panorama_single_window() -> None:
    layout = sliding_windows(64, 300, window_width=512)
    assert layout.windows == (Window(0, 0, 300),) and layout.overlaps == ()
    assert layout.window_width == 512
    x = torch.randn(2, 64, 300)
    assert torch.equal(crop_windows(x, layout)[0], x)
    assert torch.allclose(stitch_windows(crop_windows(x, layout), layout), x)


def test_wrap_windows_cross_the_seam() -> None:
    layout = sliding_windows(10, 2048, wrap=True)
    assert layout.num_windows == 8 and layout.num_overlaps == 8
    seam = layout.overlaps[-1]
    assert (seam.left, seam.right, seam.x0, seam.width, seam.left_offset) == (7, 0, 0, 256, 256)
    assert list(layout.window_columns(7)[:3]) == [1792, 1793, 1794]
    assert list(layout.window_columns(7)[-2:]) == [254, 255]
    odd = sliding_windows(10, 1000, window_width=512, stride=256, wrap=True)
    assert [w.x0 for w in odd.windows] == [0, 256, 512, 768]
    assert (odd.overlaps[-1].x0, odd.overlaps[-1].width) == (0, 280)  # window 3 ends at 1280 = 1000 + 280


def test_invalid_parameters() -> None:
    with pytest.raises(ConfigError, match="stride"):
        sliding_windows(10, 2048, window_width=256, stride=512)
    with pytest.raises(ConfigError, match="positive"):
        sliding_windows(10, 0)


@pytest.mark.parametrize("width,wrap",
                         [(2048, False), (2100, False), (1000, True), (2048, True), (300, False)])
def test_crops_agree_with_columns_and_stitch_round_trip(width: int, wrap: bool) -> None:
    layout = sliding_windows(6, width, wrap=wrap)
    pano = torch.randn(3, 6, width, requires_grad=True)
    windows = crop_windows(pano, layout)
    assert windows.shape == (layout.num_windows, 3, 6, layout.windows[0].width)
    for i in range(layout.num_windows):
        assert torch.equal(windows[i], pano[..., layout.window_columns(i)])
    stitched = stitch_windows(windows, layout)
    assert torch.allclose(stitched, pano)
    stitched.sum().backward()
    assert pano.grad is not None and torch.allclose(pano.grad, torch.ones_like(pano))
    crops, pairs = crop_overlaps(pano, layout), overlap_pairs(windows, layout)
    assert len(crops) == len(pairs) == layout.num_overlaps
    for k, (crop, (a, b)) in enumerate(zip(crops, pairs, strict=True)):
        assert torch.equal(crop, pano[..., layout.overlap_columns(k)])
        assert torch.equal(a, crop) and torch.equal(b, crop)
    assert torch.allclose(assemble_tiles(windows, layout), pano)
    numpy_windows = crop_windows(pano.detach().numpy(), layout)
    assert np.array_equal(numpy_windows, windows.detach().numpy())


def test_stitch_averages_overlaps() -> None:
    layout = sliding_windows(1, 8, window_width=4, stride=2)
    maps = torch.stack([torch.full((1, 1, 4), float(i)) for i in range(layout.num_windows)])
    stitched = stitch_windows(maps, layout)[0, 0]
    assert stitched.tolist() == [0.0, 0.0, 0.5, 0.5, 1.5, 1.5, 2.0, 2.0]


def test_nonoverlapping_tiling() -> None:
    layout = sliding_windows(4, 2048)
    tiles = nonoverlapping_windows(layout)
    assert tiles == [Window(0, 0, 512), Window(2, 512, 512), Window(4, 1024, 512), Window(6, 1536, 512)]
    odd = sliding_windows(4, 2100)
    tiles = nonoverlapping_windows(odd)
    assert [t.index for t in tiles] == [0, 2, 4, 6, 7]
    assert (tiles[-1].x0, tiles[-1].width, tile_offset(odd, tiles[-1])) == (2048, 52, 460)
    assert sum(t.width for t in tiles) == 2100
    wrapped = sliding_windows(4, 1000, wrap=True)
    tiles = nonoverlapping_windows(wrapped)
    assert [(t.index, t.x0, t.width) for t in tiles] == [(0, 0, 512), (2, 512, 488)]
