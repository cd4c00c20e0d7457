"""`dae`: the DAE head (Auto-Encoding Score Distribution Regression, arXiv 2111.11029).

D -> 256 -> ReLU -> 128 -> ReLU, then two parallel Linear(128, 1): mu and log sigma^2.
Training draws y = mu + sigma * eps (the authors' reparameterisation, sigma = exp(logvar/2)).
Losses (`loss`): "stable" (the authors' code), "v1" (the v1 paper's schedule) or
"likelihood" (the later paper); see `aqa_pipeline.train.losses`. The prediction is mu
(`predict: mean`, deterministic) or the sampled y (`predict: sample`, as the authors' code
reports); sigma is reported with every prediction.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from pydantic import Field
from torch import Tensor, nn

from aqa_pipeline.train.heads.authors import AuthorsLayout
from aqa_pipeline.train.heads.base import Head, HeadOptions
from aqa_pipeline.train.heads.common import Dense, Hidden, mlp_trunk
from aqa_pipeline.train.heads.registry import register_head
from aqa_pipeline.train.losses import DAELoss, dae_loss, dae_stable_terms

Prediction = Literal["mean", "sample"]
PREDICTIONS: tuple[str, ...] = get_args(Prediction)
# (alpha, beta) when the config leaves them out
DEFAULT_WEIGHTS = {"stable": (1.0, 1.0), "v1": (1.0, 1.0), "likelihood": (0.6, 0.4)}


class DAELossOptions(HeadOptions):
    """The loss and prediction options shared by dae, dae_mt and dae_core.

    loss: "stable" (the authors' code), "v1" (the v1 paper's schedule) or "likelihood".
    alpha, beta: the loss's weights; left out (None), the loss's defaults (DEFAULT_WEIGHTS:
        1, 1 for stable and v1; 0.6, 0.4 for likelihood). `weights` gives the values used.
    predict: the reported score, "mean" (mu) or "sample" (y = mu + sigma * eps).
    """

    loss: DAELoss = "stable"
    alpha: float | None = Field(None, ge=0)
    beta: float | None = Field(None, ge=0)
    predict: Prediction = "mean"

    @property
    def weights(self) -> tuple[float, float]:
        """(alpha, beta) with the loss's defaults filled in."""
        a, b = DEFAULT_WEIGHTS[self.loss]
        return (
            float(a if self.alpha is None else self.alpha),
            float(b if self.beta is None else self.beta),
        )

    def loss_value(
        self, sample: Tensor, mu: Tensor, logvar: Tensor, target: Tensor, epoch: int
    ) -> Tensor:
        alpha, beta = self.weights
        return dae_loss(
            self.loss,
            sample=sample,
            mu=mu,
            logvar=logvar,
            target=target,
            epoch=epoch,
            alpha=alpha,
            beta=beta,
        )


class GaussianOutput(nn.Module):
    """Two parallel Linear(width, n): mu (..., n) and logvar (..., n), plus a sample
    y = mu + sigma * eps with eps (..., n) given, or drawn N(0, 1) when None."""

    def __init__(self, width: int, n: int = 1):
        super().__init__()
        self.mu = Dense(width, n)
        self.logvar = Dense(width, n)

    def forward(self, h: Tensor, eps: Tensor | None = None) -> dict[str, Tensor]:
        mu, logvar = self.mu(h), self.logvar(h)
        sigma = torch.exp(0.5 * logvar)
        return {
            "mu": mu,
            "logvar": logvar,
            "sigma": sigma,
            "sample": mu + sigma * (torch.randn_like(mu) if eps is None else eps),
        }


# The authors' models.py DAE: fc1 Linear(1024, 256), fch Linear(256, 128), fc2_mean and
# fc2_logvar Linear(128, 1); their DAE.py saves {'epoch', 'i3d', 'dae', 'optimizer', 'rho_best'}.
AUTHORS_LAYOUT = AuthorsLayout(
    name="dae_infox",
    source="github.com/InfoX-SEU/DAE_AQA models.py DAE (hidden 256, 128)",
    rules=(
        (r"^trunk\.0\.", "fc1."),
        (r"^trunk\.2\.", "fch."),
        (r"^gauss\.mu\.", "fc2_mean."),
        (r"^gauss\.logvar\.", "fc2_logvar."),
    ),
    convert={r".*\.weight": "transposed"},
    parts={"": ("dae",)},
)


@register_head("dae")
class DAEHead(Head):
    """x (B, D) -> mu, logvar, sigma, sample (B,); score = mu.

    The sample's N(0, 1) draw is `normal("eps", ...)`, shaped (B, 1) like the authors'
    `torch.randn(*mu.size())`. Their checkpoints load through `AUTHORS_LAYOUT` (hidden
    (256, 128) only, their architecture)."""

    reports_sigma = True

    batch_seeds = True
    authors_layout = AUTHORS_LAYOUT

    class Options(DAELossOptions):
        hidden: Hidden = (256, 128)

    def __init__(self, in_dim: int, options: Options | None = None, **kw: Any):
        super().__init__(options, **kw)
        o = self.opts
        self.trunk = mlp_trunk(in_dim, o.hidden)
        self.gauss = GaussianOutput(o.hidden[-1] if o.hidden else in_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        h = self.trunk(x)
        eps = self.normal("eps", (*h.shape[:-1], 1), 1.0, h)
        out = {k: v.squeeze(-1) for k, v in self.gauss(h, eps).items()}
        out["score"] = out["mu"]
        return out

    def loss(self, out: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        return self.opts.loss_value(
            out["sample"], out["mu"], out["logvar"], batch["target"], batch.get("epoch", 0)
        )

    def loss_terms(self, out: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        """The terms: with loss "stable", "reconstruction" sum (y - g)^2 and "support"
        sum (mu - g)^2; the other losses: "total" only."""
        terms = {"total": self.loss(out, batch)}
        if self.opts.loss == "stable":
            terms.update(dae_stable_terms(out["sample"], out["mu"], batch["target"]))
        return terms

    def predict(self, out: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor | None]:
        score = out["sample"] if self.opts.predict == "sample" else out["mu"]
        return {"score": score, "sigma": out["sigma"]}
