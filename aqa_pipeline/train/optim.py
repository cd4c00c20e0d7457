"""Optimiser and learning-rate schedule from the config's optim / schedule sections."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from aqa_pipeline.train.config import OptimSection, ScheduleSection


def build_optimizer(params: Iterable[Tensor], optim: OptimSection) -> torch.optim.Optimizer:
    """adam | adamw | sgd with lr, weight_decay (and momentum for sgd).

    Every update is elementwise, so parameters stacked over seeds (S, ...) get exactly the
    per-seed update."""
    params = list(params)
    lr, wd, name = optim.lr, optim.weight_decay, optim.name
    # fused kernels: one pass over all tensors per step (CPU and CUDA, float32); the same
    # elementwise update as the per-tensor loop the authors' code runs
    fused = all(p.dtype == torch.float32 for p in params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=optim.momentum, weight_decay=wd, fused=fused)
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=wd, fused=fused)


def build_scheduler(
    opt: torch.optim.Optimizer, schedule: ScheduleSection, epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """none | step (StepLR) | cosine (to lr * eta_min_ratio); counted in epochs or
    iterations (schedule.per). Call `.step()` once per unit."""
    name = schedule.name
    if name == "none":
        return None
    per_iter = schedule.per == "iteration"
    total = epochs * steps_per_epoch if per_iter else epochs
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(
            opt, step_size=schedule.step_size, gamma=schedule.gamma
        )
    lr = opt.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=max(total, 1), eta_min=lr * schedule.eta_min_ratio
    )
