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

from typing import Any, Literal

import torch
from pydantic import PositiveInt, model_validator
from torch import Tensor, nn

from aqa_pipeline.errors import AqaError
from aqa_pipeline.train.heads.base import Head
from aqa_pipeline.train.heads.common import Combine, Hidden, combine_paths, difficulty, mlp_trunk
from aqa_pipeline.train.heads.dae import DAELossOptions, GaussianOutput
from aqa_pipeline.train.heads.registry import register_head


@register_head("dae_mt")
class DAEMTHead(Head):
    """x (B, D) -> per-path mu, logvar, sigma, sample (B, P); score = combined mu (B,)
    before the difficulty multiplication, which `loss` and `predict` apply."""

    reports_sigma = True

    batch_seeds = True

    class Options(DAELossOptions):
        """hidden: each path's trunk. difficulty: multiply by the difficulty degree.
        paths: "none" (one path on the total), "judges" or "subscores" (one path per column
        of that label field). num_paths: the number of paths; for judges / subscores the
        training loop fills it from the labels, so a config leaves it out (it is ignored
        with paths none). combine: how the paths add up, "sum" or "middle3" (>= 3 paths).
        Plus loss, alpha, beta, predict (`DAELossOptions`)."""

        hidden: Hidden = (256, 128)
        difficulty: bool = True
        paths: Literal["none", "judges", "subscores"] = "none"
        num_paths: PositiveInt | None = None
        combine: Combine = "sum"

        @model_validator(mode="after")
        def _middle3_needs_3_paths(self) -> DAEMTHead.Options:
            n = 1 if self.paths == "none" else self.num_paths
            if self.combine == "middle3" and n is not None and n < 3:
                raise ValueError(
                    f"head.combine=middle3 needs at least 3 paths, got {n} (head.paths={self.paths})"
                )
            return self

    def __init__(self, in_dim: int, options: Options | None = None, **kw: Any):
        super().__init__(options, **kw)
        o = self.opts
        if o.paths == "none":
            num_paths = 1
        elif o.num_paths is None:
            raise AqaError(
                f"dae_mt: paths={o.paths} needs num_paths (the loop fills it from the labels)"
            )
        else:
            num_paths = o.num_paths
        self.use_difficulty = o.difficulty
        self.paths, self.combine, self.num_paths = o.paths, o.combine, num_paths
        self.requires = (("difficulty",) if self.use_difficulty else ()) + (
            (o.paths,) if o.paths != "none" else ()
        )
        width = o.hidden[-1] if o.hidden else in_dim
        self.path_nets = nn.ModuleList(
            nn.Sequential(mlp_trunk(in_dim, o.hidden), GaussianOutput(width))
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
