"""SAM mask generators: the fast implementation against SAM itself, on real MobileSAM and real windows."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from goodsam.assets import MOBILE_SAM_SHA256
from goodsam.errors import AssetError, ConfigError, ImageError
from goodsam.sam import AMGSettings, MaskSet, build_mask_generator
from goodsam.sam.fast_amg import MaskUpsampler, stability_score
from goodsam.sam.fast_decoder import FastMaskDecoder
from goodsam.sam.models import load_sam


def _iou_matrix(a: MaskSet, b: MaskSet) -> torch.Tensor:
    x = torch.as_tensor(a.masks.reshape(len(a), -1), dtype=torch.float32)
    y = torch.as_tensor(b.masks.reshape(len(b), -1), dtype=torch.float32)
    inter = x @ y.T
    return inter / (x.sum(1)[:, None] + y.sum(1)[None, :] - inter).clamp_min(1)


def _memoise_encoder(generator, cache: dict) -> None:
    """Share image embeddings between generators of this module (the encoder is the slow part)."""
    predictor = generator.predictor if hasattr(generator, "predictor") else generator.amg.predictor
    compute = predictor.set_image

    def set_image(image: np.ndarray, image_format: str = "RGB") -> None:
        key = (hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest(), image.shape)
        if key not in cache:
            compute(image, image_format)
            cache[key] = (predictor.features, predictor.input_size, predictor.original_size)
        predictor.reset_image()
        predictor.features, predictor.input_size, predictor.original_size = cache[key]
        predictor.is_image_set = True

    predictor.set_image = set_image
    if hasattr(generator, "encode"):  # the fast generator encodes through its own batched ``encode``
        def encode(crops):
            for crop in crops:
                set_image(crop)
            return [cache[(hashlib.sha1(np.ascontiguousarray(c).tobytes()).hexdigest(), c.shape)][:2]
                    for c in crops]

        generator.encode = encode


@pytest.fixture(scope="module")
def encoder_cache() -> dict:
    return {}


@pytest.fixture(scope="module")
def sam():
    return load_sam("mobile_sam")


@pytest.fixture(scope="module")
def window(panorama_1027: np.ndarray) -> np.ndarray:
    """A real 400x512 window of pass_1027U_0 (DensePASS size)."""
    return np.ascontiguousarray(panorama_1027[:, 768:1280])


def _generator(settings: AMGSettings, impl: str, cache: dict):
    generator = build_mask_generator("mobile_sam", settings=settings, impl=impl)
    _memoise_encoder(generator, cache)
    return generator


@pytest.fixture(scope="module")
def fast_masks(window: np.ndarray, encoder_cache: dict) -> MaskSet:
    return _generator(AMGSettings(points_per_side=16), "fast", encoder_cache).generate(window)


def test_fast_generator_segments_a_real_window(fast_masks: MaskSet, window: np.ndarray) -> None:
    assert len(fast_masks) >= 5
    assert fast_masks.shape == window.shape[:2]
    assert fast_masks.masks.any(0).mean() >= 0.5


def test_maskset_fields_are_consistent(fast_masks: MaskSet) -> None:
    m = fast_masks
    n = len(m)
    assert m.masks.dtype == bool and m.masks.shape[0] == n
    assert m.area.dtype == np.int64 and np.array_equal(m.area, m.masks.reshape(n, -1).sum(1))
    assert m.predicted_iou.dtype == np.float32 and (m.predicted_iou > 0.88).all()
    assert m.stability_score.dtype == np.float32 and (m.stability_score >= 0.95).all()
    assert m.boxes.dtype == np.int64 and m.boxes.shape == (n, 4)
    for mask, (x, y, w, h) in zip(m.masks, m.boxes, strict=True):
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        assert (x, y, x + w, y + h) == (cols[0], rows[0], cols[-1], rows[-1])


def test_fast_matches_reference_on_a_real_window(window: np.ndarray, encoder_cache: dict) -> None:
    settings = AMGSettings(points_per_side=6)
    ref = _generator(settings, "reference", encoder_cache).generate(window)
    fast = _generator(settings, "fast", encoder_cache).generate(window)
    assert len(ref) >= 2
    iou = _iou_matrix(ref, fast)
    assert (iou.max(1).values >= 0.9).all() and (iou.max(0).values >= 0.9).all()
    match = iou.argmax(1)
    np.testing.assert_allclose(fast.predicted_iou[match], ref.predicted_iou, atol=1e-4)
    np.testing.assert_allclose(fast.stability_score[match], ref.stability_score, atol=1e-3)
    screened = _generator(settings, "fast", encoder_cache)
    screened.screen = screened.check_screen = True  # the optional low-res screen changes nothing
    again = screened.generate(window)
    assert np.array_equal(again.masks, fast.masks) and screened.stats.get("screen_misses", 0) == 0


@pytest.mark.slow
def test_crop_layers_and_small_regions_match_reference(window: np.ndarray, encoder_cache: dict) -> None:
    try:
        import cv2  # noqa: F401
        min_area = 200
    except ImportError:  # small-region removal needs OpenCV; crops are still compared
        min_area = 0
    image = np.ascontiguousarray(window[100:300, :256])
    settings = AMGSettings(points_per_side=3, crop_n_layers=1, min_mask_region_area=min_area,
                           pred_iou_thresh=0.8, stability_score_thresh=0.9)
    ref = _generator(settings, "reference", encoder_cache).generate(image)
    fast = _generator(settings, "fast", encoder_cache).generate(image)
    assert len(ref) == len(fast) >= 1
    iou = _iou_matrix(ref, fast)
    assert (iou.max(1).values >= 0.9).all() and (iou.max(0).values >= 0.9).all()


def test_fast_decoder_equals_sam_decoder(sam, window: np.ndarray, encoder_cache: dict) -> None:
    generator = _generator(AMGSettings(points_per_side=4), "fast", encoder_cache)
    predictor = generator.predictor
    predictor.set_image(window)
    model = sam.model
    points = torch.tensor([[[100.0, 80.0]], [[700.0, 300.0]], [[500.0, 600.0]]])
    labels = torch.ones(3, 1, dtype=torch.int)
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points=(points, labels), boxes=None, masks=None)
        pe = model.prompt_encoder.get_dense_pe()
        low, iou = model.mask_decoder(predictor.features, pe, sparse, dense, multimask_output=True)
        fast = FastMaskDecoder(model.mask_decoder, tile=1000)  # tiles that do not divide the grid
        ctx = fast.prepare(predictor.features, pe, dense[:1])
        state = fast.transform(ctx, sparse)
        masks = fast.masks(state, ctx, token_ids=[1, 2, 3])
        part = fast.masks(state, ctx, index=torch.tensor([2]), token_ids=[1, 3], valid=(50, 40))
    torch.testing.assert_close(state.iou[:, 1:], iou, atol=1e-4, rtol=0)
    torch.testing.assert_close(masks, low, atol=2e-3, rtol=1e-4)
    torch.testing.assert_close(part, low[2:3, [0, 2], :200, :160], atol=2e-3, rtol=1e-4)


def test_fast_decoder_fits_segment_anything_decoder() -> None:
    """SAM ViT-B/L/H share one decoder class (segment_anything): same results with random weights."""
    from segment_anything.modeling import MaskDecoder, TwoWayTransformer

    torch.manual_seed(0)
    decoder = MaskDecoder(transformer_dim=256, transformer=TwoWayTransformer(
        depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)).eval()
    image, pe = torch.randn(1, 256, 64, 64), torch.randn(1, 256, 64, 64)
    sparse, dense = torch.randn(2, 2, 256), torch.randn(1, 256, 1, 1).expand(2, -1, 64, 64)
    with torch.no_grad():
        low, iou = decoder(image, pe, sparse, dense, multimask_output=True)
        fast = FastMaskDecoder(decoder)
        ctx = fast.prepare(image, pe, dense[:1, :, :1, :1])
        state = fast.transform(ctx, sparse)
        masks = fast.masks(state, ctx, token_ids=[1, 2, 3])
    torch.testing.assert_close(state.iou[:, 1:], iou, atol=1e-4, rtol=0)
    torch.testing.assert_close(masks, low, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize(("size", "input_size"), [((400, 512), (800, 1024)), ((400, 256), (1024, 655))])
def test_mask_upsampler_equals_sam_postprocess(sam, size, input_size) -> None:
    low = torch.randn(3, 1, 256, 256) * 4
    expected = sam.model.postprocess_masks(low, input_size, size)[:, 0]
    upsampler = MaskUpsampler(1024, input_size, size, torch.device("cpu"))
    got = upsampler(upsampler.crop(low[:, 0]))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)
    exact = stability_score(expected, 0.0, 1.0)
    torch.testing.assert_close(stability_score(got, 0.0, 1.0), exact)
    # the screen's bound never rejects what the exact score keeps (smooth fields, like real logits)
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    radius = torch.linspace(10, 90, 16)[:, None, None]
    slope = torch.logspace(-1.5, 0.5, 4).repeat_interleave(4)[:, None, None]
    smooth = (radius - ((yy - 90) ** 2 + (xx - 120) ** 2).sqrt()) * slope  # blobs, sharp to blurry
    smooth = smooth + F.avg_pool2d(torch.randn(16, 1, 262, 262), 7, stride=1)[:, 0]
    bound = upsampler.stability_upper_bound(upsampler.crop(smooth), 0.0, 1.0)
    assert (bound >= stability_score(upsampler(upsampler.crop(smooth)), 0.0, 1.0)).all()
    assert (bound < 0.95).any() and (bound >= 0.95).any()


def test_generator_identity_and_batch(encoder_cache: dict, window: np.ndarray) -> None:
    settings = AMGSettings(points_per_side=2)
    generator = _generator(settings, "fast", encoder_cache)
    assert (generator.model_name, generator.impl, generator.settings) == ("mobile_sam", "fast", settings)
    assert generator.weights_sha256 == MOBILE_SAM_SHA256
    reference = build_mask_generator(settings=settings, impl="reference")
    assert reference.impl == "reference" and reference.weights_sha256 == MOBILE_SAM_SHA256
    results = generator.generate_batch([window, window])  # embeddings cached: cheap
    assert len(results) == 2 and all(r.shape == window.shape[:2] for r in results)
    assert all(np.array_equal(a, b) for a, b in zip(results[0].masks, results[1].masks, strict=True))
    with pytest.raises(ImageError):
        generator.generate(window[..., 0])


def test_unknown_model_impl_or_settings_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown SAM model"):
        build_mask_generator("sam_vit_x")
    with pytest.raises(ConfigError, match="impl"):
        build_mask_generator(impl="turbo")
    with pytest.raises(ConfigError):
        build_mask_generator(settings=AMGSettings(pred_iou_thresh=1.5))
    with pytest.raises(ConfigError, match="device"):
        build_mask_generator(device="tpu")


def test_missing_or_corrupt_weights_raise_asset_error(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import goodsam.assets as assets

    monkeypatch.setattr(assets, "asset_roots", lambda: [("empty", tmp_path / "none")])
    with pytest.raises(AssetError, match="sam_vit_h"):
        build_mask_generator("sam_vit_h")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(AssetError, match="corrupt or not a checkpoint"):
        build_mask_generator("sam_vit_b", weights=garbage)
    with pytest.raises(AssetError, match="corrupt"):
        build_mask_generator("mobile_sam", weights=garbage)
    with pytest.raises(AssetError):
        build_mask_generator("mobile_sam", weights=tmp_path / "absent.pt")


def test_batched_encoder_gives_the_masks_of_one_image_per_call(window: np.ndarray) -> None:
    """A window and an overlap-sized crop (different resized shapes) through one encoder call: the same
    features and masks as one call each (no memoised embeddings here: the real encoder both ways)."""
    images = [window, np.ascontiguousarray(window[:, 128:384])]
    generator = build_mask_generator("mobile_sam", settings=AMGSettings(points_per_side=4), impl="fast")
    single = [generator.generate(image) for image in images]
    generator.encoder_batch = 2
    calls: list[int] = []
    encode = generator.encode
    generator.encode = lambda crops: calls.append(len(crops)) or encode(crops)
    batched = generator.generate_batch(images)
    assert calls == [2]  # one encoder call for both
    one, both = encode(images[1:]), encode(images)
    assert one[0][1] == both[1][1] and torch.equal(one[0][0], both[1][0])
    for a, b in zip(single, batched, strict=True):
        assert len(a) > 0 and np.array_equal(a.masks, b.masks) and np.array_equal(a.boxes, b.boxes)
        assert np.array_equal(a.predicted_iou, b.predicted_iou)


def test_onnx_encoder_gives_the_masks_of_the_pytorch_encoder(window: np.ndarray) -> None:
    """The CPU default runs SAM's image encoder in ONNX Runtime: features equal PyTorch's to float rounding
    and the masks of a real window pixel-identical (no memoised embeddings: both encoders for real)."""
    from goodsam.experiments.amg import encoder_runtime_seconds
    from goodsam.sam import onnx_encoder

    settings = AMGSettings(points_per_side=8)
    by_torch = build_mask_generator("mobile_sam", settings=settings, impl="fast", encoder_runtime="torch")
    by_onnx = build_mask_generator("mobile_sam", settings=settings, impl="fast")  # auto: ONNX on the CPU
    assert (by_torch.encoder_runtime, by_onnx.encoder_runtime) == ("torch", "onnxruntime")
    assert onnx_encoder.export_path(by_onnx.sam).exists()
    (a, size_a), (b, size_b) = by_torch.encode([window])[0], by_onnx.encode([window])[0]
    assert size_a == size_b and a.shape == b.shape and a.dtype == b.dtype
    assert 0 < float((a - b).abs().max()) <= 1e-4 * float(a.abs().max())  # two runtimes, same numbers
    masks_torch, masks_onnx = by_torch.generate(window), by_onnx.generate(window)
    assert len(masks_torch) >= 3 and len(masks_torch) == len(masks_onnx)
    assert all(np.array_equal(x, y) for x, y in zip(masks_torch.masks, masks_onnx.masks, strict=True))
    with pytest.raises(ConfigError, match="encoder runtime"):
        build_mask_generator("mobile_sam", settings=settings, encoder_runtime="tensorrt")
    timed = encoder_runtime_seconds(by_onnx, [window])  # what benchmarks/amg.py prints
    assert timed["torch"] > 0 and timed["onnxruntime"] > 0 and 0 < timed["max_rel_diff"] <= 1e-4
    assert by_onnx.image_encoder is not by_onnx.sam.model.image_encoder  # put back afterwards


def test_onnx_encoder_failure_falls_back_to_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    from goodsam.sam import onnx_encoder

    def broken(sam):
        raise RuntimeError("exporter unavailable")

    monkeypatch.setattr(onnx_encoder, "export_encoder", broken)
    with pytest.warns(RuntimeWarning, match="exporter unavailable"):
        generator = build_mask_generator("mobile_sam", settings=AMGSettings(points_per_side=2))
    assert generator.encoder_runtime == "torch"
    with pytest.raises(RuntimeError, match="exporter unavailable"):  # asked for by name: no fallback
        build_mask_generator("mobile_sam", settings=AMGSettings(points_per_side=2),
                             encoder_runtime="onnxruntime")


@pytest.fixture
def without_native(monkeypatch: pytest.MonkeyPatch):
    """Runs the PyTorch path of every fused native loop (as on a machine without a C compiler)."""
    from goodsam.sam import native

    monkeypatch.setitem(native.LIBRARY.loaded, "lib", None)


def _decode(generator, window: np.ndarray, count: int = 8):
    h, w = window.shape[:2]
    job = generator.prepare_crop(window, [0, 0, w, h], 0, (h, w))
    decoder = generator.decoder
    state = decoder.transform(job.ctx, job.sparse[100:100 + count])
    low = decoder.masks(state, job.ctx, None, [1, 2, 3], job.upsampler.tokens)
    return state.iou, job.upsampler.crop(low).flatten(0, 1), job.upsampler


def test_native_loops_equal_the_pytorch_path(window: np.ndarray, encoder_cache: dict, request) -> None:
    from goodsam.sam import native

    if native.kernels() is None:
        pytest.skip("no C compiler: only the PyTorch path exists here")
    generator = _generator(AMGSettings(points_per_side=32), "fast", encoder_cache)
    iou, low, upsampler = _decode(generator, window)
    stability, cols = upsampler.stability(low, 0.0, 1.0)
    masks, boxes = upsampler.masks(cols, 0.0)
    request.getfixturevalue("without_native")
    assert native.kernels() is None and upsampler.stability(low, 0.0, 1.0) is None
    iou_t, low_t, _ = _decode(generator, window)
    torch.testing.assert_close(iou, iou_t, atol=1e-5, rtol=0)
    torch.testing.assert_close(low, low_t, atol=2e-3, rtol=1e-4)
    full = upsampler(low)
    torch.testing.assert_close(stability, stability_score(full, 0.0, 1.0), atol=2e-4, rtol=0)
    assert (masks != (full > 0)).float().mean() < 1e-4  # pixels within float rounding of 0 may flip
    from goodsam.sam.fast_amg import masks_to_boxes_xyxy

    assert (boxes - masks_to_boxes_xyxy(masks)).abs().max() == 0


def test_fast_generator_without_native_loops(window: np.ndarray, encoder_cache: dict, without_native) -> None:
    settings = AMGSettings(points_per_side=6)
    ref = _generator(settings, "reference", encoder_cache).generate(window)
    fast = _generator(settings, "fast", encoder_cache).generate(window)
    iou = _iou_matrix(ref, fast)
    assert len(ref) >= 2 and (iou.max(1).values >= 0.9).all() and (iou.max(0).values >= 0.9).all()


def test_native_build_failure_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from goodsam.sam import native

    monkeypatch.setattr(native.LIBRARY, "loaded", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert native.kernels() is None and not native.usable(torch.zeros(1))
    monkeypatch.setattr(native.LIBRARY, "loaded", {})
    monkeypatch.setenv("GOODSAM_NATIVE", "0")
    monkeypatch.delenv("CC")
    assert native.kernels() is None


def test_fast_path_structure_check_names_what_a_sam_release_lacks() -> None:
    """The fast generator reads SAM internals by name: a package without them fails with one clear line."""
    import copy
    import types

    from goodsam.sam.compat import check_fast_path_structure

    sam = load_sam("mobile_sam")
    check_fast_path_structure(sam.model, sam.package)  # the installed, tested release passes
    changed = copy.deepcopy(sam.model)
    del changed.mask_decoder.transformer.layers[0].cross_attn_token_to_image.q_proj
    with pytest.raises(ConfigError, match=r"layers\[0\]\.cross_attn_token_to_image\.q_proj.*--impl ref"):
        check_fast_path_structure(changed, sam.package)
    bare = types.ModuleType("segment_anything_2")
    with pytest.raises(ConfigError, match="segment_anything_2.SamPredictor"):
        check_fast_path_structure(sam.model, bare)


def test_decoder_profile_splits_the_decoder_time(window: np.ndarray, encoder_cache: dict) -> None:
    """benchmarks/amg.py's profile: the parts add up to the measured time, the matrix products' FLOPs are
    those the FLOP counter finds, and the floor it prints sits below the measured time."""
    from goodsam.experiments.amg import decoder_floor, decoder_profile, profile_lines

    generator = _generator(AMGSettings(points_per_side=8), "fast", encoder_cache)
    profile = decoder_profile(generator, window)
    for stage in ("transform", "upscale"):
        p = profile[stage]
        parts = p["matmul_ms"] + p["other_ms"] + p["fused_ms"] + p["rest_ms"]
        assert parts == pytest.approx(p["wall_ms"])
        assert min(p["matmul_ms"], p["other_ms"], p["matmul_alone_ms"]) > 0
    counted = decoder_floor(generator, window)
    assert profile["transform"]["matmul_gflop"] == pytest.approx(counted["transform_gflop"], rel=0.02)
    lines = profile_lines(profile, counted["sgemm_rate"], {"prompts": 64, "upscaled_prompts": 60}, 1.0, 2,
                          100.0, 1)
    assert lines[1].lstrip().startswith("transform") and "fused C loops" in lines[1]
    assert "Floor of this factorisation" in lines[-1]
