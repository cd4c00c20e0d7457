"""InterAQA: Interpretable Long-term AQA (BMVC 2024, arXiv 2408.11687) as a clip-sequence head.

A DETR-style transformer decoder (no encoder) reads the clip features directly as memory
(no input projection, no memory positional encoding). There is one query per clip, each
with a sinusoidal positional encoding. Two MLPs on every decoder output give a clip score
s_q and a clip weight w_q (softmax over the queries); the prediction is sum_q w_q * s_q.
The loss is MSE plus the attention loss between the self- and the cross-attention outputs
of every layer (`attention_gram_kl`).

Defaults (`preset="paper"`) reproduce the authors' code, quirks included; each quirk is an
option:
- `query="noise"`: the query content is fresh N(0, query_var^2) noise on every forward
  pass, at test time too (the authors' query_var != 1; Fis-V uses 5). `"learned"` is their
  query_var == 1 path (a learned embedding per query position), `"shared"` one learned
  vector for all queries (position comes from the encoding alone, so any length works).
- `pos_adds_query0=True`: the authors' query positional input is sinusoid + the query
  content of the batch's first sample (their `pos_encoder(query_embed[:, 0])`).
- `self_attn_residual="dropped"`: after self-attention the authors keep a + dropout(a)
  and drop the residual input; `"standard"` is x + dropout(a).
- `pred_noise=0.05`: N(0, 0.05) noise added to the predictions inside the loss (their
  RG and Fis-V setting).
- `padding="zeros"`: a video shorter than the crop is zero-padded and the padding is not
  masked (the authors' Fisv_Dataset pads to 136 clips at train and test, and TQN passes no
  mask): every query, the padded positions' included, is scored, attends to the zero clips
  and enters the attention loss. `"mask"` leaves padding out of everything. "zeros" pads to
  the batch's length, so use it with inputs cropped and padded to data.clip_num (their
  protocol, `data.test_crop: crop`); scoring whole programs needs "mask".
Two more quirks live in the training config: StepLR stepped per iteration
(`schedule.per: iteration`) and a random crop at test (`data.test_crop: crop`).

Departures from the authors' code, none of which changes a number: their TQN keeps an
`nn.Embedding` of num_queries x D that the noise overwrites on every forward pass (it gets
gradients and Adam updates it, but never reaches an output); with `query="noise"` there is
no such parameter here, and its key in their checkpoints is ignored. The noise is drawn in
their layout (Q, B, D), `normal("query", ...)`, and the prediction noise as
`normal("pred", ...)` (one draw of B; theirs draws twice and keeps the second). Their
checkpoints load through `authors_layout` (`neck.*` and `head.*` keys).

`preset="clean"` fixes what is wrong: one learned query vector plus the sinusoid (no noise,
so test predictions are deterministic and any length can be scored), the standard residual,
and a positional input that is the sinusoid alone; its configs also step the schedule per
epoch and score the whole program with padding masks.

Padding: x is (B, T, D) with mask (B, T), True = real clip. Padded clips are never attended
to (key padding masks in self- and cross-attention), get weight 0, and are left out of the
attention loss, so padding changes no output of the real clips.

`score_dist` (not in the paper; the `ScoreDist` section shared with GDLT): kind "dae"
(`score_dist: dae` for short) adds a DAE output: logvar from an MLP (D -> 256 -> 1) of the
clip-weighted mean of the decoder outputs, sigma = exp(logvar / 2); the score is the mean,
and the MSE is replaced by the DAE likelihood (score_dist.alpha 0.6, score_dist.beta 0.4), by
default in its variance-weighted form (score_dist.loss "weighted"; "likelihood" is the plain
one).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import Tensor, nn

from aqa_pipeline.errors import AqaError
from aqa_pipeline.train.heads.authors import AuthorsLayout
from aqa_pipeline.train.heads.base import Head
from aqa_pipeline.train.heads.common import ScoreDistOptions, use_fast_dropout
from aqa_pipeline.train.heads.decoder import DecoderLayerParts
from aqa_pipeline.train.heads.registry import register_head
from aqa_pipeline.train.losses_longform import attention_gram_kl

Query = Literal["noise", "learned", "shared"]
Residual = Literal["dropped", "standard"]
Padding = Literal["zeros", "mask"]
# what query, pos_adds_query0 and self_attn_residual are when the config leaves them out
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "query": "noise",
        "pos_adds_query0": True,
        "self_attn_residual": "dropped",
        "padding": "zeros",
    },
    "clean": {
        "query": "shared",
        "pos_adds_query0": False,
        "self_attn_residual": "standard",
        "padding": "mask",
    },
}

# The authors' TQN neck (models/neck/TQN.py, its decoder from models/neck/transformer.py) and
# Evaluator_weighted head, as their run.py saves them: {'neck': ..., 'head': ...} (load_from
# reads 'evaluator'), each from nn.DataParallel (`module.` prefixes).
_AUTHORS_RULES = (
    (r"^layers\.(\d+)\.cross_attn\.", r"neck.decoder.layers.\1.multihead_attn."),
    (r"^layers\.(\d+)\.ffn\.0\.", r"neck.decoder.layers.\1.linear1."),
    (r"^layers\.(\d+)\.ffn\.3\.", r"neck.decoder.layers.\1.linear2."),
    (r"^layers\.(\d+)\.", r"neck.decoder.layers.\1."),
    (r"^norm\.", "neck.decoder.norm."),
    (r"^pe$", "neck.pos_encoder.pe"),
    (r"^score_mlp\.0\.", "head.layer1_mean."),
    (r"^score_mlp\.2\.", "head.layer2_mean."),
    (r"^score_mlp\.4\.", "head.layer3_mean."),
    (r"^weight_mlp\.0\.", "head.layer1_weight."),
    (r"^weight_mlp\.2\.", "head.layer2_weight."),
    (r"^weight_mlp\.4\.", "head.layer3_weight."),
)
_AUTHORS_COMMON = {
    "source": "github.com/dx199771/Interpretability-AQA models/neck/TQN.py TQN + "
    "models/head/evaluator.py Evaluator_weighted",
    "convert": {r"pe|query_embed": "rows"},
    "parts": {"neck.": ("neck",), "head.": ("head", "evaluator")},
}
AUTHORS_LAYOUTS = {
    # query_var == 1: their query embedding is used, and is our learned query table
    "learned": AuthorsLayout(
        name="interaqa_dx199771",
        rules=(*_AUTHORS_RULES, (r"^query_embed$", "neck.query_embed.weight")),
        **_AUTHORS_COMMON,
    ),
    # query_var != 1 (every config of theirs): the noise overwrites it on every forward pass
    "noise": AuthorsLayout(
        name="interaqa_dx199771",
        rules=_AUTHORS_RULES,
        unused={
            r"neck\.query_embed\.weight": "overwritten by the query noise on every "
            "forward pass (query_var != 1)"
        },
        **_AUTHORS_COMMON,
    ),
    "shared": AuthorsLayout(
        name="interaqa_dx199771",
        rules=_AUTHORS_RULES,
        unused={
            r"neck\.query_embed\.weight": "a table per query position; this head "
            "(query: shared) learns one vector"
        },
        **_AUTHORS_COMMON,
    ),
}


def sinusoid_table(length: int, dim: int) -> Tensor:
    """The Transformer sinusoidal positional encoding, (length, dim): sin on even dims."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


