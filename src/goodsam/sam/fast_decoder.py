"""SAM's mask decoder for many point prompts on one image, factored through the image (same maths).

Per prompt, SAM's two-way transformer updates all 4096 image tokens (256 channels) twice,
``keys = LayerNorm(keys + attn_image_to_token(...))``, and every later use of the image tokens is a
linear map of them: a 16-channel head projection in an attention, or the upscaler's first transposed
convolution. Each update adds ``A_j @ V`` to token ``j``: ``A_j`` the token's 56 attention weights
(8 heads x 7 prompt tokens), ``V`` a (56, 256) matrix that depends on the prompt only. A LayerNorm is
``gamma * (u - mean(u)) / std(u) + beta``: linear in ``u`` up to the per-token scalar ``1 / std``.
So after both layers every image token is

    keys_j = s1_j * (s0_j * (R_j + A0_j @ V0') + beta0' + A1_j @ V1') + beta1

with ``R`` the (centred, scaled) image embedding shared by every prompt, ``s0, s1`` the inverse
standard deviations and ``A0, A1`` the attention weights. Any linear map ``W`` of the keys is then
``W R`` (computed once per image) combined with ``(A @ V) W``, where ``V W`` is a small per-prompt
matrix. Nothing per prompt is 256 channels wide any more:

* attention scores and attention-weighted sums of the image tokens use per-image projections
  (``R W^T`` for each head's 16 channels) and per-prompt (56 x k) matrices;
* the LayerNorm statistics come from the same pieces: ``|R + A V|^2 = |R|^2 + 2 A.(R V^T) +
  A (V V^T) A^T``, with ``R`` and the rows of ``V`` centred first, so no mean is subtracted afterwards;
* the upscaler's first (linear, 256 -> 4 x 64) step is ``s0 s1 (W R) + [A0, A1] @ (V W) + ...``: the
  per-prompt part has 113 inputs instead of 256;
* the rows of ``V`` are themselves ``W_o,h v + b``: every map of them is applied once, to the 16
  columns of each head's block of the output projection (:meth:`FastMaskDecoder._row_maps`).

Per prompt and image token this is about 40k multiply-adds for the transformer instead of 90k, on
56-wide rows instead of 256-wide ones, and 29k instead of 66k for the upscaler's first step. On CPU
the elementwise chains between the matrix products run as fused loops (:mod:`goodsam.sam.native`,
PyTorch operations where those are unavailable). Results equal SAM's decoder up to float rounding
(tests/test_sam.py). It needs the two-layer ``TwoWayTransformer`` every SAM model uses (MobileSAM,
ViT-B/L/H).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from goodsam.sam import native

SOFTMAX_FLOOR = 70.0


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """(..., n, c) -> (..., heads, n, c / heads)."""
    *lead, n, c = x.shape
    return x.reshape(*lead, n, num_heads, c // num_heads).transpose(-3, -2)


def _centre(x: Tensor) -> Tensor:
    """``x`` minus its mean over the last dimension (the channels)."""
    return x - x.mean(-1, keepdim=True)


def _head_products(k: Tensor, p1: Tensor, p2: Tensor | None = None, add: Tensor | None = None,
                   scale: Tensor | None = None) -> Tensor:
    """``scale * (HS(p1) + add) + HS(p2)`` with ``HS(p)`` the per-head products of per-image columns
    ``p`` (heads, c, R) and per-prompt vectors ``k`` (B, heads, T, c): (B, heads * T, R).
    ``add`` (B, heads * T, R) and ``scale`` (B, 1, R) are optional (rows contiguous)."""
    b, nh, t, c = k.shape
    r = p1.shape[-1]
    lib = native.kernels() if native.usable(k, p1) else None
    if lib is not None and p1.stride(-1) == 1 and (p2 is None or p2.stride() == p1.stride()) \
            and (add is None or (add.stride(-1) == 1 and add.stride(1) == r)) \
            and (scale is None or scale.stride(-1) == 1):
        k = k.contiguous()
        out = k.new_empty(b, nh * t, r)
        lib.head_products(p1.data_ptr(), native.ptr(p2), p1.stride(1), r, nh, c, k.data_ptr(), b, t,
                          native.ptr(add), add.stride(0) if add is not None else 0,
                          native.ptr(scale), scale.stride(0) if scale is not None else 0, out.data_ptr())
        return out
    out = torch.bmm(k.transpose(0, 1).reshape(nh, b * t, c), p1)  # (h, B*T, R)
    out = out.view(nh, b, t, -1).transpose(0, 1).reshape(b, nh * t, -1)
    if add is not None:
        out += add
    if scale is not None:
        out *= scale
    if p2 is not None:
        out += _head_products(k, p2)
    return out


def _head_sums(weights: Tensor, shared: Tensor) -> Tensor:
    """Per-head weighted sums of per-image columns: ``weights`` (B, heads * T, R), ``shared``
    (heads, c, R) -> (B, heads * T, c)."""
    nh, c, r = shared.shape
    b = weights.shape[0]
    w = weights.view(b, nh, -1, r).transpose(0, 1).reshape(nh, -1, r)  # (h, B*T, R)
    return torch.bmm(w, shared.transpose(1, 2)).view(nh, b, -1, c).transpose(0, 1).reshape(b, -1, c)


def _head_blocks(rows: Tensor, per_prompt: Tensor) -> Tensor:
    """(B, n, heads * c) rows times per-head vectors (B, heads, T, c) -> (B, n, heads * T)."""
    b, nh, t, c = per_prompt.shape
    return torch.einsum("bnhc,bhtc->bnht", rows.view(b, -1, nh, c), per_prompt).reshape(b, -1, nh * t)


def _exp_floored(x: Tensor) -> Tensor:
    """``exp(x)`` in place for ``x <= 0``, floored at ``e^-70``: far below what float32 sums can see, and
    it keeps CPUs off their slow paths for tiny results (denormals)."""
    return x.clamp_(min=-SOFTMAX_FLOOR).exp_()


def _softmax_heads(scores: Tensor, num_heads: int) -> Tensor:
    """Softmax over the T tokens of each head, in place: ``scores`` (B, heads * T, R), contiguous."""
    b, ht, r = scores.shape
    if native.usable(scores) and scores.is_contiguous():
        native.kernels().softmax_heads(scores.data_ptr(), b, num_heads, ht // num_heads, r)
        return scores
    x = scores.view(b, num_heads, ht // num_heads, r)
    x = _exp_floored(x.sub_(x.amax(2, keepdim=True)))
    return x.div_(x.sum(2, keepdim=True)).view(b, ht, r)


class _Online:
    """Running softmax over image-token tiles for a set of queries: ``add`` the scores (B, Q, R) of
    one tile (contiguous), get back the unnormalised weights to accumulate with (max-subtracted,
    floored at ``e^-70``, then multiplied by ``weight`` (B, 1, R) if given) and the factor (B, Q, 1)
    by which earlier accumulations must be rescaled (None on the first tile)."""

    def __init__(self) -> None:
        self.max: Tensor | None = None
        self.sum: Tensor | None = None

    def add(self, scores: Tensor, weight: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        b, q, r = scores.shape
        first = self.max is None
        if native.usable(scores) and scores.is_contiguous() and (weight is None or weight.stride(-1) == 1):
            if first:
                self.max, self.sum = scores.new_empty(b, q, 1), scores.new_empty(b, q, 1)
            scale = scores.new_empty(b, q, 1)
            native.kernels().online_softmax(scores.data_ptr(), b, q, r, self.max.data_ptr(),
                                            self.sum.data_ptr(), scale.data_ptr(), int(first),
                                            native.ptr(weight),
                                            weight.stride(0) if weight is not None else 0)
            return scores, None if first else scale
        tile_max = scores.amax(2, keepdim=True)
        new_max = tile_max if first else torch.maximum(self.max, tile_max)
        p = _exp_floored(scores.sub_(new_max))
        scale = None
        if first:
            self.sum = p.sum(2, keepdim=True)
        else:
            scale = _exp_floored(self.max - new_max)
            self.sum = self.sum.mul_(scale).add_(p.sum(2, keepdim=True))
        self.max = new_max
        return (p if weight is None else p.mul_(weight)), scale


def _accumulate(acc: Tensor | None, scale: Tensor | None, value: Tensor) -> Tensor:
    """``acc * scale + value``: ``acc`` and ``value`` (B, Q, ...), ``scale`` (B, Q, 1) or None."""
    if acc is None:
        return value
    return acc.mul_(scale).add_(value)


@dataclass
class ImageContext:
    """Per-image tensors shared by every prompt (see the module docstring for the algebra)."""

    grid: tuple[int, int]
    t2i_k0: Tensor  # (heads, HW, c) layer-0 token->image keys
    t2i_v0: Tensor  # (heads, HW, c) layer-0 token->image values
    heads: dict[str, Tensor]  # (heads, c, HW) per-head projections of the shared image part
    scalars: dict[str, Tensor]  # (HW,) per-token dot products of the shared image part
    up: Tensor  # (HW, 4 * C1) the upscaler's first step applied to the shared image part


@dataclass
class DecoderState:
    """What the transformer leaves per prompt: IoU predictions, mask tokens, and the per-prompt part
    of the final image tokens (their upscaler inputs, see :meth:`FastMaskDecoder.masks`)."""

    iou: Tensor  # (B, num_mask_tokens) predicted IoU of every mask token
    mask_tokens: Tensor  # (B, len(token_ids), C) final state of the mask tokens ``token_ids``
    token_ids: list[int]
    weights: Tensor  # (B, 2 * 56, HW) X = [A0 * s0; A1], see :meth:`FastMaskDecoder.masks`
    inv_std: Tensor  # (B, 3, HW) s0, s1: 1 / std of the two image-token updates (and a variance term)
    up_rows: Tensor  # (B, 2 * 56 + 1, 4 * C1) per-prompt rows of the upscaler's first step
    up_const: Tensor  # (4 * C1,) constant of the upscaler's first step


class FastMaskDecoder:
    """Wraps a SAM ``MaskDecoder`` (with its two-layer ``TwoWayTransformer``) for batched point prompts.

    ``tile``: image tokens x prompts processed at once by the transformer (cache-sized on CPU; a GPU
    wants it large); ``mask_tile``: the same for the upscaler (default ``tile``).
    """

    def __init__(self, decoder: nn.Module, tile: int = 2048, mask_tile: int | None = None) -> None:
        transformer = decoder.transformer
        if len(transformer.layers) != 2:
            layers = len(transformer.layers)
            raise ValueError(f"FastMaskDecoder needs SAM's two-layer transformer, not {layers} layers")
        self.decoder = decoder
        self.transformer = transformer
        self.num_heads = transformer.num_heads
        self.tile = tile
        self.mask_tile = mask_tile or tile
        self._up_weights: tuple[Tensor, ...] | None = None
        self._row_map_cache: dict[tuple, tuple[Tensor, Tensor, dict[str, slice]]] = {}
        self._constant_cache: dict[tuple, dict[str, Tensor | float]] = {}

    # ------------------------------------------------------------------ per image
    @torch.no_grad()
    def prepare(self, image_embedding: Tensor, image_pe: Tensor, dense: Tensor) -> ImageContext:
        """``image_embedding``, ``image_pe``: (1, C, h, w); ``dense``: (1, C, 1, 1) or (1, C, h, w)."""
        _, _, h, w = image_embedding.shape
        nh = self.num_heads
        l0, l1 = self.transformer.layers
        final = self.transformer.final_attn_token_to_image
        keys0 = (image_embedding + dense).flatten(2)[0].t()
        pe = image_pe.flatten(2)[0].t()
        g0, beta0 = l0.norm4.weight, l0.norm4.bias
        g1, beta1 = l1.norm4.weight, l1.norm4.bias
        t2i0, i2t0 = l0.cross_attn_token_to_image, l0.cross_attn_image_to_token
        t2i1, i2t1 = l1.cross_attn_token_to_image, l1.cross_attn_image_to_token
        r0 = _centre(keys0)  # layer-0 residual, centred
        rg = _centre(g0 * r0)  # its LayerNorm output (before 1/std), centred: the shared part of layer 1
        w1, b1 = self._up_weights_for(keys0)[:2]

        def heads(x: Tensor) -> Tensor:  # (HW, h*c) -> (h, c, HW)
            return _heads(x, nh).transpose(1, 2).contiguous()

        return ImageContext(
            grid=(h, w),
            t2i_k0=_heads(t2i0.k_proj(keys0 + pe), nh).contiguous(),
            t2i_v0=_heads(t2i0.v_proj(keys0), nh).contiguous(),
            heads={
                "q0": heads(i2t0.q_proj(keys0 + pe)),  # layer-0 image->token queries
                "o0": heads(r0 @ i2t0.out_proj.weight),  # r0 . V0 (layer-0 variance)
                "k1": heads((g0 * r0) @ t2i1.k_proj.weight.t()),  # layer-1 token->image keys
                "k1_pe": heads((beta0 + pe) @ t2i1.k_proj.weight.t()),
                "v1": heads((g0 * r0) @ t2i1.v_proj.weight.t()),  # layer-1 token->image values
                "q1": heads((g0 * r0) @ i2t1.q_proj.weight.t()),  # layer-1 image->token queries
                "q1_pe": heads(F.linear(beta0 + pe, i2t1.q_proj.weight, i2t1.q_proj.bias)),
                "go0": heads((g0 * rg) @ i2t0.out_proj.weight),  # rg . Vg0 (layer-1 variance)
                "o1": heads(rg @ i2t1.out_proj.weight),  # rg . V1 (layer-1 variance)
                "kf": heads((g1 * rg) @ final.k_proj.weight.t()),  # final token->image keys
                "kf_pe": heads((beta1 + pe) @ final.k_proj.weight.t()),
                "vf": heads((g1 * rg) @ final.v_proj.weight.t()),  # final token->image values
            },
            scalars={
                "r0_sq": (r0 * r0).sum(1), "r0_bo0": r0 @ i2t0.out_proj.bias,
                "rg_sq": (rg * rg).sum(1), "rg_beta0": rg @ beta0,
                "grg_bo0": (g0 * rg) @ i2t0.out_proj.bias / nh, "grg_sum": (g0 * rg).sum(1),
                "rg_bo1": rg @ i2t1.out_proj.bias / nh,
            },
            up=(g1 * rg) @ w1.t(),
        )

    def _tiles(self, batch: int, grid: tuple[int, int]) -> list[tuple[int, int]]:
        """Row tiles (first, last + 1) of the image tokens: whole grid rows, ~``tile / batch`` tokens."""
        h, w = grid
        rows = max(1, min(h, self.tile // max(batch, 1) // w))
        return [(y * w, min(h, y + rows) * w) for y in range(0, h, rows)]

    # ------------------------------------------------------------------ token side
    def _project(self, linear: nn.Linear, x: Tensor, scale: float = 1.0) -> Tensor:
        """Per-head projection (B, heads, T, c) of token states ``x`` (B, T, C), contiguous."""
        return _heads(linear(x) * scale, self.num_heads).contiguous()

    def _t2i_shared(self, attn: nn.Module, queries: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Token->image attention against shared (per-image) projected keys/values (heads, HW, c)."""
        nh = self.num_heads
        b, t, _ = queries.shape
        q = _heads(attn.q_proj(queries), nh)  # (B, h, T, c)
        c = q.shape[-1]
        q = (q * (1.0 / math.sqrt(c))).transpose(0, 1).reshape(nh, b * t, c)
        scores = torch.bmm(q, k.transpose(1, 2))  # (h, BT, HW)
        online = _Online()
        weights, _ = online.add(scores)  # unnormalised, one tile: the whole image
        out = (torch.bmm(weights, v) / online.sum).view(nh, b, t, c).permute(1, 2, 0, 3).reshape(b, t, nh * c)
        return attn.out_proj(out)

    def _row_maps(self, layer: int, like: Tensor) -> tuple[Tensor, Tensor, dict[str, slice]]:
        """Per-head matrices of the linear maps that the decoder applies to the value rows of layer
        ``layer``'s image->token attention (cached per decoder).

        Each value row is ``V_(h,t) = W_o,h v_(h,t) + b_o / heads`` (``v`` the head's 16-channel value,
        ``W_o,h`` its block of the output projection), so any linear map ``F`` of the rows is
        ``v_(h,t) @ F(W_o,h)^T + F(b_o / heads)``: ``F`` is applied once to the 16 columns of each
        head's block instead of to every prompt's 256-channel rows. Returns (heads, c, k) matrices, the
        (k,) constant and the slice of each map's outputs.
        """
        key = (layer, like.device, like.dtype)
        cache = self._row_map_cache
        if key in cache:
            return cache[key]
        l0, l1 = self.transformer.layers
        final = self.transformer.final_attn_token_to_image
        g0, g1 = l0.norm4.weight, l1.norm4.weight
        bt0 = _centre(l0.norm4.bias)
        w1 = self._up_weights_for(like)[0]
        attn = (l0 if layer == 0 else l1).cross_attn_image_to_token
        nh = self.num_heads

        def maps(y: Tensor) -> dict[str, Tensor]:  # y: (n, C) rows
            centred = _centre(y)
            if layer == 1:  # rows of the layer-1 update, and what the final image tokens need of them
                return {"centred": centred, "kf": (g1 * centred) @ final.k_proj.weight.t(),
                        "vf": (g1 * centred) @ final.v_proj.weight.t(), "up": (g1 * centred) @ w1.t(),
                        "beta": centred @ bt0[:, None]}
            gc = g0 * centred
            g_centred = _centre(gc)  # the layer-0 rows as they enter the final image tokens
            return {"mean": y.mean(-1, keepdim=True), "centred": centred, "g_centred": g_centred,
                    "k1": gc @ l1.cross_attn_token_to_image.k_proj.weight.t(),
                    "v1": gc @ l1.cross_attn_token_to_image.v_proj.weight.t(),
                    "q1": gc @ l1.cross_attn_image_to_token.q_proj.weight.t(),
                    "kf": (g1 * g_centred) @ final.k_proj.weight.t(),
                    "vf": (g1 * g_centred) @ final.v_proj.weight.t(), "up": (g1 * g_centred) @ w1.t(),
                    "beta": g_centred @ bt0[:, None]}

        with torch.no_grad():
            wo, bo = attn.out_proj.weight.to(like), attn.out_proj.bias.to(like)
            columns, const = maps(wo.t()), maps((bo / nh)[None])
            names = list(columns)
            slices, start = {}, 0
            for name in names:
                slices[name] = slice(start, start + columns[name].shape[1])
                start += columns[name].shape[1]
            mat = torch.cat([columns[name] for name in names], 1)  # (heads * c, k)
            const = torch.cat([const[name][0] for name in names])
            cache[key] = (mat.view(nh, -1, mat.shape[1]).contiguous(), const, slices)
        return cache[key]

    def _constants(self, like: Tensor) -> dict[str, Tensor | float]:
        """What :meth:`transform` needs of the weights alone, computed once per device and dtype: the
        output tokens, the centred layer-0 LayerNorm bias ``bt0`` and its maps, the constant rows of
        the value projections."""
        key = (like.device, like.dtype)
        if key not in self._constant_cache:
            dec, (l0, l1) = self.decoder, self.transformer.layers
            final, t2i1 = self.transformer.final_attn_token_to_image, l1.cross_attn_token_to_image
            g1, beta0, beta1 = l1.norm4.weight, l0.norm4.bias, l1.norm4.bias
            w1, b1 = self._up_weights_for(like)[:2]
            with torch.no_grad():
                bt0 = _centre(beta0)
                consts = {
                    "out_tokens": torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0),
                    "beta_sq": float((bt0 * bt0).sum()),
                    "kf_beta": (g1 * bt0) @ final.k_proj.weight.t(),
                    "v1_const": F.linear(beta0, t2i1.v_proj.weight, t2i1.v_proj.bias),
                    "vf_beta": (g1 * bt0) @ final.v_proj.weight.t(),
                    "vf_const": F.linear(beta1, final.v_proj.weight, final.v_proj.bias),
                    "up_beta": (g1 * bt0) @ w1.t(),
                    "up_const": F.linear(beta1, w1, b1),
                }
            self._constant_cache[key] = consts
        return self._constant_cache[key]

    def _value_rows(self, layer: int, v: Tensor) -> dict[str, Tensor]:
        """:meth:`_row_maps` of per-head values ``v`` (B, heads, T, c): name -> (B, heads * T, k)."""
        mat, const, slices = self._row_maps(layer, v)
        b, nh, t, c = v.shape
        out = torch.bmm(v.transpose(0, 1).reshape(nh, b * t, c), mat)  # (h, B*T, k)
        out = out.view(nh, b, t, -1).transpose(0, 1).reshape(b, nh * t, -1) + const
        return {name: out[..., sl] for name, sl in slices.items()}

    @staticmethod
    def _self_attention(layer: nn.Module, queries: Tensor, tokens: Tensor) -> Tensor:
        if layer.skip_first_layer_pe:
            return layer.norm1(layer.self_attn(q=queries, k=queries, v=queries))
        q = queries + tokens
        return layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))

    @staticmethod
    def _token_mlp(layer: nn.Module, queries: Tensor, t2i_out: Tensor) -> Tensor:
        queries = layer.norm2(queries + t2i_out)
        return layer.norm3(queries + layer.mlp(queries))

    def _attn_output(self, attn: nn.Module, mixed: Tensor) -> Tensor:
        """``out_proj`` of per-head attention outputs (B, heads * T, c) -> (B, T, C)."""
        b, ht, c = mixed.shape
        t = ht // self.num_heads
        return attn.out_proj(mixed.view(b, self.num_heads, t, c).transpose(1, 2).reshape(b, t, -1))

    # ------------------------------------------------------------------ transformer
    @torch.no_grad()
    def transform(self, ctx: ImageContext, sparse: Tensor, multimask: bool = True) -> DecoderState:
        """Run the two-way transformer for ``sparse`` prompt embeddings (B, N, C).

        The final token->image attention treats tokens independently and only the IoU token and the
        mask tokens that will be read leave the transformer, so it runs for those alone: with
        ``multimask`` the three multimask tokens (SAM's ``multimask_output=True``), else all.
        """
        dec, tr = self.decoder, self.transformer
        l0, l1 = tr.layers
        final = tr.final_attn_token_to_image
        nh = self.num_heads
        eps0, eps1 = l0.norm4.eps, l1.norm4.eps
        consts = self._constants(sparse)
        b = sparse.shape[0]
        n = ctx.grid[0] * ctx.grid[1]
        tokens = torch.cat([consts["out_tokens"].unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        t = tokens.shape[1]
        token_ids = list(range(1 if multimask else 0, dec.num_mask_tokens))
        final_rows = [0] + [1 + i for i in token_ids]  # IoU token, then the mask tokens read

        # layer 0, token side (the image tokens are the plain embedding: shared keys and values)
        queries = self._self_attention(l0, tokens, tokens)
        out = self._t2i_shared(l0.cross_attn_token_to_image, queries + tokens, ctx.t2i_k0, ctx.t2i_v0)
        queries = self._token_mlp(l0, queries, out)
        i2t0 = l0.cross_attn_image_to_token
        c = i2t0.k_proj.weight.shape[0] // nh
        k0 = self._project(i2t0.k_proj, queries + tokens, 1.0 / math.sqrt(c))  # (B, h, T, c)
        v0 = self._project(i2t0.v_proj, queries)  # (B, h, T, c)
        r0m = self._value_rows(0, v0)  # linear maps of the value rows V0 (see _row_maps)
        mean_v0, vt0, vg0 = r0m["mean"][..., 0], r0m["centred"], r0m["g_centred"]
        gram0 = vt0 @ vt0.transpose(1, 2)
        dim = vt0.shape[-1]

        # layer 1: self-attention, then token->image attention over the layer-0 image tokens
        t2i1, i2t1 = l1.cross_attn_token_to_image, l1.cross_attn_image_to_token
        pre = self._self_attention(l1, queries, tokens)
        q1 = self._project(t2i1.q_proj, pre + tokens, 1.0 / math.sqrt(c))
        h1 = _head_blocks(r0m["k1"], q1)  # (B, hT, hT)
        # X = [A0 * s0; A1] (image->token weights of both layers, A0 scaled by the layer-0 1/std) and
        # s0, s1 (the 1/std of both updates) are what the final image tokens need per prompt
        x01 = sparse.new_empty(b, 2 * nh * t, n)
        s01 = sparse.new_empty(b, 3, n)  # s0, s1, and A0 (Vg0 Vg0^T) A0^T for the layer-1 variance
        q = nh * t
        sh, sc = ctx.heads, ctx.scalars
        mats0 = torch.cat([gram0, h1.transpose(1, 2), vg0 @ vg0.transpose(1, 2)], 1)  # (B, 3hT, hT), on A0
        online = _Online()
        acc_p = acc_a = None
        for r0, r1 in self._tiles(b, ctx.grid):
            a0 = _softmax_heads(_head_products(k0, sh["q0"][..., r0:r1]), nh)  # (B, hT, R)
            m0 = torch.bmm(mats0, a0)
            s0 = s01[:, :1, r0:r1]
            self._layer0_stats(a0, _head_products(v0, sh["o0"][..., r0:r1]), m0, sc, r0, dim, eps0, s0,
                               x01[:, :q, r0:r1], s01[:, 2:, r0:r1])
            scores = _head_products(q1, sh["k1"][..., r0:r1], sh["k1_pe"][..., r0:r1], m0[:, q:2 * q], s0)
            ps, scale = online.add(scores, s0)  # (B, hT, R), the weights times s0
            acc_p = _accumulate(acc_p, scale, _head_sums(ps, sh["v1"][..., r0:r1]))
            acc_a = _accumulate(acc_a, scale, torch.bmm(ps, a0.transpose(1, 2)))
        mixed = acc_p + _head_blocks_take(torch.bmm(acc_a, r0m["v1"]), nh, t)
        mixed = mixed / online.sum
        mixed = mixed + _bias_rows(consts["v1_const"], nh, t)
        queries = self._token_mlp(l1, pre, self._attn_output(t2i1, mixed))

        # layer 1, image->token update, and the final token->image attention
        k1 = self._project(i2t1.k_proj, queries + tokens, 1.0 / math.sqrt(c))
        v1 = self._project(i2t1.v_proj, queries)
        r1m = self._value_rows(1, v1)
        vt1 = r1m["centred"]

        def rows01(key: str) -> Tensor:  # a map of the per-prompt rows [Vg0; Vt1] of the final image tokens
            return torch.cat([r0m[key], r1m[key]], 1)
        pre_f = queries[:, final_rows]
        cf = final.q_proj.weight.shape[0] // nh
        tf = len(final_rows)
        qf = self._project(final.q_proj, pre_f + tokens[:, final_rows], 1.0 / math.sqrt(cf))
        kf_beta = _head_blocks(consts["kf_beta"].expand(b, 1, -1), qf).transpose(1, 2)
        # act on X = [A0 * s0; A1]: the A1 rows of the Gram of the rows (variance; the A0 block is done),
        # the rows' dot with beta0, the final attention keys
        mats = torch.cat([vt1 @ torch.cat([2 * vg0, vt1], 1).transpose(1, 2), rows01("beta").transpose(1, 2),
                          _head_blocks(rows01("kf"), qf).transpose(1, 2)], 1)
        h1b_t = _head_blocks(r0m["q1"], k1).transpose(1, 2)
        online = _Online()
        acc_p = acc_x = acc_c = None
        for r0, r1 in self._tiles(b, ctx.grid):
            x, s0 = x01[..., r0:r1], s01[:, :1, r0:r1]
            scores = _head_products(k1, sh["q1"][..., r0:r1], sh["q1_pe"][..., r0:r1], None, s0)
            scores.baddbmm_(h1b_t, x[:, :q])
            x[:, q:] = _softmax_heads(scores, nh)  # A1
            m = torch.bmm(mats, x)  # (B, q + 1 + h*Tf, R)
            s1 = s01[:, 1:2, r0:r1]
            y0, y1 = _head_products(v0, sh["go0"][..., r0:r1]), _head_products(v1, sh["o1"][..., r0:r1])
            self._layer1_stats(x, y0, y1, m, s0, s1, s01[:, 2:, r0:r1], sc, r0, mean_v0, consts["beta_sq"],
                               dim, eps1)
            m[:, q + 1:] += kf_beta
            scores = _head_products(qf, sh["kf"][..., r0:r1], None, None, s0).add_(m[:, q + 1:]).mul_(s1)
            scores = _head_products(qf, sh["kf_pe"][..., r0:r1], None, scores)
            p1, scale = online.add(scores, s1)  # (B, h*Tf, R), the weights times s1
            acc_p = _accumulate(acc_p, scale, _head_sums(p1 * s0, sh["vf"][..., r0:r1]))
            acc_x = _accumulate(acc_x, scale, torch.bmm(p1, x.transpose(1, 2)))
            acc_c = _accumulate(acc_c, scale, p1.sum(2, keepdim=True))
        mixed = (acc_p + _head_blocks_take(torch.bmm(acc_x, rows01("vf")), nh, tf)
                 + acc_c * _bias_rows(consts["vf_beta"], nh, tf)) / online.sum
        mixed = mixed + _bias_rows(consts["vf_const"], nh, tf)
        queries = tr.norm_final_attn(pre_f + self._attn_output(final, mixed))
        iou = dec.iou_prediction_head(queries[:, 0, :])
        up_rows = torch.cat([rows01("up"), consts["up_beta"].expand(b, 1, -1)], 1)
        return DecoderState(iou=iou, mask_tokens=queries[:, 1:], token_ids=token_ids, weights=x01,
                            inv_std=s01, up_rows=up_rows, up_const=consts["up_const"])

    @staticmethod
    def _layer0_stats(a0: Tensor, o: Tensor, m0: Tensor, sc: dict[str, Tensor], r0: int, dim: int, eps: float,
                      s0: Tensor, x0: Tensor, q_gg: Tensor) -> None:
        """Layer-0 update's 1/std ``s0`` (B, 1, R), ``x0 = A0 * s0`` and ``q_gg = A0 Ggg A0^T`` (written in
        place) from the expansion ``|r + A0 V0|^2 = |r|^2 + 2 A0.(r V0^T) + A0 (V0 V0^T) A0^T`` (rows
        centred): ``o`` = r . V0 rows without the bias part, ``m0`` = [V0 V0^T; *; Ggg] @ A0."""
        b, q, r = a0.shape
        if native.usable(a0, o, m0, s0, x0) and a0.is_contiguous() and o.is_contiguous() \
                and m0.is_contiguous():
            native.kernels().layer0_stats(
                a0.data_ptr(), o.data_ptr(), m0.data_ptr(), m0.stride(0), b, q, r,
                sc["r0_sq"][r0:].data_ptr(), sc["r0_bo0"][r0:].data_ptr(), float(dim), float(eps),
                s0.data_ptr(), s0.stride(0),
                x0.data_ptr(), x0.stride(0), x0.stride(1), 2 * q, q_gg.data_ptr(), q_gg.stride(0))
            return
        cross = (a0 * o).sum(1).add_(sc["r0_bo0"][r0:r0 + r])
        var = (sc["r0_sq"][r0:r0 + r] + 2 * cross + (a0 * m0[:, :q]).sum(1)) / dim
        s0.copy_(torch.rsqrt(var.add_(eps)).unsqueeze(1))
        torch.mul(a0, s0, out=x0)
        q_gg.copy_((a0 * m0[:, 2 * q:]).sum(1, keepdim=True))

    @staticmethod
    def _layer1_stats(x: Tensor, y0: Tensor, y1: Tensor, m: Tensor, s0: Tensor, s1: Tensor, q_gg: Tensor,
                      sc: dict[str, Tensor], r0: int, mean_v0: Tensor, beta_sq: float, dim: int,
                      eps: float) -> None:
        """Layer-1 update's 1/std ``s1`` (B, 1, R), written in place, from the expansion of
        ``|new + A1 V1|^2`` over ``X = [A0 * s0; A1]`` (see the module docstring): ``y0``, ``y1`` the
        shared part's dot products with the rows, ``m[:, :Q]`` = the A1 rows of Gram @ X (with the
        cross block doubled), ``m[:, Q]`` = beta . X, ``q_gg`` the A0 block's quadratic form."""
        b, q2, r = x.shape
        q = q2 // 2
        if native.usable(x, y0, y1, m, s0, s1) and y0.is_contiguous() and y1.is_contiguous() \
                and x.stride(-1) == 1 and m.stride(-1) == 1 and m.stride(1) == r:
            mean_v0 = mean_v0.contiguous()  # kept alive for the call
            native.kernels().layer1_stats(
                x.data_ptr(), x.stride(0), x.stride(1), y0.data_ptr(), y1.data_ptr(), m.data_ptr(),
                m.stride(0), s0.data_ptr(), s1.data_ptr(), q_gg.data_ptr(), s0.stride(0), b, q, r,
                sc["rg_sq"][r0:].data_ptr(), sc["rg_beta0"][r0:].data_ptr(), sc["grg_bo0"][r0:].data_ptr(),
                sc["grg_sum"][r0:].data_ptr(),
                sc["rg_bo1"][r0:].data_ptr(), mean_v0.data_ptr(), float(beta_sq), float(dim),
                float(eps))
            return
        y0 = y0 + sc["grg_bo0"][r0:r0 + r] - sc["grg_sum"][r0:r0 + r] * mean_v0[..., None]  # rg . Vg0 rows
        y1 = y1 + sc["rg_bo1"][r0:r0 + r]  # rg . Vt1 rows
        s0v = s0[:, 0]
        lin = (x[:, :q] * y0).sum(1) + (x[:, q:] * y1).sum(1)
        var = s0v * (s0v * (sc["rg_sq"][r0:r0 + r] + q_gg[:, 0]) + 2 * sc["rg_beta0"][r0:r0 + r] + 2 * lin)
        var += (x[:, q:] * m[:, :q]).sum(1) + 2 * m[:, q] + beta_sq
        s1.copy_(torch.rsqrt(var.div_(dim).add_(eps)).unsqueeze(1))

    # ------------------------------------------------------------------ masks
    def _upscaling_weights(self) -> tuple[Tensor, ...]:
        """The two k=2 s=2 transposed convolutions as (4*C_out, C_in) linear weights (sub-pixel major)."""
        up1, _, _, up2, _ = self.decoder.output_upscaling
        mats = []
        for conv in (up1, up2):
            cin, cout = conv.in_channels, conv.out_channels
            weight = conv.weight.reshape(cin, cout, 4).permute(2, 1, 0)  # (sub-pixel, out, in)
            mats.append(weight.reshape(4 * cout, cin).contiguous())
            mats.append(conv.bias.repeat(4))
        return tuple(mats)

    @torch.no_grad()
    def masks(self, state: DecoderState, ctx: ImageContext, index: Tensor | None = None,
              token_ids: list[int] | None = None, valid: tuple[int, int] | None = None) -> Tensor:
        """Low-res mask logits (B', M, 4*gh, 4*gw) for prompts ``index`` (default all) and the mask
        tokens ``token_ids`` (default all that ``state`` holds).

        ``valid``: only the top-left ``(gh, gw)`` image tokens are upscaled (the rest of the grid maps
        to the padding of SAM's square input, which the caller never looks at); default the whole grid.
        """
        dec = self.decoder
        token_ids = token_ids if token_ids is not None else state.token_ids
        tokens = state.mask_tokens[:, [state.token_ids.index(i) for i in token_ids]]
        weights, inv_std, rows = state.weights, state.inv_std, state.up_rows
        if index is not None:
            tokens, weights, inv_std, rows = tokens[index], weights[index], inv_std[index], rows[index]
        h, w = ctx.grid
        gh, gw = valid or ctx.grid
        b = tokens.shape[0]
        mlps = dec.output_hypernetworks_mlps
        hyper = torch.stack([mlps[i](tokens[:, j]) for j, i in enumerate(token_ids)], 1)
        hyper_t = hyper.transpose(1, 2)  # (B, C2, M)
        _, ln, act1, _, act2 = dec.output_upscaling
        _, _, w2, b2 = self._up_weights_for(tokens)
        c1, c2 = ctx.up.shape[1] // 4, w2.shape[0] // 4
        linear_gelu = _linear_gelu(tokens, act2)
        m = len(token_ids)
        up_const = state.up_const.contiguous()
        hyper = hyper.contiguous()
        fused = c2 == 32 and native.usable(hyper, rows, inv_std, ctx.up, up_const, ln.weight, ln.bias) \
            and ctx.up.is_contiguous() and rows.is_contiguous() and inv_std.stride(-1) == 1 \
            and ln.weight.is_contiguous() and ln.bias.is_contiguous()  # what the native loops read
        out = hyper.new_empty(b, m, 4 * gh, 4 * gw) if fused else \
            torch.empty(b, gh, gw * 16, m, device=hyper.device, dtype=hyper.dtype)
        step = max(1, self.mask_tile // max(b, 1) // w)
        for y0 in range(0, gh, step):
            y1 = min(gh, y0 + step)
            sel = slice(y0 * w, y1 * w)
            if fused:  # const + s1 (X^T rows + beta + s0 up), then the LayerNorm, in one native pass
                y = torch.bmm(weights[..., sel].transpose(1, 2), rows[:, :-1])
                x = y.new_empty(b, y1 - y0, gw, 4, c1)
                native.kernels().up_norm(y.data_ptr(), rows[:, -1].data_ptr(), rows.stride(0), b, y1 - y0, w,
                                         gw, inv_std[:, 0, sel].data_ptr(),
                                         inv_std[:, 1, sel].data_ptr(), inv_std.stride(0),
                                         ctx.up[sel].data_ptr(), up_const.data_ptr(), ln.weight.data_ptr(),
                                         ln.bias.data_ptr(), float(ln.eps), c1, x.data_ptr())
                x = _activation_(act1, x.view(-1, c1))
            else:
                s0, s1 = inv_std[:, :1, sel], inv_std[:, 1:2, sel]
                coef = torch.cat([weights[..., sel] * s1, s1], 1).transpose(1, 2)  # (B, R, 2 * 56 + 1)
                x = torch.baddbmm(up_const, coef, rows)  # (B, R, 4*C1)
                x.addcmul_((s0 * s1).transpose(1, 2), ctx.up[sel])
                x = x.view(b, y1 - y0, w, -1)[:, :, :gw].reshape(-1, 4, c1)
                x = act1(F.layer_norm(x, (c1,), ln.weight, ln.bias, ln.eps)).view(-1, c1)
            x = linear_gelu(x, w2, b2)
            if fused:  # hyper . rows in one native pass, written in the pixel layout
                native.kernels().hyper_masks(x.data_ptr(), hyper.data_ptr(), b, m, y1 - y0, gw,
                                             out.data_ptr(), 4 * gh, 4 * gw, y0)
            else:
                out[:, y0:y1] = torch.bmm(x.view(b, -1, c2), hyper_t).view(b, y1 - y0, -1, m)
        if fused:
            return out
        # (B, gh, gw, a, b, a', b', M) with row 4y+2a+a', column 4x+2b+b' -> (B, M, 4gh, 4gw)
        out = out.view(b, gh, gw, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return out.reshape(b, -1, 4 * gh, 4 * gw)

    def _up_weights_for(self, like: Tensor) -> tuple[Tensor, ...]:
        weights = self._up_weights
        if weights is None or weights[0].device != like.device or weights[0].dtype != like.dtype:
            weights = self._up_weights = tuple(t.to(like) for t in self._upscaling_weights())
        return weights


def _activation_(act: nn.Module, x: Tensor) -> Tensor:
    """``act(x)``, in place for PyTorch's GELU (the upscaler's), else as the module computes it."""
    if isinstance(act, nn.GELU):
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    return act(x)


def _head_blocks_take(x: Tensor, num_heads: int, t: int) -> Tensor:
    """From (B, heads * T, heads * c) keep each row's own head block: (B, heads * T, c)."""
    b, _, hc = x.shape
    c = hc // num_heads
    x = x.view(b, num_heads, t, num_heads, c)
    return torch.diagonal(x, dim1=1, dim2=3).permute(0, 3, 1, 2).reshape(b, num_heads * t, c)


def _bias_rows(vector: Tensor, num_heads: int, t: int) -> Tensor:
    """A (heads * c,) vector as per-head rows (1, heads * T, c), each head's block repeated T times."""
    c = vector.shape[-1] // num_heads
    return vector.view(num_heads, 1, c).expand(num_heads, t, c).reshape(1, num_heads * t, c)


_ONEDNN_OK: bool | None = None


def _linear_gelu(like: Tensor, act: nn.Module):
    """``act(linear(x, w, b))`` for the upscaler: oneDNN's fused kernel (bias and exact GELU applied in
    the same pass; same values as the separate operations) on CPU float32 where available, else the
    plain PyTorch operations."""
    global _ONEDNN_OK
    plain = lambda x, w, b: act(F.linear(x, w, b))  # noqa: E731
    if like.device.type != "cpu" or like.dtype != torch.float32:
        return plain
    if not isinstance(act, nn.GELU) or act.approximate != "none":
        return plain
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if _ONEDNN_OK is None:
        try:
            x, w, b = torch.randn(8, 4), torch.randn(3, 4), torch.randn(3)
            _ONEDNN_OK = op is not None and torch.allclose(
                op(x, w, b, "gelu", [], "none"), F.gelu(F.linear(x, w, b)), atol=1e-5)
        except (RuntimeError, TypeError, AttributeError):
            _ONEDNN_OK = False
    if not _ONEDNN_OK:
        return plain
    return lambda x, w, b: op(x, w, b, "gelu", [], "none")
