"""`core` and `dae_core`: contrastive regression against exemplars (CoRe-style, ICCV 2021).

The head sees pairs (query, exemplar of the same action class, e.g. the same dive number on
MTL-AQA) and predicts the score difference: query score = exemplar score + delta. The
prediction averages over M exemplars from the training set (M = 1 per step in training,
`data.exemplars` at test), as the seed paper does. CoRe's group-aware regression tree is
replaced by direct regression of delta (`core`) or by a DAE Gaussian on delta (`dae_core`,
the DAE paper's DAE-CoRe).

x (B, M, 2D + 2) = [query (D), exemplar (D), exemplar target, exemplar difficulty]. The
pair MLP reads [query, exemplar, exemplar base score], where the base score is the
exemplar's target, divided by its difficulty when `difficulty` is on; the query's
prediction is then (base + delta) x DD of the query.

dae_core's sigma: the M per-exemplar Gaussians form a mixture; its variance is the mean of
their variances plus the variance of their means.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from aqa_pipeline.train.heads.base import Head, HeadOptions
from aqa_pipeline.train.heads.common import Dense, Hidden, difficulty, mlp_trunk
from aqa_pipeline.train.heads.dae import DAELossOptions, GaussianOutput
from aqa_pipeline.train.heads.registry import register_head


def split_pairs(x: Tensor, use_difficulty: bool) -> tuple[Tensor, Tensor]:
    """x (B, M, 2D + 2) -> MLP input (B, M, 2D + 1) and exemplar base scores (B, M)."""
    d2 = x.shape[-1] - 2
    base = x[..., d2]
    if use_difficulty:
        base = base / x[..., d2 + 1]
    return torch.cat([x[..., :d2], base[..., None]], dim=-1), base


class PairOptions(HeadOptions):
    """hidden: the pair MLP's widths; difficulty: exemplar bases divided by their difficulty
    degree, predictions multiplied by the query's."""

    hidden: Hidden = (256, 128)
    difficulty: bool = False


class PairHead(Head):
    input_kind = "pairs"
    batch_seeds = True

    def __init__(self, in_dim: int, options: PairOptions | None = None, **kw: Any):
        super().__init__(options, **kw)
        o = self.opts
        self.use_difficulty = o.difficulty
        self.requires = ("difficulty",) if self.use_difficulty else ()
        self.trunk = mlp_trunk(2 * in_dim + 1, o.hidden)
        self.width = o.hidden[-1] if o.hidden else 2 * in_dim + 1


@register_head("core")
class CoReHead(PairHead):
    """Pairs -> per-exemplar predictions (B, M); score = their mean (B,), before x DD."""

    class Options(PairOptions):
        """PairOptions: hidden, difficulty."""

    def __init__(self, in_dim: int, options: Options | None = None, **kw: Any):
        super().__init__(in_dim, options, **kw)
        self.delta = Dense(self.width, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        inp, base = split_pairs(x, self.use_difficulty)
        per = base + self.delta(self.trunk(inp)).squeeze(-1)
        return {"per_exemplar": per, "score": per.mean(dim=-1)}

    def loss(self, out: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        dd = difficulty(batch, self.use_difficulty, batch["target"])
        pred = out["per_exemplar"] * dd[:, None]
        return F.mse_loss(pred, batch["target"][:, None].expand_as(pred))

    def predict(self, out: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor | None]:
        dd = difficulty(batch, self.use_difficulty, out["score"])
        return {"score": out["score"] * dd, "sigma": None}


@register_head("dae_core")
class DAECoReHead(PairHead):
    """Pairs -> a Gaussian on delta per exemplar; score = mixture mean (B,), before x DD."""

    reports_sigma = True

    class Options(PairOptions, DAELossOptions):
        """PairOptions (hidden, difficulty) and DAELossOptions (loss, alpha, beta, predict)."""

    def __init__(self, in_dim: int, options: Options | None = None, **kw: Any):
        super().__init__(in_dim, options, **kw)
        self.gauss = GaussianOutput(self.width)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        inp, base = split_pairs(x, self.use_difficulty)
        g = {k: v.squeeze(-1) for k, v in self.gauss(self.trunk(inp)).items()}  # (B, M)
        mu, sample = base + g["mu"], base + g["sample"]
        var = g["sigma"].square().mean(-1) + mu.var(dim=-1, unbiased=False)
        return {
            "mu": mu,
            "sample": sample,
            "logvar": g["logvar"],
            "score": mu.mean(-1),
            "sigma": var.sqrt(),
        }

    def loss(self, out: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        dd = difficulty(batch, self.use_difficulty, batch["target"])[:, None]
        target = batch["target"][:, None].expand_as(out["mu"])
        logvar = out["logvar"] + 2.0 * torch.log(dd)
        return self.opts.loss_value(
            out["sample"] * dd, out["mu"] * dd, logvar, target, batch.get("epoch", 0)
        )

    def predict(self, out: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor | None]:
        score = out["sample"].mean(-1) if self.opts.predict == "sample" else out["score"]
        dd = difficulty(batch, self.use_difficulty, score)
        return {"score": score * dd, "sigma": out["sigma"] * dd}
