"""SAM's mask decoder rewritten for many point prompts on one image (same weights, same maths).

SAM's ``MaskDecoder`` copies the 64x64x256 image embedding once per prompt and runs the two-way
transformer on every copy. For "segment everything" (hundreds of prompts, one image) most of that
work does not depend on the prompt, and most of the rest can be re-associated so that the image side
is only multiplied by small per-prompt matrices (``8 heads x 7 tokens = 56`` columns, not 128 or 256):

* layer 0 sees the plain image embedding: its key/value/query projections of the image tokens are
  computed once per image, leaving only attention over shared projections per prompt;
* token->image attention: ``q_h . (W_k x + b_k) = (W_k^T q_h) . x + const`` (the constant drops out of
  the softmax) and ``sum_j a_j (W_v x_j + b_v) = W_v (sum_j a_j x_j) + b_v``: the 4096 image tokens are
  never projected;
* image->token attention: scores are ``x @ (W_q^T k_h)``, the output projection is folded into the
  7 values of each head, ``sum_h A_h (V_h W_o,h^T)``, and its bias spread over the values;
* the image->token update, its residual and LayerNorm are row-local, so they run in tiles of image
  tokens that stay in cache (CPU memory bandwidth, not arithmetic, is what limits this decoder);
* the two stride-2 transposed convolutions of the upscaler are per-pixel linear maps, applied on the
  token layout (channels last) in tiles, un-shuffled only for the output masks; IoU prediction needs no
  upscaling, and only the image tokens whose pixels a caller uses are upscaled.

Results equal the original decoder's up to float rounding (tests/test_sam.py checks this).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SOFTMAX_FLOOR = 70.0


def _softmax(scores: Tensor, dim: int = -1) -> Tensor:
    """Softmax with scores floored at ``max - 70`` (in place): weights below ``e^-70`` of the largest
    (invisible in float32 sums) stay normal numbers instead of denormals, which are 10-100x slower
    on CPUs both in ``exp`` and in the matrix products that use the weights."""
    floor = scores.amax(dim, keepdim=True).sub_(SOFTMAX_FLOOR)
    return torch.maximum(scores, floor, out=scores).softmax(dim)


class _OnlineAttention:
    """``softmax(scores) @ values`` over all image tokens, accumulated tile by tile (flash-attention
    style: running max, running sum, rescaled accumulator). Exponents are floored at -70 as in
    :func:`_softmax`."""

    def __init__(self) -> None:
        self.max: Tensor | None = None
        self.sum: Tensor | None = None
        self.acc: Tensor | None = None

    def add(self, scores: Tensor, values: Tensor) -> None:
        """``scores``: (B, Q, R) for a tile of R image tokens with ``values`` (B, R, C)."""
        tile_max = scores.amax(-1, keepdim=True)
        new_max = tile_max if self.max is None else torch.maximum(self.max, tile_max)
        p = scores.sub_(new_max).clamp_(min=-SOFTMAX_FLOOR).exp_()
        if self.max is None:
            self.sum, self.acc = p.sum(-1, keepdim=True), torch.bmm(p, values)
        else:
            scale = (self.max - new_max).clamp_(min=-SOFTMAX_FLOOR).exp_()
            self.sum = self.sum.mul_(scale).add_(p.sum(-1, keepdim=True))
            self.acc = self.acc.mul_(scale).baddbmm_(p, values)
        self.max = new_max

    def result(self) -> Tensor:
        return self.acc / self.sum


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """(..., n, c) -> (..., heads, n, c / heads)."""
    *lead, n, c = x.shape
    return x.reshape(*lead, n, num_heads, c // num_heads).transpose(-3, -2)


@dataclass
class ImageContext:
    """Per-image tensors shared by every prompt: image tokens and layer-0 projections."""

    keys0: Tensor  # (HW, C) image embedding + dense "no mask" embedding
    pe: Tensor  # (HW, C) positional encoding of the image tokens
    t2i_k0: Tensor  # (heads, HW, c) layer-0 token->image keys
    t2i_v0: Tensor  # (heads, HW, c) layer-0 token->image values
    i2t_q0: Tensor  # (heads, HW, c) layer-0 image->token queries
    grid: tuple[int, int]


@dataclass
class DecoderState:
    """What the transformer leaves per prompt: IoU predictions, mask tokens, image tokens."""

    iou: Tensor  # (B, num_mask_tokens) predicted IoU of every mask token
    mask_tokens: Tensor  # (B, len(token_ids), C) final state of the mask tokens ``token_ids``
    key_tiles: list[Tensor]  # final image tokens, row tiles (B, R_i, C) in raster order
    token_ids: list[int]

    @property
    def keys(self) -> Tensor:
        """All final image tokens, (B, HW, C)."""
        return torch.cat(self.key_tiles, dim=1)


class FastMaskDecoder:
    """Wraps a SAM ``MaskDecoder`` (with its ``TwoWayTransformer``) for batched point prompts.

    ``tile``: image tokens x prompts processed at once by the row-local steps (cache-sized on CPU; a
    GPU wants it large).
    """

    def __init__(self, decoder: nn.Module, tile: int = 2048) -> None:
        self.decoder = decoder
        self.transformer = decoder.transformer
        self.num_heads = self.transformer.num_heads
        self.tile = tile
        self._up_weights: tuple[Tensor, ...] | None = None

    # ------------------------------------------------------------------ per image
    @torch.no_grad()
    def prepare(self, image_embedding: Tensor, image_pe: Tensor, dense: Tensor) -> ImageContext:
        """``image_embedding``, ``image_pe``: (1, C, h, w); ``dense``: (1, C, 1, 1) or (1, C, h, w)."""
        _, _, h, w = image_embedding.shape
        keys0 = (image_embedding + dense).flatten(2)[0].transpose(0, 1).contiguous()
        pe = image_pe.flatten(2)[0].transpose(0, 1).contiguous()
        keys0_pe = keys0 + pe
        layer0 = self.transformer.layers[0]
        t2i, i2t = layer0.cross_attn_token_to_image, layer0.cross_attn_image_to_token
        nh = self.num_heads
        return ImageContext(
            keys0=keys0, pe=pe,
            t2i_k0=_heads(t2i.k_proj(keys0_pe), nh).contiguous(),
            t2i_v0=_heads(t2i.v_proj(keys0), nh).contiguous(),
            i2t_q0=_heads(i2t.q_proj(keys0_pe), nh).contiguous(),
            grid=(h, w),
        )

    def _tiles(self, batch: int, grid: tuple[int, int]) -> list[tuple[int, int]]:
        """Row tiles (first, last + 1) of the image tokens: whole grid rows, ~``tile / batch`` tokens."""
        h, w = grid
        rows = max(1, min(h, self.tile // max(batch, 1) // w))
        return [(y * w, min(h, y + rows) * w) for y in range(0, h, rows)]

    # ------------------------------------------------------------------ token -> image
    def _t2i_shared(self, attn: nn.Module, queries: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Token->image attention against shared (per-image) projected keys/values (heads, HW, c)."""
        nh = self.num_heads
        b, t, _ = queries.shape
        q = _heads(attn.q_proj(queries), nh)  # (B, h, T, c)
        c = q.shape[-1]
        q = (q * (1.0 / math.sqrt(c))).transpose(0, 1).reshape(nh, b * t, c)
        weights = _softmax(torch.bmm(q, k.transpose(1, 2)))  # (h, BT, HW)
        out = torch.bmm(weights, v).view(nh, b, t, c).permute(1, 2, 0, 3).reshape(b, t, nh * c)
        return attn.out_proj(out)

    def _t2i_query(self, attn: nn.Module, queries: Tensor) -> Tensor:
        """Token->image queries pulled back through the key projection: (B, h*T, C), pre-scaled.

        ``q_h . (W_k x + b_k) = (W_k^T q_h) . x + q_h . b_k``; the second term is the same for every
        image token and cancels in the softmax, so the image tokens are never projected.
        """
        nh = self.num_heads
        b, t, _ = queries.shape
        q = _heads(attn.q_proj(queries), nh)  # (B, h, T, c)
        c = q.shape[-1]
        wk = attn.k_proj.weight.reshape(nh, c, -1)  # (h, c, C)
        return torch.matmul(q * (1.0 / math.sqrt(c)), wk.unsqueeze(0)).reshape(b, nh * t, -1)

    def _t2i_output(self, attn: nn.Module, mixed: Tensor, t: int) -> Tensor:
        """Output of token->image attention from ``mixed`` = attention-weighted image tokens (B, h*T, C)."""
        nh = self.num_heads
        b = mixed.shape[0]
        c = attn.v_proj.weight.shape[0] // nh
        wv = attn.v_proj.weight.reshape(nh, c, -1)
        out = torch.matmul(mixed.reshape(b, nh, t, -1), wv.transpose(1, 2).unsqueeze(0))  # (B, h, T, c)
        out = out + attn.v_proj.bias.reshape(nh, 1, c)
        return attn.out_proj(out.transpose(1, 2).reshape(b, t, nh * c))

    # ------------------------------------------------------------------ image -> token
    def _i2t_values(self, attn: nn.Module, queries: Tensor) -> Tensor:
        """Token values with the output projection folded in: (B, h*T, C).

        Each head's attention weights sum to 1, so the output bias is spread as ``bias / heads`` over
        every value row and the image-sized output needs no separate bias pass.
        """
        nh = self.num_heads
        b, t, _ = queries.shape
        v = _heads(attn.v_proj(queries), nh)  # (B, h, T, c)
        c = v.shape[-1]
        wo = attn.out_proj.weight.reshape(-1, nh, c).permute(1, 2, 0)  # (h, c, C)
        values = torch.matmul(v, wo.unsqueeze(0)).reshape(b, nh * t, -1)
        return values.add_(attn.out_proj.bias / nh)

    def _fused_pass(self, layer: nn.Module, queries: Tensor, tokens: Tensor, ctx: ImageContext,
                    keys: list[Tensor] | None, next_query: Tensor) -> tuple[list[Tensor], Tensor]:
        """Layer's image->token update of all image tokens, fused with the next token->image attention.

        Row tiles of image tokens: ``keys = norm4(keys + attn_i2t(keys + pe, queries))`` (layer 0, with
        ``keys`` None, uses the shared image queries of ``ctx``), then each new tile is attended to by
        ``next_query`` (from :meth:`_t2i_query`) with an online softmax, while the tile is in cache.
        Returns the new key tiles and the attention-weighted image tokens (B, h*T, C) for
        :meth:`_t2i_output`.
        """
        attn, norm = layer.cross_attn_image_to_token, layer.norm4
        nh = self.num_heads
        b, t, _ = queries.shape
        dim = ctx.keys0.shape[1]
        k = _heads(attn.k_proj(queries + tokens), nh)  # (B, h, T, c)
        c = k.shape[-1]
        k = k * (1.0 / math.sqrt(c))
        values = self._i2t_values(attn, queries)  # (B, hT, C)
        shared = keys is None
        if shared:
            k_shared = k.transpose(0, 1).reshape(nh, b * t, c)
        else:
            wq = attn.q_proj.weight.reshape(nh, c, -1)  # (h, c, C): scores = m @ (keys + pe)^T + bias
            m = torch.matmul(k, wq.unsqueeze(0)).reshape(b, nh * t, -1)
            bias = torch.matmul(k, attn.q_proj.bias.reshape(nh, c, 1)).reshape(b, nh * t, 1)
        mixer = _OnlineAttention()
        new_keys = []
        tiles = self._tiles(b, ctx.grid)
        rows = max(r1 - r0 for r0, r1 in tiles)
        work = torch.empty(2, b, rows, dim, device=queries.device, dtype=queries.dtype)  # reused
        for i, (r0, r1) in enumerate(tiles):
            with_pe, update = work[0, :, : r1 - r0], work[1, :, : r1 - r0]
            pe = ctx.pe[r0:r1]
            if shared:
                scores = torch.bmm(k_shared, ctx.i2t_q0[:, r0:r1].transpose(1, 2))  # (h, BT, R)
                weights = scores.view(nh, b, t, -1).softmax(dim=2).transpose(0, 1).reshape(b, nh * t, -1)
                residual = ctx.keys0[r0:r1]
            else:
                residual = keys[i]
                torch.add(residual, pe, out=with_pe)
                scores = torch.baddbmm(bias, m, with_pe.transpose(1, 2))  # (B, hT, R)
                weights = scores.view(b, nh, t, -1).softmax(dim=2).view(b, nh * t, -1)
            torch.bmm(weights.transpose(1, 2), values, out=update).add_(residual)  # (B, R, C)
            new = F.layer_norm(update, (dim,), norm.weight, norm.bias, norm.eps)
            new_keys.append(new)
            torch.add(new, pe, out=with_pe)
            mixer.add(torch.bmm(next_query, with_pe.transpose(1, 2)), new)
        return new_keys, mixer.result()

    # ------------------------------------------------------------------ transformer
    @torch.no_grad()
    def transform(self, ctx: ImageContext, sparse: Tensor, multimask: bool = True) -> DecoderState:
        """Run the two-way transformer for ``sparse`` prompt embeddings (B, N, C).

        The final token->image attention treats tokens independently and only the IoU token and the
        mask tokens that will be read leave the transformer, so it runs for those alone: with
        ``multimask`` the three multimask tokens (SAM's ``multimask_output=True``), else all.
        """
        dec, tr = self.decoder, self.transformer
        b = sparse.shape[0]
        out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        layers = list(tr.layers)
        token_ids = list(range(1 if multimask else 0, dec.num_mask_tokens))
        final_rows = [0] + [1 + i for i in token_ids]  # IoU token, then the mask tokens read
        queries = self._self_attention(layers[0], tokens, tokens)
        out = self._t2i_shared(layers[0].cross_attn_token_to_image, queries + tokens, ctx.t2i_k0, ctx.t2i_v0)
        queries = self._token_mlp(layers[0], queries, out)
        keys = None
        for i, layer in enumerate(layers):
            if i + 1 < len(layers):  # the next layer's token side up to its token->image attention
                nxt = layers[i + 1]
                pre = self._self_attention(nxt, queries, tokens)
                t2i = nxt.cross_attn_token_to_image
            else:
                pre = queries[:, final_rows]
                t2i = tr.final_attn_token_to_image
            query_pe = pre + (tokens if i + 1 < len(layers) else tokens[:, final_rows])
            keys, mixed = self._fused_pass(layer, queries, tokens, ctx, keys, self._t2i_query(t2i, query_pe))
            out = self._t2i_output(t2i, mixed, pre.shape[1])
            if i + 1 < len(layers):
                queries = self._token_mlp(layers[i + 1], pre, out)
            else:
                queries = tr.norm_final_attn(pre + out)
        iou = dec.iou_prediction_head(queries[:, 0, :])
        return DecoderState(iou=iou, mask_tokens=queries[:, 1:], key_tiles=keys, token_ids=token_ids)

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
    def masks(self, state: DecoderState, grid: tuple[int, int], index: Tensor | None = None,
              token_ids: list[int] | None = None, valid: tuple[int, int] | None = None) -> Tensor:
        """Low-res mask logits (B', M, 4*gh, 4*gw) for prompts ``index`` (default all) and the mask
        tokens ``token_ids`` (default all that ``state`` holds).

        ``valid``: only the top-left ``(gh, gw)`` image tokens are upscaled (the rest of the grid maps
        to the padding of SAM's square input, which the caller never looks at); default the whole grid.
        """
        dec = self.decoder
        token_ids = token_ids if token_ids is not None else state.token_ids
        tokens = state.mask_tokens[:, [state.token_ids.index(i) for i in token_ids]]
        tiles = state.key_tiles
        if index is not None:
            tokens = tokens[index]
        h, w = grid
        gh, gw = valid or grid
        b, c = tokens.shape[0], tiles[0].shape[-1]
        mlps = dec.output_hypernetworks_mlps
        hyper = torch.stack([mlps[i](tokens[:, j]) for j, i in enumerate(token_ids)], 1)
        hyper_t = hyper.transpose(1, 2)  # (B, C2, M)
        _, ln, act1, _, act2 = dec.output_upscaling
        w1, b1, w2, b2 = self._up_weights_for(tiles[0])
        c1, c2 = w1.shape[0] // 4, w2.shape[0] // 4
        linear, linear_gelu = _onednn_linears(tiles[0], act2)
        out = torch.empty(b, gh, gw * 16, len(token_ids), device=hyper.device, dtype=hyper.dtype)
        y0 = 0
        for tile in tiles:
            y1 = min(gh, y0 + tile.shape[1] // w)
            if y1 > y0:
                x = tile if index is None else tile[index]
                x = x.view(b, -1, w, c)[:, : y1 - y0, :gw].reshape(-1, c)
                x = linear(x, w1, b1).view(-1, 4, c1)
                x = act1(F.layer_norm(x, (c1,), ln.weight, ln.bias, ln.eps)).view(-1, c1)
                x = linear_gelu(x, w2, b2)
                out[:, y0:y1] = torch.bmm(x.view(b, -1, c2), hyper_t).view(b, y1 - y0, -1, len(token_ids))
            y0 += tile.shape[1] // w
        # (B, gh, gw, a, b, a', b', M) with row 4y+2a+a', column 4x+2b+b' -> (B, M, 4gh, 4gw)
        out = out.view(b, gh, gw, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return out.reshape(b, -1, 4 * gh, 4 * gw)

    def _up_weights_for(self, like: Tensor) -> tuple[Tensor, ...]:
        weights = self._up_weights
        if weights is None or weights[0].device != like.device or weights[0].dtype != like.dtype:
            weights = self._up_weights = tuple(t.to(like) for t in self._upscaling_weights())
        return weights


_ONEDNN_OK: bool | None = None


def _onednn_linears(like: Tensor, act: nn.Module):
    """``(linear, act(linear))`` for the upscaler: oneDNN's fused kernels (bias and exact GELU applied
    in the same pass; same values as the separate operations) on CPU float32 where available,
    else the plain PyTorch operations."""
    global _ONEDNN_OK
    plain = (F.linear, lambda x, w, b: act(F.linear(x, w, b)))
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
    return (lambda x, w, b: op(x, w, b, "none", [], ""), lambda x, w, b: op(x, w, b, "gelu", [], "none"))
