"""The fused CPU backward passes of ESPNetv2 (goodsam.segmenters.fused): PyTorch's values and gradients
up to float rounding, and PyTorch's own functions where the library is unavailable."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from goodsam.segmenters import ESPNetv2
from goodsam.segmenters.fused import LIBRARY, norm_prelu, prelu, upsample_bilinear

needs_library = pytest.mark.skipif(LIBRARY.get() is None, reason="no C compiler: only PyTorch's path here")


def _gradients(out: torch.Tensor, inputs: list[torch.Tensor],
               weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad((out * weight).sum(), inputs)


def _assert_close(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...]) -> None:
    for a, b in zip(got, want, strict=True):  # sums over many pixels, in another order
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


@pytest.fixture
def without_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(LIBRARY.loaded, "lib", None)


@needs_library
@pytest.mark.parametrize("shape", [(2, 5, 7, 19), (1, 16, 40, 64)])
def test_prelu_backward(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape, requires_grad=True)
    slope = torch.rand(shape[1], requires_grad=True)
    out = prelu(x, slope)
    assert type(out.grad_fn).__name__ == "_PReLUBackward"
    expected = F.prelu(x, slope)
    assert torch.equal(out, expected)
    weight = torch.randn_like(out)
    _assert_close(_gradients(out, [x, slope], weight), _gradients(expected, [x, slope], weight))


@needs_library
@pytest.mark.parametrize(("channels", "channels_last"), [(6, False), (10, True), (16, True), (24, True)])
def test_norm_prelu_forward_and_backward(channels: int, channels_last: bool) -> None:
    """NCHW, and channels-last with pattern periods lcm(C, 16) of 80, 16 and 48 floats (the pyramid
    merge's per-branch norm); the output and the input gradient keep the input's layout."""
    torch.manual_seed(0)
    x = torch.randn(2, channels, 9, 21)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    scale, shift = torch.randn(channels, requires_grad=True), torch.randn(channels, requires_grad=True)
    slope = torch.rand(channels, requires_grad=True)
    out = norm_prelu(x, scale, shift, slope)
    assert type(out.grad_fn).__name__ == "_NormPReLUBackward"
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    expected = F.prelu(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1), slope)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    weight = torch.randn_like(out)
    params = [x, scale, shift, slope]
    _assert_close(_gradients(out, params, weight), _gradients(expected, params, weight))


@needs_library
@pytest.mark.parametrize(("size_in", "size_out"),
                         [((25, 32), (50, 64)), ((7, 13), (40, 41)), ((5, 9), (1, 4)), ((50, 64), (25, 32))])
def test_upsample_bilinear_backward(size_in: tuple[int, int], size_out: tuple[int, int]) -> None:
    torch.manual_seed(0)
    base = torch.randn(2, 5, *size_in, requires_grad=True)
    x = base[:, 1:4]  # a channel slice (not contiguous), as the logits of a 20-channel output
    out = upsample_bilinear(x, size_out)
    assert type(out.grad_fn).__name__ == "_UpsampleBilinearBackward"
    expected = F.interpolate(x, size=size_out, mode="bilinear", align_corners=True)
    assert torch.equal(out, expected)
    weight = torch.randn_like(out)
    _assert_close(_gradients(out, [base], weight), _gradients(expected, [base], weight))


def test_pytorch_paths_without_library_gradient_or_for_channels_last(without_library) -> None:
    x = torch.randn(1, 4, 6, 8, requires_grad=True)
    slope = torch.rand(4, requires_grad=True)
    assert type(prelu(x, slope).grad_fn).__name__ != "_PReLUBackward"
    assert type(upsample_bilinear(x, (12, 16)).grad_fn).__name__ == "UpsampleBilinear2DBackward0"


@needs_library
def test_plain_paths_without_gradient_or_for_channels_last() -> None:
    x = torch.randn(1, 4, 6, 8, requires_grad=True)
    with torch.no_grad():
        assert prelu(x, torch.rand(4)).grad_fn is None
    channels_last = x.contiguous(memory_format=torch.channels_last)
    assert type(upsample_bilinear(channels_last, (12, 16)).grad_fn).__name__ == "UpsampleBilinear2DBackward0"


@needs_library
def test_espnetv2_training_gradients_equal_without_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole network with frozen norms (as training runs it): the same loss and parameter gradients
    with the fused backward passes as with PyTorch's."""
    torch.manual_seed(0)
    model = ESPNetv2("0.5")
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    model.eval()  # frozen norms
    x = torch.randn(2, 3, 64, 96)
    target = torch.randint(0, 19, (2, 64, 96))

    def gradients() -> tuple[torch.Tensor, list[torch.Tensor]]:
        loss = F.cross_entropy(model(x).logits, target)
        grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)  # e.g. tiny pyramids
        return loss.detach(), [g for g in grads if g is not None]

    fused_loss, fused = gradients()
    monkeypatch.setitem(LIBRARY.loaded, "lib", None)
    plain_loss, plain = gradients()
    torch.testing.assert_close(fused_loss, plain_loss, rtol=1e-5, atol=0)
    assert len(fused) == len(plain) > 100
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * float(b.abs().max()) + 1e-7)


def test_half_with_gradient_is_the_average_pool() -> None:
    """ESPNetv2's 3x3 stride-2 average pool as a depth-wise convolution (with a gradient on CPU)."""
    from goodsam.segmenters.espnetv2 import _half

    torch.manual_seed(0)
    x = torch.randn(2, 5, 17, 30, requires_grad=True)
    out = _half(x)
    assert type(out.grad_fn).__name__ == "ConvolutionBackward0"
    expected = F.avg_pool2d(x, 3, stride=2, padding=1)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    weight = torch.randn_like(out)
    _assert_close(_gradients(out, [x], weight), _gradients(expected, [x], weight))
