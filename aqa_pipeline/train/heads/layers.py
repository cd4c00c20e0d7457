"""`Attention`: nn.MultiheadAttention with the same parameters and the same arithmetic, in
fewer copies (the GDLT and InterAQA transformers use it).

nn.MultiheadAttention (batch_first) transposes its inputs to (L, B, E), projects them, copies
the packed projection into a (3, L, B, E) tensor and takes q, k and v out of it; in backward
each of those three takes fills a zero (3, L, B, E) buffer and two additions sum them. In
evaluation under bf16 autocast, each projection by a slice of the packed weight (the query
and key-value projections of a cross-attention, InterAQA's separate q, k, v) multiplies the
transposed input by the weight expanded to (L, E, N), a copy of L * E * N elements: for
InterAQA's 136 clips of d 1024, 285 M elements per key-value projection, 8 s of a 32-program
batch that trains in 2.4 s.

`Attention.forward` computes the same products on the same rows in the same order (weight
gradients sum over the rows, so their order matters), the same attention arithmetic (what
scaled_dot_product_attention's math path computes in training, float32 inside under bf16
autocast; its own kernel in evaluation) and the same random draws (dropout of the attention
weights), and splits the projection into views whose backward is one concatenation. In
evaluation an expanded product runs on chunks of positions against a weight expanded only
to the chunk (the same kernel: the same bits, without the L-fold copy). A caller that uses the
same keys in several layers can project their rows once (`Attention.rows_for`). Results are
bit-identical to nn.MultiheadAttention's (tests/test_head_speed_attention.py) in
- training with autograd on, on the CPU, without masks (the GDLT and InterAQA paper
  trainings), in float32 and under bf16 autocast;
- evaluation without autograd under bf16 autocast, with or without padding masks, except
  packed self-attention (which nn computes without copies there).
Everything else (float32 evaluation, which may take PyTorch's fused fast path; masks in
training; other devices) calls nn.MultiheadAttention.forward.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype of the attention's products: autocast's on x's device when it is on, else
    x's own."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def autocast_cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """What autocast does to a floating input of a lower-precision op: t in dtype."""
    return t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t


def shared_rows(x_t: Tensor, source: Tensor) -> Tensor | None:
    """The rows (L * B, E) of x_t (L, B, E), the transposed and cast `source`, for several
    projections to share; None where sharing would change a bit: when x_t is contiguous (the
    projections are fused addmms then), or when `source` needs a gradient in another dtype
    (nn.MultiheadAttention sums the projections' gradients after casting each back)."""
    if x_t.is_contiguous() or (source.requires_grad and source.dtype != x_t.dtype):
        return None
    return x_t.reshape(-1, x_t.shape[-1])


def key_rows(key: Tensor) -> Tensor | None:
    """The rows (S * B, E) of key (B, S, E) in the order nn.MultiheadAttention's projection
    multiplies them (sequence-major), cast as autocast would, or None (`shared_rows`). Pass
    it as `Attention.forward(..., key_rows=)` to every layer attending to the same keys."""
    return shared_rows(autocast_cast(key.transpose(0, 1), compute_dtype(key)), key)


def project(
    x_t: Tensor, weight: Tensor, bias: Tensor, rows: Tensor | None = None, batched: bool = False
) -> Tensor:
    """x_t (L, B, E) -> x_t @ weight.T + bias (L, B, N), as F.linear computes it: one fused
    addmm when x_t is contiguous; else, for a weight that requires grad, the product of its
    rows (L, B order; `rows` when given) and then the bias; for one that does not (`batched`:
    a slice of the packed weight cast by autocast without autograd), a product per position
    (F.linear's is batched against the weight expanded L times), then the bias."""
    if rows is None and x_t.is_contiguous():
        return F.linear(x_t, weight, bias)
    if batched:
        return batched_product(x_t, weight) + bias
    if rows is None:
        rows = x_t.reshape(-1, x_t.shape[-1])
    # out of place: an in-place add on the view would make autograd rebuild the gradient
    # through as_strided copies, and sum the bias gradient over another layout
    return torch.mm(rows, weight.t()).view(*x_t.shape[:2], -1) + bias


def batched_product(x_t: Tensor, weight: Tensor, chunk_elements: int = 1 << 21) -> Tensor:
    """torch.matmul(x_t, weight.t()) for x_t (L, B, E) that cannot be flattened without a copy
    and a weight (N, E) that needs no gradient. matmul runs one bmm against the weight
    expanded to (L, E, N), which bmm copies; here bmm runs on chunks of c positions against
    the weight expanded c times (at most `chunk_elements` elements, copied once): the same
    kernel on the same operands, so the same bits, without the L-fold copy."""
    n, e = weight.shape
    c = max(1, min(x_t.shape[0], chunk_elements // (e * n)))
    w_t = weight.t().expand(c, e, n).contiguous()  # (c, E, N)
    out = torch.empty(x_t.shape[0], x_t.shape[1], n, dtype=x_t.dtype, device=x_t.device)
    for i in range(0, x_t.shape[0], c):
        m = min(c, x_t.shape[0] - i)
        torch.bmm(x_t[i : i + m], w_t[:m], out=out[i : i + m])
    return out


def as_attention(module: nn.MultiheadAttention) -> Attention:
    """`module` (e.g. nn.TransformerEncoderLayer's self_attn) made an `Attention` in place:
    the same parameters, and no new random draws (a new module would re-initialise)."""
    module.__class__ = Attention
    return module  # type: ignore[return-value]


class Attention(nn.MultiheadAttention):
    """nn.MultiheadAttention (same parameters and state-dict keys) computed without its
    needless copies where that is bit-identical (see the module docstring); query (B, L, E),
    key and value (B, S, E), batch_first only."""

    def forward(  # type: ignore[override]
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
        key_rows: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """As nn.MultiheadAttention.forward; key_rows: `rows_for(query, key)`, shared by the
        layers that attend to the same keys."""
        if self.own_path(query, key, value, key_padding_mask, need_weights, attn_mask, is_causal):
            return self._attend(query, key, value, key_padding_mask, need_weights,
                                average_attn_weights, key_rows)  # fmt: skip
        return super().forward(query, key, value, key_padding_mask, need_weights, attn_mask,
                               average_attn_weights, is_causal)  # fmt: skip

    def own_path(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> bool:
        """Whether forward() with these arguments runs its own computation (bit-identical to
        nn.MultiheadAttention's) rather than nn's."""
        plain = (
            self.batch_first
            and self._qkv_same_embed_dim
            and self.in_proj_bias is not None
            and self.bias_k is None
            and not self.add_zero_attn
            and attn_mask is None
            and not is_causal
            and query.dim() == 3
            and query.device.type == "cpu"
        )
        if not plain:
            return False
        if self.training and torch.is_grad_enabled():
            return key_padding_mask is None
        return (
            not self.training
            and not torch.is_grad_enabled()
            and torch.is_autocast_enabled("cpu")
            and not (query is key and key is value)
        )

    def rows_for(
        self, query: Tensor, key: Tensor, key_padding_mask: Tensor | None = None, **kw: Any
    ) -> Tensor | None:
        """`key_rows(key)` when forward(query, key, key, key_padding_mask, **kw) would use
        them (training), else None: pass it to every layer attending to the same keys."""
        if self.training and self.own_path(query, key, key, key_padding_mask, **kw):
            return key_rows(key)
        return None

    def _attend(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None,
        need_weights: bool,
        average: bool,
        rows: Tensor | None,
    ) -> tuple[Tensor, Tensor | None]:
        dtype = compute_dtype(query)
        b, length, e = query.shape
        with torch.autocast("cpu", enabled=False):  # every cast below is explicit
            q, k, v = self._in_projection(query, key, value, dtype, rows)  # (L|S, B, E) each
            p = self.dropout if self.training else 0.0
            if need_weights:
                out, weights = self._weighted(q, k, v, key_padding_mask, p, b, average)
            elif p > 0:  # scaled_dot_product_attention's choice on the CPU
                out, weights = self._sdpa_math(q, k, v, p, b), None
            else:
                out, weights = self._sdpa(q, k, v, key_padding_mask, b), None
            w_out = autocast_cast(self.out_proj.weight, dtype)
            b_out = autocast_cast(self.out_proj.bias, dtype)
            out = F.linear(out, w_out, b_out).view(length, b, e)
        return out.transpose(1, 0), weights

    def _in_projection(
        self, query: Tensor, key: Tensor, value: Tensor, dtype: torch.dtype, rows: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """q (L, B, E), k and v (S, B, E) in dtype: the packed projection of
        nn.MultiheadAttention (self-attention: one product; key is value: one for the query
        and one for the key and value; else three, from slices of the packed weight, which
        F.linear multiplies position by position without autograd: `project(batched=)`)."""
        e = self.embed_dim
        w = autocast_cast(self.in_proj_weight, dtype)
        bias = autocast_cast(self.in_proj_bias, dtype)
        q_t = autocast_cast(query.transpose(0, 1), dtype)
        sliced = not torch.is_grad_enabled()
        if query is key and key is value:
            q, k, v = project(q_t, w, bias).split(e, dim=-1)
        elif key is value:
            (w_q, w_kv), (b_q, b_kv) = w.split([e, 2 * e]), bias.split([e, 2 * e])
            k_t = autocast_cast(key.transpose(0, 1), dtype)
            q = project(q_t, w_q, b_q, batched=sliced)
            k, v = project(k_t, w_kv, b_kv, rows, batched=sliced).split(e, dim=-1)
        else:
            (w_q, w_k, w_v), (b_q, b_k, b_v) = w.chunk(3), bias.chunk(3)
            k_t = autocast_cast(key.transpose(0, 1), dtype)
            v_t = autocast_cast(value.transpose(0, 1), dtype)
            q_rows = shared_rows(q_t, query) if key is query and not sliced else None
            q = project(q_t, w_q, b_q, q_rows, batched=sliced)
            k = project(k_t, w_k, b_k, q_rows, batched=sliced)
            v = project(v_t, w_v, b_v, batched=sliced)
        return q, k, v

    def _heads(self, x: Tensor) -> Tensor:
        """(L, B, E) -> (B * H, L, head_dim), as nn.MultiheadAttention views it; a view of a
        slice of the projection where the strides allow (one head), else a copy. (The
        products on the CPU give the same bits for any strides of their operands; checked
        by tests/test_head_speed_attention.py.)"""
        n, b, _ = x.shape
        return x.reshape(n, b * self.num_heads, self.head_dim).transpose(0, 1)

    def _heads_contiguous(self, x: Tensor) -> Tensor:
        """(L, B, E) -> (B * H, L, head_dim) float32, contiguous: one copy."""
        n, b, _ = x.shape
        x = x.unflatten(-1, (self.num_heads, self.head_dim)).permute(1, 2, 0, 3)
        if x.dtype == torch.float32:  # (.to returns a same-dtype tensor as is)
            x = x.contiguous()
        else:
            x = x.to(torch.float32, memory_format=torch.contiguous_format)
        return x.view(b * self.num_heads, n, self.head_dim)

    def _merge_heads(self, out: Tensor, b: int, dtype: torch.dtype | None = None) -> Tensor:
        """(B * H, L, head_dim) -> the rows (L * B, E) of the output projection, in dtype."""
        n = out.shape[1]
        out = out.view(b, self.num_heads, n, self.head_dim).permute(2, 0, 1, 3)
        if dtype is None or dtype == out.dtype:  # (.to returns a same-dtype tensor as is)
            out = out.contiguous()
        else:  # the cast and the layout in one copy
            out = out.to(dtype, memory_format=torch.contiguous_format)
        return out.view(n * b, self.embed_dim)

    def _sdpa_math(self, q: Tensor, k: Tensor, v: Tensor, p: float, b: int) -> Tensor:
        """The attention output rows (L * B, E) as scaled_dot_product_attention's math path
        computes them from q, k, v (L|S, B, E), its path on the CPU with dropout p > 0: in
        float32 (it upcasts bf16), q and k each scaled by sqrt(1 / sqrt(head_dim)), the safe
        softmax, dropout. q, k and v are laid out (B * H, L, head_dim), contiguous (in the one
        copy that also casts them): nn's views of them, position-major, make the CPU's batched
        products (their backward's above all) several times slower, for the same bits."""
        dtype = q.dtype
        q, k, v = (self._heads_contiguous(t) for t in (q, k, v))
        scale = math.sqrt(1.0 / math.sqrt(self.head_dim))
        attn = torch.bmm(q * scale, k.transpose(-2, -1) * scale)
        attn = torch._safe_softmax(attn, -1)
        if p > 0:
            attn = F.dropout(attn, p)
        return self._merge_heads(torch.bmm(attn, v), b, dtype)

    def _sdpa(
        self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None, b: int
    ) -> Tensor:
        """The attention output rows (L * B, E) without dropout: scaled_dot_product_attention
        (its CPU kernel) on q, k, v (L|S, B, E) made contiguous as nn.MultiheadAttention
        makes them, with the padding as an additive mask in their dtype."""
        h, n, s = self.num_heads, q.shape[0], k.shape[0]
        q, k, v = (self._heads(t.contiguous()).view(b, h, -1, self.head_dim) for t in (q, k, v))
        mask = None
        if key_padding_mask is not None:
            mask = torch.zeros(key_padding_mask.shape, dtype=q.dtype, device=q.device)
            mask = mask.masked_fill_(key_padding_mask, float("-inf"))
            mask = mask.view(b, 1, 1, s).expand(-1, h, -1, -1).reshape(b * h, 1, s)
            mask = mask.view(b, h, -1, s)
        out = F.scaled_dot_product_attention(q, k, v, mask)
        return out.permute(2, 0, 1, 3).reshape(n * b, self.embed_dim)

    def _weighted(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        key_padding_mask: Tensor | None,
        p: float,
        b: int,
        average: bool,
    ) -> tuple[Tensor, Tensor]:
        """nn.MultiheadAttention's need_weights path: the output rows (L * B, E) and the
        attention weights (B, L, S), averaged over heads when `average` (else (B, H, L, S))."""
        q, k, v = (self._heads(t) for t in (q, k, v))
        n, s = q.shape[1], k.shape[1]
        q = q * math.sqrt(1.0 / float(self.head_dim))
        if key_padding_mask is None:
            attn = torch.bmm(q, k.transpose(-2, -1))
        else:
            mask = torch.zeros(key_padding_mask.shape, dtype=q.dtype, device=q.device)
            mask = mask.masked_fill_(key_padding_mask, float("-inf"))
            mask = mask.view(b, 1, 1, s).expand(-1, self.num_heads, -1, -1)
            attn = torch.baddbmm(mask.reshape(b * self.num_heads, 1, s), q, k.transpose(-2, -1))
        attn = F.softmax(attn, dim=-1)
        if p > 0:
            attn = F.dropout(attn, p)
        out = torch.bmm(attn, v).transpose(0, 1).reshape(n * b, self.embed_dim)
        weights = attn.view(b, self.num_heads, n, s)
        return out, weights.mean(dim=1) if average else weights
