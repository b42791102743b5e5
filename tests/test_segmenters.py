"""Segmenters: ESPNetv2 parity with the original implementation, SegFormer builds, the registry's errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from goodsam.errors import AssetError, ConfigError
from goodsam.segmenters import (
    SEGMENTER_NAMES,
    ESPNetv2,
    SegFormer,
    available_segmenters,
    build_segmenter,
    load_state_dict_file,
    to_image_tensor,
)
from goodsam.segmenters.espnetv2 import (
    Conv2d,
    ConvBN,
    DilatedDW,
    PyramidPool,
    _adaptive_pool_axis,
    _frozen_norm,
)

SCALES = ("0.5", "1.0", "1.5", "2.0")
# parameter counts of the released models (README: 0.08M, 0.23M, 0.47M, 0.79M)
ESPNET_PARAMS = {"0.5": 80_342, "1.0": 234_010, "1.5": 468_362, "2.0": 789_242}


def weight_file(assets_dir: Path, scale: str) -> Path:
    return assets_dir / "weights" / f"espnetv2_s{scale}_cityscapes_1024x512.pth"


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def reference(assets_dir: Path) -> dict[str, np.ndarray]:
    with np.load(assets_dir / "fixtures" / "espnetv2_reference_logits.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("scale", SCALES)
def test_espnetv2_strict_load_and_reference_parity(scale: str, assets_dir: Path,
                                                   reference: dict[str, np.ndarray]) -> None:
    model = ESPNetv2(scale).eval()
    result = model.load_state_dict(load_state_dict_file(weight_file(assets_dir, scale)), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert n_params(model) == ESPNET_PARAMS[scale]
    zoo = build_segmenter(f"espnetv2-s{scale}")  # checksum-verified zoo path, same tensors
    assert zoo.name == f"espnetv2-s{scale}" and not zoo.training
    assert all(torch.equal(a, b) for a, b in zip(zoo.state_dict().values(), model.state_dict().values(),
                                                 strict=True))

    images = to_image_tensor(reference["input_rgb_uint8"])
    with torch.no_grad():
        out = zoo.segment(images)
    expected = torch.from_numpy(reference[f"logits_s{scale}"].astype(np.float32))[None]
    assert out.raw_logits is not None and out.raw_logits.shape == expected.shape == (1, 20, 128, 256)
    max_diff = (out.raw_logits - expected).abs().max().item()
    agreement = (out.raw_logits.argmax(1) == expected.argmax(1)).float().mean().item()
    print(f"espnetv2-s{scale}: max |diff| {max_diff:.4g}, argmax agreement {100 * agreement:.3f} %")
    assert max_diff <= 1e-2
    assert agreement >= 0.999
    assert torch.equal(out.logits, out.raw_logits[:, :19])
    assert [tuple(f.shape[-2:]) for f in out.features] == [(64, 128), (32, 64), (16, 32), (8, 16)]


@pytest.mark.parametrize("name", ["espnetv2-s0.5", "segformer-b0"])
def test_logits_at_input_size_for_odd_sizes(name: str) -> None:
    model = build_segmenter(name)
    images = torch.randint(0, 256, (1, 3, 97, 211), dtype=torch.uint8)
    with torch.no_grad():
        out = model.segment(images)
    assert out.logits.shape == (1, 19, 97, 211) and torch.isfinite(out.logits).all()
    assert len(out.features) == 4 and all(f.shape[0] == 1 for f in out.features)
    if name.startswith("espnetv2"):
        assert out.raw_logits.shape == (1, 20, 97, 211)


def test_segformer_random_init_sizes() -> None:
    names = ("segformer-b0", "segformer-b1", "segformer-b2")
    counts = {name: n_params(SegFormer(name)) / 1e6 for name in names}
    print({name: round(count, 2) for name, count in counts.items()})
    assert abs(counts["segformer-b0"] - 3.7) <= 0.1
    assert abs(counts["segformer-b1"] - 13.7) <= 0.1
    assert abs(counts["segformer-b2"] - 27.4) <= 0.1


@pytest.mark.parametrize("name", ["segformer-b0", "espnetv2-s0.5"])
def test_one_optimisation_step(name: str) -> None:
    torch.manual_seed(0)
    model = build_segmenter(name, pretrained=False).train()
    before = [p.detach().clone() for p in model.parameters()]
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    labels = torch.randint(0, 19, (2, 64, 96))
    loss = F.cross_entropy(model.segment(images).logits, labels)
    loss.backward()
    optimiser.step()
    assert torch.isfinite(loss)
    changed = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert changed >= 0.9 * len(before)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ConfigError) as info:
        build_segmenter("espnetv3-s9")
    message = str(info.value)
    assert "\n" not in message and all(name in message for name in SEGMENTER_NAMES)
    assert set(available_segmenters()) == set(SEGMENTER_NAMES)


def one_line_asset_error(**kwargs: object) -> str:
    with pytest.raises(AssetError) as info:
        build_segmenter(**kwargs)
    message = str(info.value)
    assert message and "\n" not in message and "Traceback" not in message
    return message


def test_truncated_and_mismatched_weight_files(assets_dir: Path, tmp_path: Path) -> None:
    good = weight_file(assets_dir, "0.5")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "truncated" in one_line_asset_error(name="espnetv2-s0.5", weights=truncated)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint" * 8)
    assert "junk.pth" in one_line_asset_error(name="espnetv2-s0.5", weights=junk)
    assert "not found" in one_line_asset_error(name="espnetv2-s0.5", weights=tmp_path / "absent.pth")
    message = one_line_asset_error(name="espnetv2-s2.0", weights=good)
    assert "does not match espnetv2-s2.0" in message


def test_zoo_weight_with_wrong_checksum(assets_dir: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    good = weight_file(assets_dir, "0.5")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / good.name).write_bytes(good.read_bytes()[:-1000])
    monkeypatch.setenv("GOODSAM_ASSETS", str(tmp_path))
    assert "corrupt" in one_line_asset_error(name="espnetv2-s0.5")


def test_espnetv2_random_init_is_not_the_zoo() -> None:
    random_model = build_segmenter("espnetv2-s0.5", pretrained=False)
    zoo = build_segmenter("espnetv2-s0.5")
    key = "base_net.level1.conv.weight"
    assert not torch.equal(random_model.state_dict()[key], zoo.state_dict()[key])


def test_explicit_safetensors_state_dict(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    zoo = build_segmenter("espnetv2-s0.5")
    save_file(zoo.state_dict(), str(tmp_path / "model.safetensors"))
    loaded = build_segmenter("espnetv2-s0.5", weights=tmp_path / "model.safetensors", pretrained=False)
    assert all(torch.equal(a, b) for a, b in zip(zoo.state_dict().values(), loaded.state_dict().values(),
                                                 strict=True))


def test_segformer_directory_round_trip(tmp_path: Path) -> None:
    model = SegFormer("segformer-b0").eval()
    model.model.save_pretrained(tmp_path / "b0")
    loaded = build_segmenter(str(tmp_path / "b0"))
    assert loaded.name == "segformer-b0"
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(loaded.segment(images).logits, model.segment(images).logits, atol=1e-5)
    with pytest.raises(ConfigError, match="holds a segformer-b0"):
        build_segmenter("segformer-b1", weights=str(tmp_path / "b0"))


def test_unreachable_hub_is_one_line_asset_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail fast, no retries
    message = one_line_asset_error(name="nvidia/segformer-b0-finetuned-cityscapes-1024-1024")
    assert "nvidia/segformer-b0-finetuned-cityscapes-1024-1024" in message


@pytest.mark.parametrize(("size_in", "size_out", "max_ratio"), [
    (12, 8, 2.5), (8, 5, 10.0), (53, 6, 10.0), (3, 5, 2.0), (97, 49, 2.0), (16, 8, 3.0)])
def test_export_pooling_matches_adaptive_avg_pool(size_in: int, size_out: int, max_ratio: float) -> None:
    x = torch.randn(2, 3, size_in, size_in + 5)
    out_w = size_out + 2
    expected = F.adaptive_avg_pool2d(x, (size_out, out_w))
    bins = int(max_ratio) + 2
    got = _adaptive_pool_axis(_adaptive_pool_axis(x, 2, size_out, bins), 3, out_w, bins)
    assert torch.allclose(got, expected, atol=1e-6)


def test_traced_pyramid_pool_keeps_dynamic_sizes() -> None:
    """The symbolic (ONNX export) path, traced at one size, reproduces eager results at others."""
    module = PyramidPool(24, 10, 16).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, torch.randn(1, 24, 8, 16), check_trace=False)
        for height, width in ((13, 27), (3, 61), (40, 9)):
            other = torch.randn(2, 24, height, width)
            assert torch.allclose(traced(other), module(other), atol=1e-5)


@pytest.mark.parametrize(("cin", "cout", "kernel", "groups"),
                         [(50, 10, 3, 10), (128, 48, 3, 16), (32, 48, 3, 16), (32, 16, 1, 4)])
def test_grouped_conv_fast_paths_match_the_plain_convolution(cin: int, cout: int, kernel: int,
                                                             groups: int) -> None:
    """The CPU paths of ``Conv2d`` (grouped 1x1 as a batched product; grouped kxk in channels-last with a
    gradient) give the convolution's values and gradients, and an NCHW output."""
    torch.manual_seed(0)
    conv = Conv2d(cin, cout, kernel, 1, (kernel - 1) // 2, groups=groups, bias=False)
    x = torch.randn(2, cin, 24, 40, requires_grad=True)
    out = conv(x)
    grad = torch.randn_like(out)
    out.backward(grad)
    x_ref = x.detach().clone().requires_grad_()
    weight_ref = conv.weight.detach().clone().requires_grad_()
    expected = F.conv2d(x_ref, weight_ref, None, 1, (kernel - 1) // 2, 1, groups)
    expected.backward(grad)
    assert out.is_contiguous() and out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv.weight.grad, weight_ref.grad, rtol=1e-5, atol=1e-4)
    assert conv._channels_last_backward(x, conv.weight) == (kernel != 1 and cin // groups >= 4)
    with torch.no_grad():  # no gradient: a kxk conv takes the plain NCHW path (inference unchanged)
        assert not conv._channels_last_backward(x, conv.weight)
        if kernel != 1:
            assert torch.equal(conv(x), F.conv2d(x, conv.weight, None, 1, (kernel - 1) // 2, 1, groups))


def _randomise_norms(module: torch.nn.Module) -> None:
    """Pretrained-like batch norms and PReLU slopes (not the identity a fresh module has)."""
    generator = torch.Generator().manual_seed(1)
    for sub in module.modules():
        if isinstance(sub, torch.nn.BatchNorm2d):
            for tensor in (sub.running_mean, sub.weight.data, sub.bias.data):
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
            sub.running_var.copy_(torch.rand(sub.running_var.shape, generator=generator) + 0.5)
        elif isinstance(sub, torch.nn.PReLU):
            sub.weight.data.copy_(torch.rand(sub.weight.shape, generator=generator))


@pytest.mark.parametrize("grad", [True, False])
def test_pyramid_pool_channels_last_merge_matches_the_plain_merge(grad: bool) -> None:
    """With frozen batch norms the pyramid runs channels-last (per-branch BN + PReLU, the shuffle as a
    stack): the values and every gradient of ``merge_layer(cat(branches))``, and an NCHW output."""
    torch.manual_seed(0)
    module = PyramidPool(24, 10, 16)
    _randomise_norms(module)
    module.eval()
    x = torch.randn(2, 24, 30, 44, requires_grad=grad)
    assert module._channels_last_merge(x)
    with torch.set_grad_enabled(grad):
        out = module(x)
        projected = module.projection_layer(x)
        expected = module.merge_layer(torch.cat(module._branches(projected), 1))
        expected = module.br(expected)
    assert out.is_contiguous() and out.shape == expected.shape == (2, 16, 30, 44)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    if not grad:
        return
    weight = torch.randn_like(out)
    params = list(module.parameters())
    got = torch.autograd.grad((out * weight).sum(), [x, *params])
    want = torch.autograd.grad((expected * weight).sum(), [x, *params])
    for a, b in zip(got, want, strict=True):  # sums over every pixel, in another order
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))
    module(x).sum().backward()  # depth-wise weight gradients in the parameters' own strides (for DDP)
    for stage in module.stages:
        assert stage.weight.grad.stride() == torch.empty(stage.weight.shape).stride()


def test_pyramid_pool_with_training_norms_keeps_the_plain_merge() -> None:
    """Batch norms in training mode update their statistics per channel: the plain path runs."""
    module = PyramidPool(24, 10, 16).train()
    assert not module._channels_last_merge(torch.randn(1, 24, 8, 16))


def _assert_same_gradients(out: torch.Tensor, expected: torch.Tensor, inputs: list[torch.Tensor]) -> None:
    """Gradients of a random weighting of ``out`` and of ``expected`` agree (sums in another order)."""
    weight = torch.randn_like(out)
    got = torch.autograd.grad((out * weight).sum(), inputs, retain_graph=True)
    want = torch.autograd.grad((expected * weight).sum(), inputs, retain_graph=True)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


@pytest.mark.parametrize("input_grad", [True, False])
@pytest.mark.parametrize("dilation", [2, 3])
def test_dilated_depthwise_backward_matches_autograd(dilation: int, input_grad: bool) -> None:
    """A stride-1 dilated depth-wise conv with a gradient takes the backward made of forward convs: the
    convolution's values, and the input and weight gradients of PyTorch's own backward."""
    torch.manual_seed(0)
    module = DilatedDW(12, 1, dilation)
    x = torch.randn(3, 12, 21, 34, requires_grad=input_grad)
    out = module(x)
    assert type(out.grad_fn).__name__ == "_DilatedDepthwiseConvBackward"
    expected = F.conv2d(x, module.conv.weight, None, 1, dilation, dilation, 12)
    assert torch.equal(out, expected)
    _assert_same_gradients(out, expected, [x, module.conv.weight] if input_grad else [module.conv.weight])
    with torch.no_grad():  # inference and strided or undilated convs: the plain convolution
        assert module(x).grad_fn is None
    assert type(DilatedDW(12, 2, dilation)(x).grad_fn).__name__ == "ConvolutionBackward0"


@pytest.mark.parametrize(("cin", "cout", "kernel", "groups"),
                         [(16, 24, 1, 4), (32, 48, 3, 16), (8, 12, 3, 1)])
def test_frozen_norm_folds_into_the_convolution(cin: int, cout: int, kernel: int, groups: int) -> None:
    """Conv + frozen batch norm (+ PReLU) as one convolution with the folded weight and bias: the values
    of ``act(bn(conv(x)))`` and every gradient (input, conv weight, the norm's weight and bias, slope)."""
    torch.manual_seed(0)
    module = ConvBN(cin, cout, kernel, groups=groups)
    _randomise_norms(module)
    module.eval()
    assert _frozen_norm(module.bn) is not None
    x = torch.randn(2, cin, 20, 30, requires_grad=True)
    out = module(x)
    assert "BatchNorm" not in type(out.grad_fn.next_functions[0][0]).__name__
    expected = module.act(module.bn(module.conv(x)))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    _assert_same_gradients(out, expected, [x, *module.parameters()])


def test_training_norm_is_not_folded() -> None:
    """A batch norm in training mode normalises with batch statistics and updates its running ones."""
    module = ConvBN(8, 12, 3).train()
    assert _frozen_norm(module.bn) is None
    before = module.bn.running_mean.clone()
    module(torch.randn(2, 8, 10, 10) + 3.0)
    assert not torch.equal(module.bn.running_mean, before)
