"""ESPNetv2 for semantic segmentation (Mehta et al., CVPR 2019), compatible with the EdgeNets weights.

Layout (parameter names match the released Cityscapes state_dicts, so they load with ``strict=True``):

* ``base_net``: the EESP encoder. ``level1`` is a strided 3x3 conv; ``level{2,3,4}_0`` are strided
  down-samplers (average pool || strided EESP, concatenated, plus an "input reinforcement" branch fed
  with the image pooled to the same size); ``level3`` / ``level4`` are 3 / 7 residual EESP blocks.
* a bottom-up decoder: four efficient pyramid-pooling modules (``bu_dec_l1..4``) at 1/16 .. 1/2 of the
  input, each level merged with the encoder skip through a gated group conv (``merge_enc_dec_l*``).

Two deviations from the reference code, both invisible on inputs whose sides are multiples of 16 (the
reference's only supported case): decoder maps are upsampled to the skip's size instead of by exactly
2x (so odd sizes work), and while tracing for ONNX the size arithmetic is kept symbolic and adaptive
pooling is written with gathers (so exports have a dynamic height and width).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from goodsam.imageio import MIN_IMAGE_SIDE
from goodsam.segmenters.base import Segmenter, SegmenterOutput
from goodsam.segmenters.fused import cpu_gradient, norm_prelu, prelu, upsample_bilinear

SCALES = ("0.5", "1.0", "1.5", "2.0")
NUM_OUTPUTS = 20  # 19 Cityscapes trainIds + background/void
BRANCHES = 4
# encoder widths per scale (level1 .. level4) as in EdgeNets' config
CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "0.5": (16, 32, 64, 128),
    "1.0": (32, 64, 128, 256),
    "1.5": (32, 96, 192, 384),
    "2.0": (32, 128, 256, 512),
}
LEVEL3_BLOCKS, LEVEL4_BLOCKS = 3, 7
DECODER_WIDTHS = (64, 48, 32)  # 4x, 3x, 2x the Cityscapes base width 16
PYRAMID_SCALES = (2.0, 1.5, 1.0, 0.5, 0.1)
PYRAMID_MIN_SIZE = 5


# --- building blocks (two naming styles, as in the released weights) -------------------------------------

class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state_dict keys) with two CPU paths for grouped convolutions:

    * a grouped 1x1 convolution runs as one batched matrix product, which gives the same values (the same
      per-group products) but avoids the per-group slicing and concatenation (about 3x faster with
      backward);
    * a grouped kxk convolution with at least 4 input channels per group (the decoder's merge layers)
      runs in channels-last layout when a gradient flows through it: oneDNN's backward for that layout is
      1.5-1.9x faster than for NCHW at 4-8 channels per group (equal values up to float summation order;
      at 2 per group no faster); the output comes back NCHW. Without a gradient NCHW is as fast, so
      inference is unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_with(x, self.weight, self.bias)

    def conv_with(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """This convolution (its stride, padding, groups and CPU paths) with ``weight`` and ``bias``."""
        if self._channels_last_backward(x, weight):
            x = x.contiguous(memory_format=torch.channels_last)
            return self._conv_forward(x, weight, bias).contiguous()
        if (self.groups == 1 or self.kernel_size != (1, 1) or self.stride != (1, 1) or self.padding != (0, 0)
                or x.device.type != "cpu" or x.ndim != 4 or not x.is_contiguous()
                or torch.jit.is_tracing() or torch.jit.is_scripting()):
            return self._conv_forward(x, weight, bias)
        batch, _, height, width = x.shape
        groups = self.groups
        weight = weight.view(groups, self.out_channels // groups, self.in_channels // groups)
        out = torch.matmul(weight, x.view(batch, groups, self.in_channels // groups, height * width))
        out = out.view(batch, self.out_channels, height, width)
        return out if bias is None else out + bias.view(1, -1, 1, 1)

    def _channels_last_backward(self, x: torch.Tensor, weight: torch.Tensor) -> bool:
        """Whether this call takes the channels-last path (see the class docstring)."""
        return (self.groups > 1 and self.in_channels // self.groups >= 4 and self.kernel_size != (1, 1)
                and x.ndim == 4 and cpu_gradient(x, weight))


def _frozen_norm(norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(scale, shift)`` with ``norm(y) = y * scale + shift`` per channel when ``norm`` normalises with
    its running statistics (eval mode, e.g. ``train.freeze_norm``), else None (batch statistics)."""
    if norm.training or norm.running_mean is None or torch.jit.is_tracing() or torch.jit.is_scripting():
        return None
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = norm.weight * scale
    shift = -norm.running_mean * scale
    return scale, shift if norm.bias is None else shift + norm.bias