def mlp_1024_512_256_1(in_dim: int) -> nn.Sequential:
    """The weight-score head's MLP: in_dim -> 512 -> 256 -> 1 with ReLU."""
    return nn.Sequential(
        nn.Linear(in_dim, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 1)
    )


class PreNormDecoderLayer(DecoderLayerParts):
    """Pre-norm decoder layer: self-attention, cross-attention to the clips, FFN.

    Returns the new queries and the self- and cross-attention outputs (B, Q, D) that the
    attention loss compares.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, residual: str):
        super().__init__(dim, heads, ffn_dim, dropout)
        if residual not in ("dropped", "standard"):
            raise AqaError(
                f"interaqa: self_attn_residual must be dropped|standard, got {residual!r}"
            )
        self.residual = residual

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        pos: Tensor,
        query_pad: Tensor | None,
        memory_pad: Tensor | None,
        memory_rows: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, Q, D), memory (B, T, D), pos (B or 1, Q, D); *_pad (B, Q|T) True = padding;
        memory_rows: `Attention.rows_for` of the memory, shared by the layers."""
        h = self.norm1(x)
        qk = h + pos
        a_self = self.self_attn(qk, qk, h, key_padding_mask=query_pad, need_weights=False)[0]
        if self.residual == "dropped":
            x = a_self + self.drop1(a_self)
        else:
            x = x + self.drop1(a_self)
        h = self.norm2(x)
        a_cross = self.cross_attn(
            h + pos,
            memory,
            memory,
            key_padding_mask=memory_pad,
            need_weights=False,
            key_rows=memory_rows,
        )[0]
        x = x + self.drop2(a_cross)
        x = x + self.drop3(self.ffn(self.norm3(x)))
        return x, a_self, a_cross


