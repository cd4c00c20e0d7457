"""`usdl` and `musdl`: uncertainty-aware score distribution learning (Tang et al., CVPR 2020).

USDL: D -> 256 -> 128 -> K bins, softmax. The target becomes a Gaussian over the bins
(std in bins, the authors' `--std`: 5 on MTL-AQA, 1 on JIGSAWS); the loss is
KL(soft label || predicted), mean over batch and bins like the authors' nn.KLDivLoss().
The score is read out at the most probable bin (`readout: argmax`, the authors' code) or
as the expectation (`readout: mean`); sigma is the standard deviation of the distribution.

MUSDL: one such path per judge (`paths: judges`, MTL-AQA's 7 judges over 0..10 in 21 bins)
or per sub-score (`paths: subscores`, JIGSAWS' 6 GRS items over 1..5 in 5 bins), KL summed
over paths; the total is `combine` of the path scores ("middle3": the diving rule, "sum")
times DD when `difficulty` is on.

`score_range: [lo, hi]` is in the units of the training targets (score / label.scale;
the configs use label.scale 1 for these heads). With `difficulty` on, USDL's bins cover the
execution score final / DD.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, get_args

import torch
from pydantic import AfterValidator, Field, PositiveInt, model_validator
from torch import Tensor, nn

from aqa_pipeline.errors import AqaError
from aqa_pipeline.train.heads.base import Head, HeadOptions
from aqa_pipeline.train.heads.common import (
    Combine,
    Dense,
    Hidden,
    PathField,
    combine_paths,
    difficulty,
    mlp_trunk,
)
from aqa_pipeline.train.heads.registry import register_head
from aqa_pipeline.train.losses import gaussian_soft_labels, soft_label_kl

Readout = Literal["argmax", "mean"]
READOUTS: tuple[str, ...] = get_args(Readout)


def _lo_below_hi(value: tuple[float, float]) -> tuple[float, float]:
    if not value[1] > value[0]:
        raise ValueError(f"head.score_range needs lo < hi, got [{value[0]}, {value[1]}]")
    return value


# [lo, hi] of the score bins, in training-target units
ScoreRange = Annotated[tuple[float, float], AfterValidator(_lo_below_hi)]
NumBins = Annotated[int, Field(ge=2)]
BinStd = Annotated[float, Field(gt=0)]  # the soft labels' std, in bins


class ScoreBins:
    """K evenly spaced bin values over [lo, hi] and the soft labels around a target
    (the head's Options check lo < hi, num_bins >= 2, std > 0)."""

    def __init__(self, score_range: Sequence[float], num_bins: int, std: float):
        lo, hi = (float(v) for v in score_range)
        self.lo, self.hi, self.num_bins, self.std = lo, hi, int(num_bins), float(std)

    def values(self, like: Tensor) -> Tensor:
        return torch.linspace(self.lo, self.hi, self.num_bins, dtype=like.dtype, device=like.device)

    def soft_labels(self, target: Tensor) -> Tensor:
        """target (...,) in score units -> (..., K); std is in bins."""
        pos = (target - self.lo) / (self.hi - self.lo) * (self.num_bins - 1)
        idx = torch.arange(self.num_bins, dtype=target.dtype, device=target.device)
        return gaussian_soft_labels(pos, idx, self.std)

    def readout(self, log_probs: Tensor, how: str) -> tuple[Tensor, Tensor]:
        """Score and variance of the distributions log_probs (..., K) -> (...,), (...,)."""
        values = self.values(log_probs)
        p = log_probs.exp()
        mean = (p * values).sum(-1)
        var = (p * (values - mean[..., None]).square()).sum(-1)
        if how == "argmax":
            return values[log_probs.argmax(dim=-1)], var
        return mean, var


@register_head("usdl")
class USDLHead(Head):
    """x (B, D) -> log_probs (B, K); score (B,) before the difficulty multiplication."""

    reports_sigma = True

    batch_seeds = True

    class Options(HeadOptions):
        """score_range: [lo, hi] of the bins (target units); num_bins: K >= 2; std: the soft
        labels' std in bins; readout: "argmax" or "mean"; difficulty: bins cover final / DD."""

        hidden: Hidden = (256, 128)
        score_range: ScoreRange = (0.0, 104.5)
        num_bins: NumBins = 101
        std: BinStd = 5.0
        readout: Readout = "argmax"
        difficulty: bool = False

    def __init__(self, in_dim: int, options: Options | None = None, **kw: Any):
        super().__init__(options, **kw)
        o = self.opts
        self.bins = ScoreBins(o.score_range, o.num_bins, o.std)
        self.readout, self.use_difficulty = o.readout, o.difficulty
        self.requires = ("difficulty",) if self.use_difficulty else ()
        self.trunk = mlp_trunk(in_dim, o.hidden)
        self.logits = Dense(o.hidden[-1] if o.hidden else in_dim, self.bins.num_bins)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        log_probs = torch.log_softmax(self.logits(self.trunk(x)), dim=-1)
        score, var = self.bins.readout(log_probs, self.readout)
        return {"log_probs": log_probs, "score": score, "sigma": var.sqrt()}

    def loss(self, out: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        target = batch["target"] / difficulty(batch, self.use_difficulty, batch["target"])
        return soft_label_kl(out["log_probs"], self.bins.soft_labels(target))

    def predict(self, out: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor | None]:
        dd = difficulty(batch, self.use_difficulty, out["score"])
        return {"score": out["score"] * dd, "sigma": out["sigma"] * dd}


@register_head("musdl")
class MUSDLHead(Head):
    """x (B, D) -> log_probs (B, P, K), one distribution per judge / sub-score."""

    reports_sigma = True

    batch_seeds = True

    class Options(HeadOptions):
        """paths: the label field with one column per path, "judges" or "subscores";
        num_paths: their number (the training loop fills it from the labels, so a config
        leaves it out); combine: "middle3" (>= 3 paths) or "sum". The bin options as usdl's,
        per path."""

        hidden: Hidden = (256, 128)
        paths: PathField = "judges"
        num_paths: PositiveInt | None = None
        combine: Combine = "middle3"
        score_range: ScoreRange = (0.0, 10.0)
        num_bins: NumBins = 21
        std: BinStd = 5.0
        readout: Readout = "argmax"
        difficulty: bool = True

        @model_validator(mode="after")
        def _middle3_needs_3_paths(self) -> MUSDLHead.Options:
            if self.combine == "middle3" and self.num_paths is not None and self.num_paths < 3:
                raise ValueError(
                    f"head.combine=middle3 needs at least 3 paths, got num_paths={self.num_paths}"
                )
            return self

    def __init__(self, in_dim: int, options: Options | None = None, **kw: Any):
        super().__init__(options, **kw)
        o = self.opts
        if o.num_paths is None:
            raise AqaError("musdl: needs num_paths (the loop fills it from the labels)")
        self.bins = ScoreBins(o.score_range, o.num_bins, o.std)
        self.paths, self.combine, self.readout = o.paths, o.combine, o.readout
        self.use_difficulty = o.difficulty
        self.requires = (o.paths,) + (("difficulty",) if self.use_difficulty else ())
        width = o.hidden[-1] if o.hidden else in_dim
        self.path_nets = nn.ModuleList(
            nn.Sequential(mlp_trunk(in_dim, o.hidden), Dense(width, self.bins.num_bins))
            for _ in range(o.num_paths)
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        logits = torch.stack([net(x) for net in self.path_nets], dim=-2)  # (B, P, K)
        log_probs = torch.log_softmax(logits, dim=-1)
        path_scores, path_var = self.bins.readout(log_probs, self.readout)
        total, var = combine_paths(path_scores, path_var, self.combine)
        return {
            "log_probs": log_probs,
            "path_scores": path_scores,
            "score": total,
            "sigma": var.sqrt(),
        }

    def loss(self, out: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        soft = self.bins.soft_labels(batch[self.paths])  # (B, P, K)
        per_path = [soft_label_kl(out["log_probs"][:, j], soft[:, j]) for j in range(soft.shape[1])]
        return torch.stack(per_path).sum()

    def predict(self, out: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor | None]:
        dd = difficulty(batch, self.use_difficulty, out["score"])
        return {"score": out["score"] * dd, "sigma": out["sigma"] * dd}
