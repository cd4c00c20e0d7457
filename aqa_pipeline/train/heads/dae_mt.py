"""`dae_mt`: DAE-MT, the DAE head with the scoring rules of the sport.

(a) Difficulty multiplication (`difficulty: true`, MTL-AQA): the head predicts the
    execution score final / DD; its outputs are multiplied by the ground-truth difficulty
    degree before the loss and at test time, as in the authors' DAE-MT code (so the loss is
    in final-score units). sigma is multiplied by DD too.
(b) Multi-path (`paths: judges | subscores`): one DAE path per sub-score, each trained on
    its own sub-score (the 7 judges on MTL-AQA, the 6 GRS items on JIGSAWS). The total is
    `combine` of the paths ("middle3": the diving rule; "sum": JIGSAWS), times DD where
    `difficulty` is on. Paths are independent Gaussians, so the reported variance of the
    total is the sum of the selected paths' variances (times DD^2).
`paths: none` is (a) alone: a single path trained on the total score.
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
    check_choice,
    combine_paths,
    difficulty,
    mlp_trunk,
)
from aqa_pipeline.train.heads.dae import DAEOptions, GaussianOutput


@register_head("dae_mt")
class DAEMTHead(Head):
    """x (B, D) -> per-path mu, logvar, sigma, sample (B, P); score = combined mu (B,)
    before the difficulty multiplication, which `loss` and `predict` apply."""

    batch_seeds = True

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (256, 128),
        difficulty: bool = True,
        paths: str = "none",
        num_paths: int | None = None,
        combine: str = "sum",
        loss: str = "stable",
        alpha: float | None = None,
        beta: float | None = None,
        predict: str = "mean",
    ):
        super().__init__()
        self.opts = DAEOptions("dae_mt", loss, alpha, beta, predict)
        check_choice("dae_mt", "paths", paths, ("none", *PATH_FIELDS))
        check_choice("dae_mt", "combine", combine, COMBINE_RULES)
        if paths == "none":
            num_paths = 1
        elif not num_paths or num_paths < 1:
            raise AqaError(
                f"dae_mt: paths={paths} needs num_paths (the loop fills it from the labels)"
            )
        if combine == "middle3" and num_paths < 3:
            raise AqaError(f"dae_mt: combine=middle3 needs at least 3 paths, got {num_paths}")
        self.use_difficulty = bool(difficulty)
        self.paths, self.combine, self.num_paths = paths, combine, int(num_paths)
        self.requires = (("difficulty",) if self.use_difficulty else ()) + (
            (paths,) if paths != "none" else ()
        )
        width = int(hidden[-1]) if hidden else in_dim
        self.path_nets = nn.ModuleList(
            nn.Sequential(mlp_trunk(in_dim, hidden), GaussianOutput(width))
            for _ in range(self.num_paths)
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        outs = [net(x) for net in self.path_nets]
        out = {k: torch.cat([o[k] for o in outs], dim=-1) for k in outs[0]}  # (B, P) each
        out["score"] = combine_paths(out["mu"], out["sigma"].square(), self.combine)[0]
        return out

    def loss(self, out: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        epoch = batch.get("epoch", 0)
        if self.paths == "none":
            dd = difficulty(batch, self.use_difficulty, batch["target"])
            mu, sample = out["mu"][:, 0] * dd, out["sample"][:, 0] * dd
            logvar = out["logvar"][:, 0] + 2.0 * torch.log(dd)
            return self.opts.loss_value(sample, mu, logvar, batch["target"], epoch)
        return self.opts.loss_value(
            out["sample"], out["mu"], out["logvar"], batch[self.paths], epoch
        )

    def predict(self, out: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor | None]:
        var = out["sigma"].square()
        mean, total_var = combine_paths(out["mu"], var, self.combine)
        if self.opts.predict == "sample":
            mean = combine_paths(out["sample"], var, self.combine)[0]
        dd = difficulty(batch, self.use_difficulty, mean)
        return {"score": mean * dd, "sigma": total_var.sqrt() * dd}
