"""Optimiser and learning-rate schedule from the config's optim / schedule sections."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


def build_optimizer(params: Iterable[Tensor], optim: dict[str, Any]) -> torch.optim.Optimizer:
    """adam | adamw | sgd with lr, weight_decay (and momentum for sgd).

    Every update is elementwise, so parameters stacked over seeds (S, ...) get exactly the
    per-seed update."""
    params = list(params)
    lr, wd = float(optim["lr"]), float(optim["weight_decay"])
    name = optim["name"]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(optim["momentum"]), weight_decay=wd)
    # fused kernels: one pass over all tensors per step (CPU and CUDA, float32)
    fused = all(p.dtype == torch.float32 for p in params)
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=wd, fused=fused)


def build_scheduler(
    opt: torch.optim.Optimizer, schedule: dict[str, Any], epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """none | step (StepLR) | cosine (to lr * eta_min_ratio); counted in epochs or
    iterations (schedule.per). Call `.step()` once per unit."""
    name = schedule["name"]
    if name == "none":
        return None
    per_iter = schedule["per"] == "iteration"
    total = epochs * steps_per_epoch if per_iter else epochs
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(
            opt, step_size=int(schedule["step_size"]), gamma=float(schedule["gamma"])
        )
    lr = opt.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=max(total, 1), eta_min=lr * float(schedule["eta_min_ratio"])
    )