@register_head("interaqa")
class InterAQA(Head):
    """InterAQA head on clip sequences: x (B, T, D), mask (B, T) -> score (B,) and per-clip
    scores and weights (B, T). d_model is the feature dim D (1024 for Video Swin-B / I3D)."""

    input_kind = "clips"

    class Options(ScoreDistOptions):
        """preset: "paper" or "clean", the defaults of query, pos_adds_query0,
        self_attn_residual and padding (None = the preset's; see the module docstring and
        PRESETS: "paper" is the authors' code, quirks included, "clean" fixes them).
        query_var: the noise queries' std; max_queries: the longest clip sequence;
        attn_loss_weight: the attention loss's weight; pred_noise: the std of the noise on
        the predictions in the loss; dropout: in [0, 1); score_dist: `ScoreDist` (a string
        is its kind). The feature dim must be divisible by num_heads (checked on build)."""

        preset: Literal["paper", "clean"] = "paper"
        num_layers: PositiveInt = 2
        num_heads: PositiveInt = 4
        ffn_dim: PositiveInt = 1024
        dropout: float = Field(0.7, ge=0, lt=1)
        query: Query | None = None
        query_var: float = Field(5.0, ge=0)
        max_queries: PositiveInt = 1024
        pos_adds_query0: bool | None = None
        self_attn_residual: Residual | None = None
        padding: Padding | None = None
        attn_loss_weight: float = Field(1.0, ge=0)
        pred_noise: float = Field(0.05, ge=0)

        def resolved(self, key: str) -> Any:
            """query, pos_adds_query0, self_attn_residual or padding: as given, else the
            preset's."""
            value = getattr(self, key)
            return PRESETS[self.preset][key] if value is None else value

    def __init__(self, in_dim: int, options: Options | None = None, **kw: Any):
        super().__init__(options, **kw)
        o = self.opts
        if in_dim % o.num_heads:
            raise AqaError(
                f"interaqa: feature dim {in_dim} is not divisible by {o.num_heads} heads"
            )
        self.query = o.resolved("query")
        self.pos_adds_query0 = bool(o.resolved("pos_adds_query0"))
        self.padding = o.resolved("padding")
        self.query_var = o.query_var
        self.max_queries = o.max_queries
        self.attn_loss_weight = o.attn_loss_weight
        self.pred_noise = o.pred_noise
        self.score_dist = o.score_dist
        residual = o.resolved("self_attn_residual")
        num_heads, ffn_dim, dropout = o.num_heads, o.ffn_dim, o.dropout

        if self.query == "learned":
            self.query_embed = nn.Parameter(torch.randn(self.max_queries, in_dim))
        elif self.query == "shared":
            self.query_embed = nn.Parameter(torch.randn(1, in_dim))
        self.layers = nn.ModuleList(
            PreNormDecoderLayer(in_dim, num_heads, ffn_dim, dropout, residual)
            for _ in range(o.num_layers)
        )
        self.norm = nn.LayerNorm(in_dim)
        self.score_mlp = mlp_1024_512_256_1(in_dim)
        self.weight_mlp = mlp_1024_512_256_1(in_dim)
        if self.score_dist.dae:
            self.logvar_mlp = nn.Sequential(nn.Linear(in_dim, 256), nn.ReLU(), nn.Linear(256, 1))
        self.register_buffer("pe", sinusoid_table(self.max_queries, in_dim), persistent=False)
        use_fast_dropout(self)

    def _queries(self, batch: int, length: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """Query content (B or 1, Q, D) and positional input (1, Q, D) for Q = length."""
        if length > self.max_queries:
            raise AqaError(
                f"interaqa: {length} clips but max_queries is {self.max_queries}; "
                "raise head.max_queries or crop (data.clip_num)"
            )
        pe = self.pe[:length].to(like.dtype)[None]
        if self.query == "noise":  # drawn (Q, B, D) like the authors' query table
            tgt = self.normal("query", (length, batch, like.shape[-1]), self.query_var, like)
            tgt = tgt.transpose(0, 1)
        elif self.query == "learned":
            tgt = self.query_embed[:length][None]
        else:
            tgt = self.query_embed[None].expand(1, length, -1)
        pos = pe + tgt[:1] if self.pos_adds_query0 else pe
        return tgt.expand(batch, -1, -1), pos

    @property
    def has_sigma(self) -> bool:
        return self.score_dist.dae

    def forward(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """x (B, T, D) clip features, mask (B, T) bool True = real clip."""
        x = x.float() if x.dtype in (torch.float16, torch.float64) else x
        b, t, _ = x.shape
        if mask is not None and self.padding == "zeros":
            if not bool(mask.all()):  # the authors' zero-padded clips, not masked
                x = x * mask[..., None].to(x.dtype)
            mask = None
        pad = None if mask is None or bool(mask.all()) else ~mask
        tgt, pos = self._queries(b, t, x)
        rows = self.layers[0].cross_attn.rows_for(tgt, x, pad, need_weights=False)
        out, self_outs, cross_outs = tgt, [], []
        for layer in self.layers:
            out, a_self, a_cross = layer(out, x, pos, pad, pad, rows)
            self_outs.append(a_self)
            cross_outs.append(a_cross)
        out = self.norm(out)
        clip_scores = self.score_mlp(out).squeeze(-1).float()
        logits = self.weight_mlp(out).squeeze(-1).float()
        if pad is not None:
            logits = logits.masked_fill(pad, float("-inf"))
        weights = torch.softmax(logits, dim=1)
        result = {
            "score": (weights * clip_scores).sum(dim=1),
            "clip_scores": clip_scores,
            "clip_weights": weights,
            "self_attn": torch.stack(self_outs),
            "cross_attn": torch.stack(cross_outs),
        }
        if pad is not None:
            result["mask"] = ~pad  # for the attention loss
        if self.score_dist.dae:
            pooled = (weights[..., None] * out.float()).sum(dim=1)
            logvar = self.logvar_mlp(pooled).squeeze(-1).float()
            result["logvar"] = logvar
            result["sigma"] = torch.exp(0.5 * logvar)
        return result

    @property
    def authors_layout(self) -> AuthorsLayout:  # type: ignore[override]
        """The authors' key layout for this head's query kind (`AUTHORS_LAYOUTS`)."""
        return AUTHORS_LAYOUTS[self.query]

    def loss(self, out: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
        """MSE (or the DAE likelihood) on the score + attn_loss_weight * attention loss."""
        return self.loss_terms(out, batch)["total"]

    def loss_terms(self, out: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The terms: "mse" of the prediction plus its training noise (or "likelihood" with
        score_dist dae), "attention" (summed over layers) and "attention_<layer>" (when
        attn_loss_weight > 0), and "total" = main + attn_loss_weight * attention."""
        target = batch["target"].float()
        pred = out["score"]
        if self.training and self.pred_noise > 0:
            pred = pred + self.normal("pred", pred.shape, self.pred_noise, pred)
        if self.score_dist.dae:
            terms = {"likelihood": self.score_dist.loss_value(pred, out["logvar"], target)}
        else:
            terms = {"mse": F.mse_loss(pred, target)}
        main = next(iter(terms.values()))
        if self.attn_loss_weight == 0:
            return {**terms, "total": main}
        for i, (a_s, a_c) in enumerate(zip(out["self_attn"], out["cross_attn"], strict=True)):
            terms[f"attention_{i}"] = attention_gram_kl(a_s, a_c, out.get("mask"))
        terms["attention"] = sum(terms[f"attention_{i}"] for i in range(len(out["self_attn"])))
        return {**terms, "total": main + self.attn_loss_weight * terms["attention"]}
