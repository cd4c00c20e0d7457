"""Building blocks shared by the heads: the MLP trunk, path combination, difficulty, and the
option types several heads' `Options` use (`Hidden`, `Combine`, `PathField`, `ScoreDist`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, get_args

import torch
from pydantic import ConfigDict, Field, PositiveInt, field_validator, model_validator
from torch import Tensor, nn

from aqa_pipeline.config import Section
from aqa_pipeline.errors import AqaError
from aqa_pipeline.train.heads.base import HeadOptions
from aqa_pipeline.train.losses import LongformDAELoss, longform_dae_loss

Combine = Literal["sum", "middle3"]  # how multi-path heads total their paths
PathField = Literal["judges", "subscores"]  # the label field a multi-path head trains on
COMBINE_RULES: tuple[str, ...] = get_args(Combine)
PATH_FIELDS: tuple[str, ...] = get_args(PathField)
# the widths of an MLP trunk (`hidden: [256, 128]`); empty = no hidden layer
Hidden = Annotated[tuple[PositiveInt, ...], Field(description="MLP trunk widths")]


class ScoreDist(Section):
    """The score distribution of the long-form heads (gdlt, interaqa): `head.score_dist`.

    kind: "none" (the papers' MSE) or "dae" (a sigma per video from an extra logvar output,
        trained with the DAE likelihood instead of the MSE).
    loss: the DAE likelihood's form: "weighted" (variance-weighted, `weighted_likelihood_loss`)
        or "likelihood" (plain, `dae_likelihood_loss`).
    alpha, beta: the likelihood's weights, alpha * (g - mu)^2 / sigma^2 + beta * log sigma^2.

    In a config, a plain string is the kind: `score_dist: dae` = `score_dist: {kind: dae}`.
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["none", "dae"] = "none"
    loss: LongformDAELoss = "weighted"
    alpha: float = Field(0.6, gt=0)
    beta: float = Field(0.4, ge=0)

    @property
    def dae(self) -> bool:
        return self.kind == "dae"

    @staticmethod
    def shorthand(value: Any) -> Any:
        """`score_dist: dae` -> {"kind": "dae"}; anything else unchanged (for the heads'
        `field_validator("score_dist", mode="before")`)."""
        return {"kind": value} if isinstance(value, str) else value

    def loss_value(self, mu: Tensor, logvar: Tensor, target: Tensor) -> Tensor:
        """The DAE loss of predictions mu (B,), logvar (B,) against target (B,)."""
        return longform_dae_loss(self.loss, mu, logvar, target, self.alpha, self.beta)


# the flat options the long-form heads had before `score_dist` became a section
RENAMED_SCORE_DIST_KEYS = {"dae_loss": "loss", "dae_alpha": "alpha", "dae_beta": "beta"}


def refuse_renamed_score_dist_keys(data: Any) -> Any:
    """A before-validator of the long-form heads' Options: the old flat keys dae_loss,
    dae_alpha, dae_beta get an error naming their new place, head.score_dist.<key>."""
    if isinstance(data, Mapping):
        for old, new in RENAMED_SCORE_DIST_KEYS.items():
            if old in data:
                raise ValueError(
                    f"unknown key head.{old}; it is now head.score_dist.{new} (e.g. --set "
                    f"head.score_dist.kind=dae --set head.score_dist.{new}={data[old]})"
                )
    return data


class ScoreDistOptions(HeadOptions):
    """The options every long-form head (gdlt, interaqa) shares: `score_dist`, one
    `ScoreDist`, given as a mapping or as its kind (`score_dist: dae`)."""

    score_dist: ScoreDist = ScoreDist()

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return refuse_renamed_score_dist_keys(data)

    @field_validator("score_dist", mode="before")
    @classmethod
    def _score_dist_kind(cls, value: Any) -> Any:
        return ScoreDist.shorthand(value)


class Dense(nn.Module):
    """y = x @ weight + bias with weight stored (in, out): nn.Linear's map and default
    initialisation (uniform in +-1/sqrt(in)), but with the weight's gradient in its natural
    layout when seeds are vmapped (nn.Linear's transposed weight costs a strided copy of
    every stacked gradient, which made the vmapped backward 2x slower)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:  # one fused kernel for (B, in), the common case
            return torch.addmm(self.bias, x, self.weight)
        return x @ self.weight + self.bias


class FastDropout(nn.Dropout):
    """nn.Dropout with a cheaper random mask on the CPU, where drawing one random number per
    element made dropout 14% of a GDLT epoch: each 64-bit draw of torch's generator gives
    four 16-bit numbers, so p is rounded to a multiple of 1/65536. On other devices, and in
    eval mode, it is nn.Dropout."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        if self.p == 1:
            return x * 0.0
        n = x.numel()
        draws = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
        bits = draws.view(torch.int16)[:n].view(x.shape)
        keep = bits >= round(self.p * 65536) - 32768
        # the scaled mask once, then one product forward and one backward (half the time
        # of x * keep * scale, which multiplied twice each way)
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


def use_fast_dropout(module: nn.Module) -> nn.Module:
    """Replace every nn.Dropout inside `module` with FastDropout (same p); returns it."""
    for name, child in module.named_children():
        if type(child) is nn.Dropout:
            setattr(module, name, FastDropout(child.p))
        else:
            use_fast_dropout(child)
    return module


def mlp_trunk(in_dim: int, hidden: Sequence[int]) -> nn.Sequential:
    """Dense + ReLU for each width in `hidden` (the papers' 1024 -> 256 -> 128)."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [Dense(width, int(h)), nn.ReLU()]
        width = int(h)
    return nn.Sequential(*layers)


def combine_paths(mean: Tensor, var: Tensor, rule: str) -> tuple[Tensor, Tensor]:
    """Total of per-path scores and its variance: mean, var (B, P) -> (B,), (B,).

    "sum": all paths (JIGSAWS' 6 GRS items). "middle3": the diving rule, the middle three
    of the paths sorted by their mean (judges 3-5 of 7). Paths are treated as independent,
    so the variance of the total is the sum of the selected paths' variances.
    """
    if rule == "sum":
        return mean.sum(dim=-1), var.sum(dim=-1)
    if rule == "middle3":
        order = mean.argsort(dim=-1)
        lo = (mean.shape[-1] - 3) // 2
        keep = order[..., lo : lo + 3]
        return mean.gather(-1, keep).sum(dim=-1), var.gather(-1, keep).sum(dim=-1)
    raise AqaError(f"unknown path combination {rule!r}; expected one of {COMBINE_RULES}")


def difficulty(batch: dict[str, Any], use: bool, like: Tensor) -> Tensor:
    """The difficulty degree (B,) when `use`, else ones shaped like `like` (B,)."""
    if not use:
        return torch.ones_like(like)
    return batch["difficulty"].to(like.dtype)
