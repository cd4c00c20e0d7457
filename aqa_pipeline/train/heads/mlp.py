"""`mlp`: the papers' plain regression baseline, D -> 256 -> 128 -> 1, MSE loss."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from aqa_pipeline.train.heads.base import Head, HeadOptions
from aqa_pipeline.train.heads.common import Dense, Hidden, mlp_trunk
from aqa_pipeline.train.heads.registry import register_head


@register_head("mlp")
class MLPHead(Head):
    """x (B, D) -> score (B,), trained with the batch-mean squared error."""

    batch_seeds = True

    class Options(HeadOptions):
        hidden: Hidden = (256, 128)

    def __init__(self, in_dim: int, options: Options | None = None, **kw: Any):
        super().__init__(options, **kw)
        o = self.opts
        self.trunk = mlp_trunk(in_dim, o.hidden)
        self.out = Dense(o.hidden[-1] if o.hidden else in_dim, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        return {"score": self.out(self.trunk(x)).squeeze(-1)}

    def loss(self, out: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        return F.mse_loss(out["score"], batch["target"])
