"""GDLT: Likert Scoring with Grade Decoupling for Long-term Action Assessment (CVPR 2022).

Clip features (B, T, 1024) -> pointwise projection 1024 -> 512 (BN, ReLU) -> 256 (BN)
(the paper's Conv1d with kernel 1, written as Linear) -> a post-norm transformer with
1 encoder and 2 decoder layers (d 256, 1 head, FFN 768, no positional encoding, as
nn.Transformer) -> 4 learned grade queries. Grade i gets s_i = <q_i, W_i> + b_i (the
diagonal of Linear(256, 4) applied to the decoded queries), and the prediction is the
Likert sum  sum_i v_i * sigmoid(s_i) / sum_j sigmoid(s_j)  with v = linspace(0, 1, 4).
Loss: MSE + alpha * batch-hard triplet loss with cosine distance on the decoded queries,
labelled by grade index (alpha 1.0 RG, 0.5 Fis-V; margin 1.0).

Padding: x is (B, T, D) with mask (B, T), True = real clip. In eval mode, and in training
with `padding: mask`, batch-norm statistics are taken over the real clips only, and the
encoder and the decoder's cross-attention never attend to padding, so a whole program can be
scored in a padded batch (the authors test one video at a time: the same numbers).
`padding: zeros` (the default, the authors' training) treats the clips a training video is
padded with (up to data.clip_num) as zero features the model sees: the authors' RGDataset
zero-pads short videos to clip_num and their model has no mask, so in training the zeros
enter the batch-norm statistics and are attended to. It changes nothing when every training
video has at least clip_num clips (Fis-V at 124).

Interpretability: the grade queries' cross-attention over the clips in the last decoder
layer splits the score exactly into clip weights c_t = sum_i p_i A_it and clip scores
sum_i p_i v_i A_it / c_t, with sum_t c_t * clip_score_t = score.

`score_dist` (not in the paper; the `ScoreDist` section shared with InterAQA): kind "dae"
(`score_dist: dae` for short) adds a DAE output: logvar = Linear(G * d, 1) of the decoded
grade queries, sigma = exp(logvar / 2); the score (the Likert sum) is the mean, and the MSE is
replaced by the DAE likelihood (score_dist.alpha 0.6, score_dist.beta 0.4). score_dist.loss
"weighted" (default) is its variance-weighted form (`weighted_likelihood_loss`); "likelihood",
the plain form, diverged within 3 epochs on Fis-V TES under GDLT's SGD at lr 1e-2.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from torch import Tensor, nn

from aqa_pipeline.train.heads.authors import AuthorsLayout
from aqa_pipeline.train.heads.base import Head
from aqa_pipeline.train.heads.common import ScoreDistOptions, use_fast_dropout
from aqa_pipeline.train.heads.decoder import DecoderLayerParts
from aqa_pipeline.train.heads.layers import as_attention
from aqa_pipeline.train.heads.registry import register_head
from aqa_pipeline.train.losses_longform import hardest_triplet_loss


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over the channels of (B, T, C) whose training statistics use only the
    positions where mask (B, T) is True. With no mask it equals nn.BatchNorm1d on (B, C, T)."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if mask is None or not self.training:
            # (B*T, C) has the statistics of (B, C, T), without the transposed copies
            return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)
        real = x[mask]  # (N, C)
        n = real.shape[0]
        mean = real.mean(dim=0)
        var = real.var(dim=0, unbiased=False)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * (n / max(n - 1, 1))
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * unbiased)
                self.num_batches_tracked += 1
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y * mask[..., None]


class PostNormDecoderLayer(DecoderLayerParts):
    """nn.TransformerDecoderLayer (post-norm, ReLU) that also returns the cross-attention
    weights (B, Q, T), averaged over heads."""

    def forward(
        self,
        q: Tensor,
        memory: Tensor,
        memory_pad: Tensor | None,
        memory_rows: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """q (B, Q, d), memory (B, T, d), memory_pad (B, T) True = padding; memory_rows:
        `Attention.rows_for` of the memory, shared by the layers."""
        q = self.norm1(q + self.drop1(self.self_attn(q, q, q, need_weights=False)[0]))
        a, weights = self.cross_attn(
            q, memory, memory, key_padding_mask=memory_pad, key_rows=memory_rows
        )
        q = self.norm2(q + self.drop2(a))
        q = self.norm3(q + self.drop3(self.ffn(q)))
        return q, weights


# The authors' models/model.py GDLT: in_proj = Sequential(Conv1d, BatchNorm1d, ReLU, Conv1d,
# BatchNorm1d), transformer = their copy of nn.Transformer, prototype = the grade queries.
AUTHORS_LAYOUT = AuthorsLayout(
    name="gdlt_xuangch",
    source="github.com/xuangch/CVPR22_GDLT models/model.py GDLT",
    rules=(
        (r"^proj1\.", "in_proj.0."),
        (r"^bn1\.", "in_proj.1."),
        (r"^proj2\.", "in_proj.3."),
        (r"^bn2\.", "in_proj.4."),
        (r"^encoder\.(\d+)\.", r"transformer.encoder.layers.\1."),
        (r"^encoder_norm\.", "transformer.encoder.norm."),
        (r"^decoder\.(\d+)\.cross_attn\.", r"transformer.decoder.layers.\1.multihead_attn."),
        (r"^decoder\.(\d+)\.ffn\.0\.", r"transformer.decoder.layers.\1.linear1."),
        (r"^decoder\.(\d+)\.ffn\.3\.", r"transformer.decoder.layers.\1.linear2."),
        (r"^decoder\.(\d+)\.", r"transformer.decoder.layers.\1."),
        (r"^decoder_norm\.", "transformer.decoder.norm."),
        (r"^grade_queries\.", "prototype."),
        (r"^regressor\.", "regressor."),
    ),
    convert={r"proj[12]\.weight": "kernel1"},
)


@register_head("gdlt")
class GDLT(Head):
    """GDLT head on clip sequences: x (B, T, D), mask (B, T) -> score (B,) in [0, 1]."""

    input_kind = "clips"
    authors_layout = AUTHORS_LAYOUT

    class Options(ScoreDistOptions):
        """hidden_dim: d of the transformer (divisible by num_heads); ffn_dim: its FFN width
        (None: 3 * hidden_dim); num_grades: G >= 2 grade queries; dropout: in [0, 1);
        alpha: the triplet loss's weight (0: MSE alone); margin: its margin; padding:
        "zeros" (the authors': training pads are zero clips the model sees) or "mask"
        (training ignores them too); score_dist: `ScoreDist` (a string is its kind).

        Departures from the authors' model, all without effect on the numbers: Linear for
        their kernel-1 Conv1d, and dropout masks drawn 4 per random 64-bit word (p rounded
        to a multiple of 2^-16, `FastDropout`). Their checkpoints load through
        `AUTHORS_LAYOUT`."""

        hidden_dim: PositiveInt = 256
        num_heads: PositiveInt = 1
        num_encoder_layers: NonNegativeInt = 1
        num_decoder_layers: PositiveInt = 2
        num_grades: int = Field(4, ge=2)
        ffn_dim: PositiveInt | None = None
        dropout: float = Field(0.7, ge=0, lt=1)
        alpha: float = Field(0.5, ge=0)
        margin: float = Field(1.0, ge=0)
        padding: Literal["zeros", "mask"] = "zeros"

        @model_validator(mode="after")
        def _heads_divide_dim(self) -> GDLT.Options:
            if self.hidden_dim % self.num_heads:
                raise ValueError(
                    f"head.hidden_dim={self.hidden_dim} is not divisible by "
                    f"head.num_heads={self.num_heads}"
                )
            return self

    def __init__(self, in_dim: int, options: Options | None = None, **kw: Any):
        super().__init__(options, **kw)
        o = self.opts
        hidden_dim, num_heads, num_grades = o.hidden_dim, o.num_heads, o.num_grades
        ffn_dim, dropout = o.ffn_dim or 3 * hidden_dim, o.dropout
        self.alpha, self.margin, self.padding = o.alpha, o.margin, o.padding
        self.score_dist = o.score_dist

        self.proj1 = nn.Linear(in_dim, in_dim // 2)
        self.bn1 = MaskedBatchNorm1d(in_dim // 2)
        self.proj2 = nn.Linear(in_dim // 2, hidden_dim)
        self.bn2 = MaskedBatchNorm1d(hidden_dim)
        self.encoder = nn.ModuleList(
            nn.TransformerEncoderLayer(hidden_dim, num_heads, ffn_dim, dropout, batch_first=True)
            for _ in range(o.num_encoder_layers)
        )
        for layer in self.encoder:
            as_attention(layer.self_attn)
        self.encoder_norm = nn.LayerNorm(hidden_dim)
        self.decoder = nn.ModuleList(
            PostNormDecoderLayer(hidden_dim, num_heads, ffn_dim, dropout)
            for _ in range(o.num_decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        # nn.Transformer's initialisation: xavier on every matrix of the encoder and decoder
        for module in (self.encoder, self.decoder):
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        self.grade_queries = nn.Embedding(num_grades, hidden_dim)
        self.regressor = nn.Linear(hidden_dim, num_grades)
        self.register_buffer("grade_values", torch.linspace(0, 1, num_grades))
        if self.score_dist.dae:
            self.logvar_head = nn.Linear(num_grades * hidden_dim, 1)
        use_fast_dropout(self)

    @property
    def has_sigma(self) -> bool:
        return self.score_dist.dae

    def forward(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """x (B, T, D) clip features, mask (B, T) bool True = real clip."""
        x = x.float() if x.dtype in (torch.float16, torch.float64) else x
        b = x.shape[0]
        if mask is not None and self.training and self.padding == "zeros":
            if not bool(mask.all()):  # the authors' zero-padded clips, not masked
                x = x * mask[..., None].to(x.dtype)
            mask = None
        if mask is not None and bool(mask.all()):
            mask = None
        pad = None if mask is None else ~mask
        h = F.relu(self.bn1(self.proj1(x), mask))
        h = self.bn2(self.proj2(h), mask)
        for layer in self.encoder:
            h = layer(h, src_key_padding_mask=pad)
        memory = self.encoder_norm(h)
        q = self.grade_queries.weight[None].expand(b, -1, -1)
        rows = self.decoder[0].cross_attn.rows_for(q, memory, pad)  # shared by the layers
        for layer in self.decoder:
            q, attn = layer(q, memory, pad, rows)
        q = self.decoder_norm(q)  # (B, G, d)
        logits = (q * self.regressor.weight).sum(-1) + self.regressor.bias  # diag of Linear
        p = torch.sigmoid(logits.float())
        p = p / p.sum(dim=1, keepdim=True)  # (B, G)
        score = (p * self.grade_values).sum(dim=1)
        attn = attn.float()  # (B, G, T)
        clip_weights = torch.einsum("bg,bgt->bt", p, attn)
        clip_mass = torch.einsum("bg,bgt->bt", p * self.grade_values, attn)
        clip_scores = torch.where(clip_weights > 0, clip_mass / clip_weights.clamp_min(1e-12), 0.0)
        result = {
            "score": score,
            "clip_scores": clip_scores,
            "clip_weights": clip_weights,
            "grade_probs": p,
            "embed": q,
        }
        if self.score_dist.dae:
            logvar = self.logvar_head(q.reshape(b, -1)).squeeze(-1).float()
            result["logvar"] = logvar
            result["sigma"] = torch.exp(0.5 * logvar)
        return result

    def loss(self, out: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
        """MSE (or the DAE likelihood) + alpha * hardest-triplet loss over the grade queries."""
        return self.loss_terms(out, batch)["total"]

    def loss_terms(self, out: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The terms: "mse" (or "likelihood" with score_dist dae), "triplet" (when alpha > 0)
        and "total" = main + alpha * triplet."""
        target = batch["target"].float()
        if self.score_dist.dae:
            terms = {"likelihood": self.score_dist.loss_value(out["score"], out["logvar"], target)}
        else:
            terms = {"mse": F.mse_loss(out["score"], target)}
        main = next(iter(terms.values()))
        if self.alpha == 0:
            return {**terms, "total": main}
        embed = out["embed"]
        b, g, d = embed.shape
        labels = torch.arange(g, device=embed.device).repeat(b)
        terms["triplet"] = hardest_triplet_loss(embed.reshape(b * g, d), labels, self.margin)
        return {**terms, "total": main + self.alpha * terms["triplet"]}
