"""Ridge regression as a head: x (B, D) per-video mean features -> score (B,).

It is fitted in closed form, not by gradient steps (`closed_form = True`: the fold trains it
with `fit` once instead of running epochs): lambda by k-fold cross-validation on the run's
training rows (best mean held-out Spearman over a log grid), then one SVD. Saved, loaded and
re-scored like any other head (its weights are a Linear layer). The same model is the
baseline every run reports beside its head (aqa_pipeline.train.baseline).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from aqa_pipeline.train.baseline import ridge_cv, ridge_fit
from aqa_pipeline.train.heads.base import Head, HeadOptions
from aqa_pipeline.train.heads.registry import register_head


@register_head("ridge")
class RidgeHead(Head):
    """x (B, D) -> score (B,): ridge regression, fitted in closed form (lambda by CV on train)."""

    batch_seeds = True
    closed_form: ClassVar[bool] = True

    class Options(HeadOptions):
        """cv_folds: the folds of the cross-validation that picks lambda on the training rows."""

        cv_folds: int = Field(5, ge=2)

    def __init__(self, in_dim: int, options: Options | None = None, **kw: Any):
        super().__init__(options, **kw)
        self.linear = nn.Linear(in_dim, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def fit(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """Set the weights from training rows x (n, D) and targets y (n,); returns the
        lambda chosen and its CV Spearman."""
        xs, ys = x.detach().double().cpu().numpy(), y.detach().double().cpu().numpy()
        lam, curve = ridge_cv(xs, ys, self.opts.cv_folds)
        w, mx, my = ridge_fit(xs, ys, np.array([lam]))
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(w[0][None]))
            self.linear.bias.fill_(float(my - mx @ w[0]))
        best = float(np.nanmax(curve)) if np.isfinite(curve).any() else float("nan")
        return {"lambda": lam, "cv_spearman": best}

    def forward(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        return {"score": self.linear(x).squeeze(-1)}

    def loss(self, out: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        return F.mse_loss(out["score"], batch["target"])