def conv_norm(conv: Conv2d, norm: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``norm(conv(x))``; a frozen norm (:func:`_frozen_norm`) is folded into the convolution's weight and
    bias, which saves the norm's pass over the output forward and backward (the gradients reach the
    conv weight and the norm's affine parameters through the fold; equal values up to float rounding)."""
    folded = _frozen_norm(norm)
    if folded is None or conv.bias is not None:
        return norm(conv(x))
    scale, shift = folded
    return conv.conv_with(x, conv.weight * scale.view(-1, 1, 1, 1), shift)


class PReLU(nn.PReLU):
    """``nn.PReLU`` (same parameter and state_dict key) with the fused CPU backward of
    :func:`goodsam.segmenters.fused.prelu` when training on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return prelu(x, self.weight)


def norm_act(norm: nn.BatchNorm2d, act: nn.PReLU, x: torch.Tensor) -> torch.Tensor:
    """``act(norm(x))``; a frozen norm and the PReLU run as one fused op (:func:`fused.norm_prelu`)."""
    folded = _frozen_norm(norm)
    if folded is None:
        return act(norm(x))
    return norm_prelu(x, *folded, act.weight)


class NormAct(nn.Sequential):
    """``nn.Sequential(BatchNorm2d, PReLU)`` (same state_dict keys) running :func:`norm_act`."""

    def __init__(self, channels: int):
        super().__init__(nn.BatchNorm2d(channels), PReLU(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return norm_act(self[0], self[1], x)


class ConvBN(nn.Module):
    """Conv (no bias) + batch norm, optionally PReLU; parameters named ``conv``/``bn``/``act``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: bool = True):
        super().__init__()
        self.conv = Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = PReLU(cout) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(conv_norm(self.conv, self.bn, x))


class BNAct(nn.Module):
    """Batch norm + PReLU named ``bn``/``act``."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.act = PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return norm_act(self.bn, self.act, x)


class _DilatedDepthwiseConv(torch.autograd.Function):
    """A stride-1 depth-wise 3x3 convolution with dilation ``d`` (padding ``d``) whose backward is two
    forward convolutions, which oneDNN runs fast, instead of PyTorch's CPU backward for dilated
    convolutions (a slow path, ~20x its forward):

    * input gradient: the output gradient convolved with the flipped kernel (same dilation and padding);
    * weight gradient ``dW[c, a, b] = sum_{n,i,j} g[n, c, i, j] x_pad[n, c, i + a·d, j + b·d]``: the
      padded input as ``C·N`` channels convolved with the output gradient as a per-channel kernel at
      stride ``d`` (a 3x3 output), summed over the batch.

    The same products as the autograd backward, summed in another order (equal to float rounding)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        return F.conv2d(x, weight, None, 1, dilation, dilation, x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        d = ctx.dilation
        batch, channels, height, width = x.shape
        grad = grad.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, weight.flip(-1, -2), None, 1, d, d, channels)
        if ctx.needs_input_grad[1]:
            padded = F.pad(x, (d, d, d, d)).transpose(0, 1).reshape(1, channels * batch, height + 2 * d,
                                                                    width + 2 * d)
            kernels = grad.transpose(0, 1).reshape(channels * batch, 1, height, width)
            per_image = F.conv2d(padded, kernels, None, d, 0, 1, channels * batch)
            grad_w = per_image.view(channels, batch, 3, 3).sum(1).view_as(weight)
        return grad_x, grad_w, None


