"""Losses of the score-distribution heads, as pure functions of (B,) or (B, K) tensors.

DAE (REFERENCE.md section 1); g is the target, mu the predicted mean, y = mu + sigma * eps
the reparameterised sample, sigma^2 = exp(logvar):
- `dae_stable_loss`: sum (y - g)^2 + sum (mu - g)^2 over the batch (the authors' code).
- `dae_v1_loss`: alpha * mean (y - g)^2 + beta * mean (mu - g)^2 on every tenth epoch,
  mean (y - g)^2 alone on the others (the v1 paper's schedule).
- `dae_likelihood_loss`: mean of alpha * (g - mu)^2 / sigma^2 + beta * log sigma^2
  (the later paper; alpha 0.6, beta 0.4). Its minimum over sigma^2 is at
  sigma^2 = (alpha / beta) * (g - mu)^2, so with 0.6/0.4 sigma comes out 1.22x the error.
- `weighted_likelihood_loss`: the same terms, each sample's weighted by sigma^2 / alpha held
  constant (beta-NLL with beta = 1, Seitzer et al., ICLR 2022). mu gets the MSE's gradient
  2 (mu - g) and logvar the gradient (beta / alpha) sigma^2 - (g - mu)^2, neither scaled by
  1 / sigma^2, so SGD at the long-form heads' learning rates does not blow up when sigma
  shrinks; the minimum over sigma^2 is the same.

Score distributions (USDL / MUSDL):
- `gaussian_soft_labels`: a Gaussian over the score bins around each target, normalised.
- `soft_label_kl`: KL(target || predicted), averaged over batch and bins like the authors'
  `nn.KLDivLoss()` default.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

DAELoss = Literal["stable", "v1", "likelihood"]  # the `loss` option of dae, dae_mt, dae_core
DAE_LOSSES: tuple[str, ...] = get_args(DAELoss)


def dae_stable_terms(sample: Tensor, mu: Tensor, target: Tensor) -> dict[str, Tensor]:
    """The authors' two terms: "reconstruction" sum (y - g)^2 and "support" sum (mu - g)^2
    (sums over every element)."""
    return {
        "reconstruction": (sample - target).square().sum(),
        "support": (mu - target).square().sum(),
    }


def dae_stable_loss(sample: Tensor, mu: Tensor, target: Tensor) -> Tensor:
    """sum (y - g)^2 + sum (mu - g)^2 (sums over every element)."""
    terms = dae_stable_terms(sample, mu, target)
    return terms["reconstruction"] + terms["support"]


def dae_v1_loss(
    sample: Tensor,
    mu: Tensor,
    target: Tensor,
    epoch: int,
    alpha: float = 1.0,
    beta: float = 1.0,
    every: int = 10,
) -> Tensor:
    """alpha * L_rec + beta * L_sup on epochs every-1, 2*every-1, ...; L_rec alone otherwise.

    L_rec = mean (y - g)^2 ("reconstruction"), L_sup = mean (mu - g)^2 ("support");
    `epoch` counts from 0, so the combined loss falls on the 10th, 20th, ... epoch.
    """
    rec = (sample - target).square().mean()
    if (epoch + 1) % every == 0:
        return alpha * rec + beta * (mu - target).square().mean()
    return rec


def dae_likelihood_loss(
    mu: Tensor, logvar: Tensor, target: Tensor, alpha: float = 0.6, beta: float = 0.4
) -> Tensor:
    """mean of alpha * (g - mu)^2 * exp(-logvar) + beta * logvar."""
    return (alpha * (target - mu).square() * torch.exp(-logvar) + beta * logvar).mean()


def weighted_likelihood_loss(
    mu: Tensor, logvar: Tensor, target: Tensor, alpha: float = 0.6, beta: float = 0.4
) -> Tensor:
    """mean of (sigma^2 / alpha, no gradient) * (alpha * (g - mu)^2 / sigma^2 + beta * logvar)."""
    weight = torch.exp(logvar).detach() / alpha
    return (weight * (alpha * (target - mu).square() * torch.exp(-logvar) + beta * logvar)).mean()


LongformDAELoss = Literal["weighted", "likelihood"]  # `score_dist.loss` of gdlt, interaqa
LONGFORM_DAE_LOSSES: tuple[str, ...] = get_args(LongformDAELoss)


def longform_dae_loss(
    kind: str, mu: Tensor, logvar: Tensor, target: Tensor, alpha: float, beta: float
) -> Tensor:
    """The DAE loss of the long-form heads (`score_dist.kind: dae`): `kind` is
    `score_dist.loss`, "weighted" or "likelihood"."""
    fn = weighted_likelihood_loss if kind == "weighted" else dae_likelihood_loss
    return fn(mu, logvar, target, alpha, beta)


def dae_loss(
    kind: str,
    *,
    sample: Tensor,
    mu: Tensor,
    logvar: Tensor,
    target: Tensor,
    epoch: int,
    alpha: float,
    beta: float,
) -> Tensor:
    """Dispatch on `kind` (one of DAE_LOSSES)."""
    if kind == "stable":
        return dae_stable_loss(sample, mu, target)
    if kind == "v1":
        return dae_v1_loss(sample, mu, target, epoch, alpha, beta)
    if kind == "likelihood":
        return dae_likelihood_loss(mu, logvar, target, alpha, beta)
    raise ValueError(f"unknown DAE loss {kind!r}; expected one of {DAE_LOSSES}")


def gaussian_soft_labels(target: Tensor, centers: Tensor, std: float) -> Tensor:
    """Normalised Gaussian weights over bins: target (...,), centers (K,) -> (..., K).

    `std` is in the units of `centers` (the authors state it in bins, spacing 1).
    """
    z = (centers - target[..., None]) / std
    w = torch.exp(-0.5 * z.square())
    return w / w.sum(dim=-1, keepdim=True).clamp_min(1e-30)


def soft_label_kl(log_probs: Tensor, soft: Tensor) -> Tensor:
    """KL(soft || exp(log_probs)) elementwise, mean over all elements (B * K)."""
    return (torch.xlogy(soft, soft) - soft * log_probs).mean()
