"""`dae`: the DAE head (Auto-Encoding Score Distribution Regression, arXiv 2111.11029).

D -> 256 -> ReLU -> 128 -> ReLU, then two parallel Linear(128, 1): mu and log sigma^2.
Training draws y = mu + sigma * eps (the authors' reparameterisation, sigma = exp(logvar/2)).
Losses (`loss`): "stable" (the authors' code), "v1" (the v1 paper's schedule) or
"likelihood" (the later paper); see `aqa_pipeline.train.losses`. The prediction is mu
(`predict: mean`, deterministic) or the sampled y (`predict: sample`, as the authors' code
reports); sigma is reported with every prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from aqa_pipeline.train.heads import register_head
from aqa_pipeline.train.heads.base import Head
from aqa_pipeline.train.heads.common import Dense, check_choice, mlp_trunk
from aqa_pipeline.train.losses import DAE_LOSSES, dae_loss

PREDICTIONS = ("mean", "sample")
# (alpha, beta) when the config leaves them out
DEFAULT_WEIGHTS = {"stable": (1.0, 1.0), "v1": (1.0, 1.0), "likelihood": (0.6, 0.4)}


class DAEOptions:
    """The loss and prediction options shared by dae, dae_mt and dae_core."""

    def __init__(self, head: str, loss: str, alpha: float | None, beta: float | None, predict: str):
        check_choice(head, "loss", loss, DAE_LOSSES)
        check_choice(head, "predict", predict, PREDICTIONS)
        a, b = DEFAULT_WEIGHTS[loss]
        self.loss = loss
        self.alpha = float(a if alpha is None else alpha)
        self.beta = float(b if beta is None else beta)
        self.predict = predict

    def loss_value(
        self, sample: Tensor, mu: Tensor, logvar: Tensor, target: Tensor, epoch: int
    ) -> Tensor:
        return dae_loss(
            self.loss,
            sample=sample,
            mu=mu,
            logvar=logvar,
            target=target,
            epoch=epoch,
            alpha=self.alpha,
            beta=self.beta,
        )


class GaussianOutput(nn.Module):
    """Two parallel Linear(width, n): mu (..., n) and logvar (..., n), plus a sample."""

    def __init__(self, width: int, n: int = 1):
        super().__init__()
        self.mu = Dense(width, n)
        self.logvar = Dense(width, n)

    def forward(self, h: Tensor) -> dict[str, Tensor]:
        mu, logvar = self.mu(h), self.logvar(h)
        sigma = torch.exp(0.5 * logvar)
        return {
            "mu": mu,
            "logvar": logvar,
            "sigma": sigma,
            "sample": mu + sigma * torch.randn_like(mu),
        }


@register_head("dae")
class DAEHead(Head):
    """x (B, D) -> mu, logvar, sigma, sample (B,); score = mu."""

    batch_seeds = True

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (256, 128),
        loss: str = "stable",
        alpha: float | None = None,
        beta: float | None = None,
        predict: str = "mean",
    ):
        super().__init__()
        self.opts = DAEOptions("dae", loss, alpha, beta, predict)
        self.trunk = mlp_trunk(in_dim, hidden)
        self.gauss = GaussianOutput(int(hidden[-1]) if hidden else in_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        out = {k: v.squeeze(-1) for k, v in self.gauss(self.trunk(x)).items()}
        out["score"] = out["mu"]
        return out

    def loss(self, out: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        return self.opts.loss_value(
            out["sample"], out["mu"], out["logvar"], batch["target"], batch.get("epoch", 0)
        )

    def predict(self, out: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor | None]:
        score = out["sample"] if self.opts.predict == "sample" else out["mu"]
        return {"score": score, "sigma": out["sigma"]}
