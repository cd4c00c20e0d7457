"""`Attention` (aqa_pipeline.train.heads.layers) is bit-identical to nn.MultiheadAttention:
outputs, attention weights, and the gradients of the inputs and of every parameter, with the
same random draws (attention dropout), in the uses of the GDLT and InterAQA heads: training in
float32 and under bf16 autocast, evaluation under bf16 autocast (need_weights, padding masks),
and the cases it hands to nn.MultiheadAttention itself."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import Tensor, nn

from aqa_pipeline.train.heads.layers import Attention

BF16 = torch.backends.mkldnn.is_available()


def build(cls: type, dim: int, heads: int, seed: int = 0, p: float = 0.7) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    module = cls(dim, heads, dropout=p, batch_first=True)
    with torch.no_grad():  # a non-zero bias, as after training
        module.in_proj_bias.normal_(0, 0.1)
        module.out_proj.bias.normal_(0, 0.1)
    return module


def inputs(case: str, b: int, n: int, dim: int, dtype: torch.dtype) -> dict[str, Tensor]:
    """The head's tensors for one use: leaves that need gradients where the head's do."""
    torch.manual_seed(1)
    if case == "self":  # GDLT's encoder: x is the projected clips (bf16 under autocast)
        x = torch.randn(b, n, dim).to(dtype).requires_grad_()
        return {"leaf": x, "q": x}
    if case == "queries":  # GDLT's first decoder layer: grade queries expanded over the batch
        table = torch.randn(4, dim, requires_grad=True)
        return {"leaf": table, "q": table[None].expand(b, -1, -1)}
    if case == "cross":  # GDLT's decoder: float32 queries, memory in the encoder's dtype
        q = torch.randn(b, 4, dim, requires_grad=True)
        memory = torch.randn(b, n, dim).to(dtype).requires_grad_()
        return {"leaf": q, "q": q, "memory": memory}
    if case == "qk_v":  # InterAQA's self-attention: query = key = h + pos, value = h
        h = torch.randn(b, n, dim, requires_grad=True)
        pos = torch.randn(1, n, dim)
        return {"leaf": h, "q": h + pos, "v": h}
    if case == "clips":  # InterAQA's cross-attention: the clip features are keys and values
        q = torch.randn(b, n, dim, requires_grad=True)
        return {"leaf": q, "q": q, "memory": torch.randn(b, n, dim)}
    raise ValueError(case)


def call(module: nn.MultiheadAttention, t: dict[str, Tensor], case: str, pad, weights: bool):
    q = t["q"]
    if case in ("self", "queries"):
        return module(q, q, q, key_padding_mask=pad, need_weights=weights)
    if case == "qk_v":
        return module(q, q, t["v"], key_padding_mask=pad, need_weights=weights)
    kw = {}
    if isinstance(module, Attention):
        kw["key_rows"] = module.rows_for(q, t["memory"], pad, need_weights=weights)
    return module(q, t["memory"], t["memory"], key_padding_mask=pad, need_weights=weights, **kw)


def run(cls, case, dim, heads, b, n, dtype, amp, train, weights, pad=None, layers=1, p=0.7):
    """Outputs and gradients of `layers` modules (seeds 0, 1, ...) applied to the same
    inputs and summed, so gradients from several layers meet as in a head."""
    modules = [build(cls, dim, heads, seed, p) for seed in range(layers)]
    t = inputs(case, b, n, dim, dtype)
    torch.manual_seed(2)
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    grad = contextlib.nullcontext() if train else torch.no_grad()
    results = []
    with cast, grad:
        for m in modules:
            m.train(train)
            results.append(call(m, t, case, pad, weights))
    out = sum(r[0].float() for r in results)
    found = {"out": out}
    if weights:
        found["weights"] = torch.stack([r[1] for r in results])
    if train:
        torch.manual_seed(3)
        out.backward(torch.randn_like(out))
        for name, leaf in t.items():
            if name in ("leaf", "memory") and leaf.grad is not None:
                found[f"grad {name}"] = leaf.grad
        for i, m in enumerate(modules):
            for name, p in m.named_parameters():
                found[f"grad {i}.{name}"] = p.grad
    return found


def assert_identical(cls_found: dict, ref: dict) -> None:
    assert cls_found.keys() == ref.keys()
    for key, value in ref.items():
        got = cls_found[key]
        assert got.dtype == value.dtype and got.stride() == value.stride() or key != "out", key
        assert torch.equal(got, value), (key, (got.float() - value.float()).abs().max().item())


# (case, dim, heads, batch, length, need_weights, layers): the heads' uses, at their sizes
USES = [
    ("self", 256, 1, 32, 124, False, 1),  # GDLT encoder
    ("queries", 256, 1, 32, 4, False, 1),  # GDLT decoder self-attention, first layer
    ("cross", 256, 1, 32, 124, True, 2),  # GDLT decoder cross-attention, two layers
    ("cross", 256, 1, 16, 124, True, 2),  # the last, smaller batch
    ("qk_v", 256, 4, 4, 136, False, 1),  # InterAQA self-attention (d 1024 there)
    ("clips", 256, 4, 4, 136, False, 2),  # InterAQA cross-attention
    ("self", 64, 2, 1, 9, False, 1),  # batch of one: the fused-addmm projections
]


@pytest.mark.parametrize("p", [0.7, 0.0], ids=["dropout", "no-dropout"])
@pytest.mark.parametrize("amp", [False, True], ids=["float32", "bf16"])
@pytest.mark.parametrize("use", USES, ids=[f"{u[0]}-{u[1]}-{u[3]}" for u in USES])
def test_training_is_bit_identical(use, amp, p):
    """With dropout (the math path of scaled_dot_product_attention) and without (its kernel,
    as in the parity tests)."""
    if amp and not BF16:
        pytest.skip("no bf16 kernels")
    case, dim, heads, b, n, weights, layers = use
    dtype = torch.bfloat16 if amp else torch.float32
    args = (case, dim, heads, b, n, dtype, amp, True, weights)
    assert_identical(run(Attention, *args, layers=layers, p=p),
                     run(nn.MultiheadAttention, *args, layers=layers, p=p))  # fmt: skip


# (case, dim, heads, batch, length, need_weights): evaluation under bf16 autocast
EVAL_USES = [
    ("cross", 256, 1, 32, 302, True),  # GDLT scoring whole programs (padded batches)
    ("cross", 256, 1, 4, 142, True),
    ("cross", 256, 1, 1, 150, True),
    ("qk_v", 1024, 4, 8, 136, False),  # InterAQA, its size
    ("clips", 1024, 4, 8, 136, False),
    ("clips", 256, 4, 1, 40, False),
]


@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize("use", EVAL_USES, ids=[f"{u[0]}-{u[1]}-{u[3]}" for u in EVAL_USES])
def test_bf16_evaluation_is_bit_identical(use, masked):
    if not BF16:
        pytest.skip("no bf16 kernels")
    case, dim, heads, b, n, weights = use
    pad = None
    if masked:
        pad = torch.zeros(b, n, dtype=torch.bool)
        pad[b // 2 :, n - 20 :] = True
    args = (case, dim, heads, b, n, torch.bfloat16, True, False, weights, pad)
    assert_identical(run(Attention, *args, layers=2), run(nn.MultiheadAttention, *args, layers=2))


@pytest.mark.parametrize("amp", [False, True], ids=["float32", "bf16"])
def test_other_uses_are_nn_multihead_attention(amp):
    """Evaluation in float32, masks in training: nn.MultiheadAttention's own forward."""
    pad = torch.zeros(4, 30, dtype=torch.bool)
    pad[2:, 25:] = True
    dtype = torch.bfloat16 if amp else torch.float32
    for train, weights in ((False, False), (True, True), (True, False)):
        args = ("self", 64, 2, 4, 30, dtype, amp, train, weights, pad)
        assert_identical(run(Attention, *args), run(nn.MultiheadAttention, *args))