class DilatedDW(nn.Module):
    """Depth-wise dilated 3x3 conv named ``conv``; on CPU, with a gradient, a stride-1 dilated one runs
    its backward as forward convolutions (:class:`_DilatedDepthwiseConv`, about 3x faster)."""

    def __init__(self, channels: int, stride: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride, dilation, dilation=dilation, groups=channels,
                              bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if conv.stride == (1, 1) and conv.dilation[0] > 1 and x.ndim == 4 and cpu_gradient(x, conv.weight):
            return _DilatedDepthwiseConv.apply(x, conv.weight, conv.dilation[0])
        return conv(x)


class SeqCBR(nn.Module):
    """Decoder-style conv + BN + PReLU held in a ``cbr`` Sequential."""

    def __init__(self, cin: int, cout: int, kernel: int, groups: int = 1):
        super().__init__()
        self.cbr = nn.Sequential(
            Conv2d(cin, cout, kernel, 1, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout), PReLU(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm, act = self.cbr
        return act(conv_norm(conv, norm, x))


class SeqBR(nn.Module):
    """Decoder-style BN + PReLU held in a ``br`` Sequential."""

    def __init__(self, channels: int):
        super().__init__()
        self.br = NormAct(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.br(x)


class ChannelShuffle(nn.Module):
    """Interleave ``groups`` channel groups."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(1, (self.groups, -1)).transpose(1, 2).flatten(1, 2)


# --- encoder ---------------------------------------------------------------------------------------------

def _branch_dilations(branches: int, receptive_limit: int) -> list[int]:
    """Dilation per EESP branch: kernel sizes 3, 5, 7, ... capped at the limit (back to 3), sorted."""
    sizes = sorted(k if k <= receptive_limit else 3 for k in (3 + 2 * i for i in range(branches)))
    return [(k - 1) // 2 for k in sizes]


class EESP(nn.Module):
    """Extremely efficient spatial pyramid: group 1x1 reduce, dilated depth-wise branches with
    hierarchical feature fusion, group 1x1 merge, residual + PReLU (stride 1) or raw (strided)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, branches: int = BRANCHES,
                 receptive_limit: int = 7):
        super().__init__()
        width = cout // branches
        if width * branches != cout:
            raise ValueError(f"EESP output width {cout} is not divisible by {branches} branches")
        self.stride = stride
        self.proj_1x1 = ConvBN(cin, width, 1, groups=branches)
        self.spp_dw = nn.ModuleList(DilatedDW(width, stride, d)
                                    for d in _branch_dilations(branches, receptive_limit))
        self.conv_1x1_exp = ConvBN(cout, cout, 1, groups=branches, act=False)
        self.br_after_cat = BNAct(cout)
        self.module_act = PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.proj_1x1(x)
        outputs = [self.spp_dw[0](reduced)]
        for branch in self.spp_dw[1:]:
            outputs.append(branch(reduced) + outputs[-1])
        expanded = self.conv_1x1_exp(self.br_after_cat(torch.cat(outputs, 1)))
        if self.stride == 2:
            return expanded  # the down-sampler adds the pooled path and activates
        if expanded.shape == x.shape:
            expanded = expanded + x
        return self.module_act(expanded)


def _half(x: torch.Tensor) -> torch.Tensor:
    """3x3 average pooling at stride 2 (padding counted). With a gradient on CPU it runs as a depth-wise
    convolution with weights 1/9: the same sums (equal to float rounding), and a backward ~3x faster
    than PyTorch's CPU ``avg_pool2d`` backward."""
    if x.ndim == 4 and cpu_gradient(x):
        channels = x.shape[1]
        return F.conv2d(x, x.new_full((channels, 1, 3, 3), 1.0 / 9.0), None, 2, 1, 1, channels)
    return F.avg_pool2d(x, 3, stride=2, padding=1)


class DownSampler(nn.Module):
    """Strided EESP concatenated with a 3x3 average pool, plus the input-reinforcement branch."""

    def __init__(self, cin: int, cout: int, receptive_limit: int, image_channels: int = 3):
        super().__init__()
        self.eesp = EESP(cin, cout - cin, stride=2, receptive_limit=receptive_limit)
        self.inp_reinf = nn.Sequential(ConvBN(image_channels, image_channels, 3),
                                       ConvBN(image_channels, cout, 1, act=False))
        self.act = PReLU(cout)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``image``: the input image average-pooled to this block's output size."""
        out = torch.cat([_half(x), self.eesp(x)], 1)
        return self.act(out + self.inp_reinf(image))


class EESPEncoder(nn.Module):
    """The ESPNetv2 backbone up to 1/16 resolution (the classification levels 5+ are not used)."""

    def __init__(self, channels: tuple[int, int, int, int], image_channels: int = 3):
        super().__init__()
        c1, c2, c3, c4 = channels
        self.channels = channels
        self.level1 = ConvBN(image_channels, c1, 3, stride=2)
        self.level2_0 = DownSampler(c1, c2, receptive_limit=13, image_channels=image_channels)
        self.level3_0 = DownSampler(c2, c3, receptive_limit=11, image_channels=image_channels)
        self.level3 = nn.ModuleList(EESP(c3, c3, receptive_limit=9) for _ in range(LEVEL3_BLOCKS))
        self.level4_0 = DownSampler(c3, c4, receptive_limit=9, image_channels=image_channels)
        self.level4 = nn.ModuleList(EESP(c4, c4, receptive_limit=7) for _ in range(LEVEL4_BLOCKS))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Image -> features at 1/2, 1/4, 1/8 and 1/16 of its size."""
        image4 = _half(_half(x))
        image8 = _half(image4)
        out1 = self.level1(x)
        out2 = self.level2_0(out1, image4)
        out3 = self.level3_0(out2, image8)
        for block in self.level3:
            out3 = block(out3)
        out4 = self.level4_0(out3, _half(image8))
        for block in self.level4:
            out4 = block(out4)
        return out1, out2, out3, out4


# --- decoder ---------------------------------------------------------------------------------------------

def _scaled_size(size: int | torch.Tensor, scale: float) -> int | torch.Tensor:
    """``max(ceil(size * scale), 5)``; symbolic (float64, like Python) when ``size`` is a traced tensor."""
    if isinstance(size, torch.Tensor):
        return torch.clamp(torch.ceil(size.to(torch.float64) * scale), min=PYRAMID_MIN_SIZE).long()
    return max(int(math.ceil(size * scale)), PYRAMID_MIN_SIZE)


def _adaptive_pool_axis(x: torch.Tensor, dim: int, out_size: int | torch.Tensor,
                        max_bin: int) -> torch.Tensor:
    """Adaptive average pooling along one axis with gathers (exportable with dynamic sizes).

    Bin ``i`` averages ``[floor(i*n/m), ceil((i+1)*n/m))`` exactly like ``F.adaptive_avg_pool2d``;
    ``max_bin`` must bound the bin length.
    """
    in_size = x.shape[dim]
    index = torch.arange(out_size, device=x.device)
    start = (index * in_size) // out_size
    end = ((index + 1) * in_size + out_size - 1) // out_size
    view = [1] * x.dim()
    view[dim] = -1
    total = torch.zeros((), dtype=x.dtype, device=x.device)
    for offset in range(max_bin):
        position = start + offset
        valid = (position < end).to(x.dtype).view(view)
        total = total + x.index_select(dim, torch.clamp(position, max=in_size - 1)) * valid
    return total / (end - start).to(x.dtype).view(view)


def adaptive_avg_pool(x: torch.Tensor, size: tuple, max_ratio: float) -> torch.Tensor:
    """``F.adaptive_avg_pool2d``, or an exact gather form while tracing (``max_ratio`` >= in/out)."""
    if not torch.jit.is_tracing():
        return F.adaptive_avg_pool2d(x, size)
    max_bin = int(math.floor(max_ratio)) + 2
    return _adaptive_pool_axis(_adaptive_pool_axis(x, 2, size[0], max_bin), 3, size[1], max_bin)


def _standard_strides(grad: torch.Tensor) -> torch.Tensor:
    """``grad`` with the standard (row-major) strides its parameter has. oneDNN's channels-last backward
    of a depth-wise conv gives the ``(C, 1, k, k)`` weight gradient another stride on the size-1 axis:
    the same memory, but DistributedDataParallel compares strides and warns on every run."""
    standard = tuple(math.prod(grad.shape[i + 1:]) for i in range(grad.ndim))
    return grad if grad.stride() == standard else grad.clone(memory_format=torch.contiguous_format)


class PyramidPool(nn.Module):
    """Efficient pyramid pooling: project, depth-wise conv at 5 scales, shuffle, group conv, expand."""

    def __init__(self, cin: int, proj: int, cout: int, last_layer_br: bool = True,
                 scales: tuple[float, ...] = PYRAMID_SCALES):
        super().__init__()
        self.scales = tuple(sorted(scales, reverse=True))
        self.projection_layer = SeqCBR(cin, proj, 1)
        self.stages = nn.ModuleList(nn.Conv2d(proj, proj, 3, 1, 1, groups=proj, bias=False)
                                    for _ in self.scales)
        for stage in self.stages:  # their channels-last backward (see _merge_channels_last)
            stage.weight.register_hook(_standard_strides)
        n = len(self.scales)
        self.merge_layer = nn.Sequential(SeqBR(proj * n), ChannelShuffle(n),
                                         SeqCBR(proj * n, proj, 3, groups=proj),
                                         nn.Conv2d(proj, cout, 1, bias=not last_layer_br))
        self.br = SeqBR(cout) if last_layer_br else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projection_layer(x)
        fast = self._channels_last_merge(x)
        if fast:
            x = x.contiguous(memory_format=torch.channels_last)
        branches = self._branches(x)
        out = self._merge_channels_last(branches) if fast else self.merge_layer(torch.cat(branches, 1))
        return self.br(out) if self.br is not None else out

    def _branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The depth-wise conv of ``x`` at each pyramid scale, back at ``x``'s size (and memory layout)."""
        height, width = x.shape[-2:]
        branches = []
        for scale, stage in zip(self.scales, self.stages, strict=True):
            size = (_scaled_size(height, scale), _scaled_size(width, scale))
            if scale < 1.0:
                y = stage(adaptive_avg_pool(x, size, max_ratio=1.0 / scale))
                y = upsample_bilinear(y, (height, width))
            elif scale > 1.0:
                y = stage(upsample_bilinear(x, size))
                y = adaptive_avg_pool(y, (height, width), max_ratio=scale + 1.0)
            else:
                y = stage(x)
            branches.append(y)
        return branches

    def _channels_last_merge(self, x: torch.Tensor) -> bool:
        """Whether the branches and the merge run channels-last (:meth:`_merge_channels_last`): on CPU in
        float32 with the merge's batch norm frozen (its statistics are not updated per channel slice)."""
        return (x.device.type == "cpu" and x.dtype == torch.float32 and x.ndim == 4
                and not self.merge_layer[0].br[0].training
                and not (torch.jit.is_tracing() or torch.jit.is_scripting()))

    def _merge_channels_last(self, branches: list[torch.Tensor]) -> torch.Tensor:
        """``merge_layer(cat(branches))`` with the same values, built for the channels-last layout.

        The merge's BN + PReLU are per channel, so each branch gets its own slice of them; the channel
        shuffle that follows is a stack of the branches along a last (channel-minor) axis, which is the
        channels-last layout the grouped conv after it takes (:class:`Conv2d`). This avoids the NCHW
        concatenation, the shuffle's strided copy and the conversion before the conv, and lets the
        depth-wise pyramid convs run on oneDNN's channels-last kernels (4-5x faster there at 10-32
        channels, forward and backward). Float sums run in another order; the values agree to rounding."""
        norm, act = self.merge_layer[0].br
        scale, shift = _frozen_norm(norm)
        n = branches[0].shape[1]
        parts = []
        for k, y in enumerate(branches):
            part = slice(k * n, (k + 1) * n)
            parts.append(norm_prelu(y, scale[part], shift[part], act.weight[part]).permute(0, 2, 3, 1))
        shuffled = torch.stack(parts, dim=-1).flatten(-2).permute(0, 3, 1, 2)
        return self.merge_layer[3](self.merge_layer[2](shuffled).contiguous())


class GatedProjection(nn.Module):
    """Skip projection: group 3x3 conv-BN-PReLU scaled by a sigmoid gate from global pooling."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.wt_layer = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False),
                                      nn.Sigmoid())
        self.expansion_layer = SeqCBR(cin, cout, 3, groups=math.gcd(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expansion_layer(x) * self.wt_layer(x)


def _upsample_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return upsample_bilinear(x, reference.shape[-2:])


# --- the segmenter ---------------------------------------------------------------------------------------

def normalise_scale(scale: float | str) -> str:
    """0.5 / "0.5" / 2 -> "0.5" / "2.0"; ValueError if not a released scale."""
    try:
        text = f"{float(scale):.1f}"
    except (TypeError, ValueError):
        text = str(scale)
    if text not in SCALES:
        raise ValueError(f"ESPNetv2 scale must be one of {', '.join(SCALES)}, got {scale}")
    return text


class ESPNetv2(Segmenter):
    """ESPNetv2 segmentation network at width scale ``s``; outputs 20 channels (19 trainIds + void).

    ``SegmenterOutput.logits`` holds the 19 class channels, ``raw_logits`` all 20 (both at the input
    resolution); ``features`` are the encoder outputs at 1/2, 1/4, 1/8 and 1/16 resolution.
    """

    num_classes = 19
    min_input_side = MIN_IMAGE_SIDE

    def __init__(self, scale: float | str = "2.0", num_outputs: int = NUM_OUTPUTS):
        super().__init__()
        self.scale = normalise_scale(scale)
        self.name = f"espnetv2-s{self.scale}"
        channels = CHANNELS[self.scale]
        d1, d2, d3 = DECODER_WIDTHS
        proj = min(num_outputs // 2, 16)
        self.base_net = EESPEncoder(channels)
        self.bu_dec_l1 = PyramidPool(channels[3], proj, d1)
        self.bu_dec_l2 = PyramidPool(d1, proj, d2)
        self.bu_dec_l3 = PyramidPool(d2, proj, d3)
        self.bu_dec_l4 = PyramidPool(d3, proj, num_outputs, last_layer_br=False)
        self.merge_enc_dec_l2 = GatedProjection(channels[2], d1)
        self.merge_enc_dec_l3 = GatedProjection(channels[1], d2)
        self.merge_enc_dec_l4 = GatedProjection(channels[0], d3)
        self.bu_br_l2 = NormAct(d1)
        self.bu_br_l3 = NormAct(d2)
        self.bu_br_l4 = NormAct(d3)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random init as in the reference: Kaiming-normal (fan-out) convs, unit BN, PReLU 0.25."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, pixel_values: torch.Tensor) -> SegmenterOutput:
        features = self.base_net(pixel_values)
        out1, out2, out3, out4 = features
        y = self.bu_dec_l1(out4)
        y = self.bu_dec_l2(self.bu_br_l2(self.merge_enc_dec_l2(out3) + _upsample_to(y, out3)))
        y = self.bu_dec_l3(self.bu_br_l3(self.merge_enc_dec_l3(out2) + _upsample_to(y, out2)))
        y = self.bu_dec_l4(self.bu_br_l4(self.merge_enc_dec_l4(out1) + _upsample_to(y, out1)))
        # Upsampling works per channel: the class channels on their own give the same logits, and no
        # gradient flows back through a slice of all 20 (a zero-filled full-size tensor per backward).
        logits = _upsample_to(y[:, : self.num_classes], pixel_values)
        raw = torch.cat([logits, _upsample_to(y[:, self.num_classes:], pixel_values)], 1)
        return SegmenterOutput(logits, features, raw_logits=raw)
