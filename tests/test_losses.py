"""Each loss against a hand-computed value; DAE-MT difficulty and multi-path arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from aqa_pipeline.train.heads import build_head
from aqa_pipeline.train.heads.common import combine_paths
from aqa_pipeline.train.losses import (
    dae_likelihood_loss,
    dae_loss,
    dae_stable_loss,
    dae_v1_loss,
    gaussian_soft_labels,
    soft_label_kl,
    weighted_likelihood_loss,
)

T = torch.tensor


def test_dae_stable_loss_sums_both_terms():
    # (1-1)^2 + (2-1)^2 + (0.5-1)^2 + (1.5-1)^2 = 0 + 1 + 0.25 + 0.25
    assert dae_stable_loss(T([1.0, 2.0]), T([0.5, 1.5]), T([1.0, 1.0])).item() == pytest.approx(1.5)


def test_dae_v1_loss_combines_every_tenth_epoch():
    y, mu, g = T([1.0, 2.0]), T([0.5, 1.5]), T([1.0, 1.0])
    # L_rec = mean(0, 1) = 0.5; L_sup = mean(0.25, 0.25) = 0.25
    assert dae_v1_loss(y, mu, g, epoch=0, alpha=0.6, beta=0.4).item() == pytest.approx(0.5)
    assert dae_v1_loss(y, mu, g, epoch=8, alpha=0.6, beta=0.4).item() == pytest.approx(0.5)
    assert dae_v1_loss(y, mu, g, epoch=9, alpha=0.6, beta=0.4).item() == pytest.approx(0.4)
    assert dae_v1_loss(y, mu, g, epoch=19, alpha=0.6, beta=0.4).item() == pytest.approx(0.4)


def test_dae_likelihood_loss_value_and_gradient_reaches_logvar():
    mu = T([1.0, 2.0], requires_grad=True)
    logvar = T([0.0, math.log(4.0)], requires_grad=True)
    loss = dae_likelihood_loss(mu, logvar, T([2.0, 2.0]), alpha=0.6, beta=0.4)
    # (0.6 * 1 / 1 + 0.4 * 0 + 0.6 * 0 / 4 + 0.4 * ln 4) / 2
    assert loss.item() == pytest.approx((0.6 + 0.4 * math.log(4.0)) / 2)
    loss.backward()
    # d/dlogvar of 0.5 * (0.6 r^2 e^-lv + 0.4 lv): (0.4 - 0.6 r^2 e^-lv) / 2
    assert logvar.grad.tolist() == pytest.approx([(0.4 - 0.6) / 2, 0.4 / 2])


def test_weighted_likelihood_gradients_are_not_scaled_by_one_over_sigma_squared():
    mu = T([1.0, 2.0], requires_grad=True)
    logvar = T([math.log(0.01), math.log(4.0)], requires_grad=True)
    target = T([2.0, 5.0])
    loss = weighted_likelihood_loss(mu, logvar, target, alpha=0.6, beta=0.4)
    # value: mean of (sigma^2 / 0.6) * (0.6 r^2 / sigma^2 + 0.4 lv) = r^2 + (2/3) sigma^2 lv
    expect = (1.0 + 0.01 * math.log(0.01) * 2 / 3 + 9.0 + 4.0 * math.log(4.0) * 2 / 3) / 2
    assert loss.item() == pytest.approx(expect, rel=1e-6)
    loss.backward()
    # d/dmu: 2 (mu - g) / n, the MSE's; the plain likelihood's would be 100x larger for row 0
    assert mu.grad.tolist() == pytest.approx([2 * (1 - 2) / 2, 2 * (2 - 5) / 2])
    # d/dlogvar: ((beta / alpha) sigma^2 - r^2) / n
    assert logvar.grad.tolist() == pytest.approx(
        [(0.01 * 2 / 3 - 1.0) / 2, (4.0 * 2 / 3 - 9.0) / 2], rel=1e-6
    )


def test_likelihood_minimum_is_at_alpha_over_beta_times_squared_error():
    lv = torch.linspace(-3, 3, 6001)
    loss = 0.6 * 4.0 * torch.exp(-lv) + 0.4 * lv  # squared error 4
    best = lv[loss.argmin()].item()
    assert math.exp(best) == pytest.approx(0.6 / 0.4 * 4.0, rel=1e-2)


def test_dae_loss_dispatch_and_unknown():
    args = dict(
        sample=T([1.0]), mu=T([0.0]), logvar=T([0.0]), target=T([0.0]), epoch=0, alpha=0.6, beta=0.4
    )
    assert dae_loss("stable", **args).item() == pytest.approx(1.0)
    assert dae_loss("likelihood", **args).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="unknown DAE loss"):
        dae_loss("kl", **args)


def test_gaussian_soft_labels_and_kl():
    soft = gaussian_soft_labels(T([1.0]), T([0.0, 1.0, 2.0]), std=1.0)
    e = math.exp(-0.5)
    assert soft[0].tolist() == pytest.approx([e / (1 + 2 * e), 1 / (1 + 2 * e), e / (1 + 2 * e)])
    # KL([.5, .5] || [.25, .75]) = .5 ln 2 + .5 ln(2/3), averaged over the 2 bins
    kl = soft_label_kl(torch.log(T([[0.25, 0.75]])), T([[0.5, 0.5]]))
    assert kl.item() == pytest.approx((0.5 * math.log(2) + 0.5 * math.log(2 / 3)) / 2)
    assert soft_label_kl(torch.log(soft), soft).item() == pytest.approx(0.0, abs=1e-7)


def test_combine_paths_sum_and_diving_rule():
    mean = T([[1.0, 5.0, 3.0, 7.0, 2.0, 6.0, 4.0]])
    var = mean / 10
    total, v = combine_paths(mean, var, "sum")
    assert (total.item(), v.item()) == pytest.approx((28.0, 2.8))
    total, v = combine_paths(mean, var, "middle3")  # judges 3, 4, 5 of the sorted seven
    assert (total.item(), v.item()) == pytest.approx((12.0, 1.2))
    total, _ = combine_paths(T([[9.0, 1.0, 5.0, 3.0, 7.0]]), torch.zeros(1, 5), "middle3")
    assert total.item() == pytest.approx(15.0)  # 3 + 5 + 7: highest and lowest dropped


def _dae_mt_out(mu: list[list[float]], sample: list[list[float]], sigma: list[list[float]]) -> dict:
    s = T(sigma)
    return {"mu": T(mu), "sample": T(sample), "sigma": s, "logvar": torch.log(s**2)}


def test_dae_mt_difficulty_multiplies_before_loss_and_at_test():
    head = build_head("dae_mt", 4, difficulty=True, paths="none")
    out = _dae_mt_out([[2.0]], [[2.5]], [[1.0]])
    batch = {"target": T([6.0]), "difficulty": T([3.0])}
    # (2.5 * 3 - 6)^2 + (2 * 3 - 6)^2
    assert head.loss(out, batch).item() == pytest.approx(2.25)
    pred = head.predict(out, batch)
    assert pred["score"].item() == pytest.approx(6.0)
    assert pred["sigma"].item() == pytest.approx(3.0)
    sampled = build_head("dae_mt", 4, difficulty=True, paths="none", predict="sample")
    assert sampled.predict(out, batch)["score"].item() == pytest.approx(7.5)


def test_dae_mt_likelihood_with_difficulty_scales_sigma():
    head = build_head("dae_mt", 4, difficulty=True, paths="none", loss="likelihood")
    out = _dae_mt_out([[2.0]], [[2.0]], [[1.0]])
    # mu*DD = 4, target 6, sigma*DD = 2: 0.6 * 4 / 4 + 0.4 * ln 4
    loss = head.loss(out, {"target": T([6.0]), "difficulty": T([2.0])})
    assert loss.item() == pytest.approx(0.6 + 0.4 * math.log(4.0))


def test_dae_mt_multipath_judges_total_and_variance():
    head = build_head("dae_mt", 4, paths="judges", num_paths=7, combine="middle3", difficulty=True)
    mu = [[1.0, 5.0, 3.0, 7.0, 2.0, 6.0, 4.0]]
    sigma = [[math.sqrt(v / 10) for v in mu[0]]]
    out = _dae_mt_out(mu, mu, sigma)
    batch = {"target": T([0.0]), "difficulty": T([2.0]), "judges": T(mu)}
    pred = head.predict(out, batch)
    assert pred["score"].item() == pytest.approx(2.0 * 12.0)
    assert pred["sigma"].item() == pytest.approx(2.0 * math.sqrt(1.2))
    # each path is trained on its own judge: perfect paths give zero loss whatever DD is
    assert head.loss(out, batch).item() == pytest.approx(0.0)
    batch["judges"] = T(mu) + 1.0
    assert head.loss(out, batch).item() == pytest.approx(2 * 7.0)  # stable: two terms x 7


def test_dae_mt_multipath_sum_without_difficulty():
    head = build_head("dae_mt", 4, paths="subscores", num_paths=6, combine="sum", difficulty=False)
    out = _dae_mt_out([[1.0] * 6], [[1.0] * 6], [[0.5] * 6])
    pred = head.predict(out, {"target": T([0.0])})
    assert pred["score"].item() == pytest.approx(6.0)
    assert pred["sigma"].item() == pytest.approx(math.sqrt(6 * 0.25))
    assert head.requires == ("subscores",)


def test_usdl_readout_and_difficulty():
    head = build_head("usdl", 4, score_range=[0.0, 10.0], num_bins=3, std=1.0, difficulty=True)
    log_probs = torch.log(T([[0.2, 0.5, 0.3]]))
    score, var = head.bins.readout(log_probs, "argmax")
    assert score.item() == pytest.approx(5.0)
    mean, var = head.bins.readout(log_probs, "mean")
    assert mean.item() == pytest.approx(5.5)
    assert var.item() == pytest.approx(0.2 * 5.5**2 + 0.5 * 0.5**2 + 0.3 * 4.5**2)
    pred = head.predict({"score": score, "sigma": var.sqrt()}, {"difficulty": T([2.0])})
    assert pred["score"].item() == pytest.approx(10.0)
    assert pred["sigma"].item() == pytest.approx(2 * 3.5)


def test_usdl_soft_labels_are_in_bins_of_the_score_range():
    head = build_head("usdl", 4, score_range=[6.0, 30.0], num_bins=25, std=1.0)
    soft = head.bins.soft_labels(T([18.0]))
    assert soft.argmax().item() == 12  # bin 12 is score 18
    assert soft.sum().item() == pytest.approx(1.0)


def test_musdl_loss_sums_path_kls():
    head = build_head(
        "musdl",
        4,
        paths="judges",
        num_paths=2,
        combine="sum",
        score_range=[0.0, 1.0],
        num_bins=2,
        std=1.0,
        difficulty=False,
    )
    log_probs = torch.log(T([[[0.25, 0.75], [0.5, 0.5]]]))
    soft = head.bins.soft_labels(T([[0.0, 1.0]]))
    expected = soft_label_kl(log_probs[:, 0], soft[:, 0]) + soft_label_kl(
        log_probs[:, 1], soft[:, 1]
    )
    loss = head.loss({"log_probs": log_probs}, {"judges": T([[0.0, 1.0]])})
    assert loss.item() == pytest.approx(expected.item())
