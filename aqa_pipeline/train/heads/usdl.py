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
from typing import Any

import torch
from torch import Tensor, nn

from aqa_pipeline.errors import AqaError
from aqa_pipeline.train.heads import register_head
from aqa_pipeline.train.heads.base import Head
from aqa_pipeline.train.heads.common import (
    COMBINE_RULES,
    PATH_FIELDS,
    Dense,
    check_choice,
    combine_paths,
    difficulty,
    mlp_trunk,
)
from aqa_pipeline.train.losses import gaussian_soft_labels, soft_label_kl

READOUTS = ("argmax", "mean")


class ScoreBins:
    """K evenly spaced bin values over [lo, hi] and the soft labels around a target."""

    def __init__(self, head: str, score_range: Sequence[float], num_bins: int, std: float):
        lo, hi = (float(v) for v in score_range)
        if not hi > lo or num_bins < 2 or std <= 0:
            raise AqaError(f"{head}: need score_range lo < hi, num_bins >= 2, std > 0")
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

    batch_seeds = True

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (256, 128),
        score_range: Sequence[float] = (0.0, 104.5),
        num_bins: int = 101,
        std: float = 5.0,
        readout: str = "argmax",
        difficulty: bool = False,
    ):
        super().__init__()
        check_choice("usdl", "readout", readout, READOUTS)
        self.bins = ScoreBins("usdl", score_range, num_bins, std)
        self.readout, self.use_difficulty = readout, bool(difficulty)
        self.requires = ("difficulty",) if self.use_difficulty else ()
        self.trunk = mlp_trunk(in_dim, hidden)
        self.logits = Dense(int(hidden[-1]) if hidden else in_dim, self.bins.num_bins)

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

    batch_seeds = True

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (256, 128),
        paths: str = "judges",
        num_paths: int | None = None,
        combine: str = "middle3",
        score_range: Sequence[float] = (0.0, 10.0),
        num_bins: int = 21,
        std: float = 5.0,
        readout: str = "argmax",
        difficulty: bool = True,
    ):
        super().__init__()
        check_choice("musdl", "paths", paths, PATH_FIELDS)
        check_choice("musdl", "combine", combine, COMBINE_RULES)
        check_choice("musdl", "readout", readout, READOUTS)
        if not num_paths or num_paths < 1:
            raise AqaError("musdl: needs num_paths (the loop fills it from the labels)")
        if combine == "middle3" and num_paths < 3:
            raise AqaError(f"musdl: combine=middle3 needs at least 3 paths, got {num_paths}")
        self.bins = ScoreBins("musdl", score_range, num_bins, std)
        self.paths, self.combine, self.readout = paths, combine, readout
        self.use_difficulty = bool(difficulty)
        self.requires = (paths,) + (("difficulty",) if self.use_difficulty else ())
        width = int(hidden[-1]) if hidden else in_dim
        self.path_nets = nn.ModuleList(
            nn.Sequential(mlp_trunk(in_dim, hidden), Dense(width, self.bins.num_bins))
            for _ in range(int(num_paths))
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
