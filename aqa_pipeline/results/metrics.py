"""Evaluation metrics (REFERENCE.md section 7). All take 1-D arrays in dataset units.

- `spearman`: scipy.stats.spearmanr over the whole test split; undefined (fewer than 2
  videos, or constant predictions or labels: no ranking at all) is NaN, never 0
  (`spearman_undefined` says why).
- `fisher_z_mean`: tanh(mean(atanh(rho))), the papers' average over classes / folds.
- `rl2`: R-l2 = mean(((p - y) / (y_max - y_min))^2) x 100, as the papers print it; the
  range is the fold's score range.
- `mse`, `mae`: in dataset units.
- For a Gaussian prediction (mean p, std sigma): `gaussian_nll` (mean, natural log),
  `coverage` of the central interval p +- z * sigma at a nominal level, and
  `sigma_error_spearman`, the rank correlation between sigma and |p - y|.
- `bootstrap_spearman`: resampled videos -> the 95% interval of the seed- and
  fold-averaged Spearman; resamples where it is undefined are skipped (`bootstrap_interval`
  counts them).
- `collapsed`: predictions whose spread is below 1e-3 of the labels' (a collapsed head).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

RHO_CLIP = 0.999999


def spearman_undefined(pred: np.ndarray, true: np.ndarray) -> str | None:
    """Why the Spearman of (pred, true) is undefined, or None when it is defined."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if len(pred) < 2:
        return f"{len(pred)} video(s): a rank correlation needs at least 2"
    if not np.isfinite(pred).all():
        return "non-finite predictions (the training diverged)"
    if np.ptp(pred) == 0:
        return "constant predictions"
    if np.ptp(true) == 0:
        return "constant labels"
    return None


def spearman(pred: np.ndarray, true: np.ndarray) -> float:
    """Spearman's rho of pred and true; NaN where it is undefined (see spearman_undefined)."""
    if spearman_undefined(pred, true):
        return float("nan")
    return float(stats.spearmanr(pred, true).statistic)


COLLAPSE_RATIO = 1e-3


def collapsed(pred: np.ndarray, true: np.ndarray) -> bool:
    """True when the predictions' spread (max - min) is below COLLAPSE_RATIO of the labels':
    a head that predicts (almost) one value for every video, whatever its Spearman says."""
    spread_true = float(np.ptp(np.asarray(true, dtype=np.float64))) if len(true) else 0.0
    spread_pred = float(np.ptp(np.asarray(pred, dtype=np.float64))) if len(pred) else 0.0
    return spread_true > 0 and spread_pred < COLLAPSE_RATIO * spread_true


def fisher_z_mean(rhos: Sequence[float]) -> float:
    """tanh(mean(atanh(rho))); one value (or equal values) is returned unchanged; NaN when
    any rho is undefined (NaN)."""
    r = np.asarray(rhos, dtype=np.float64)
    if np.isnan(r).any():
        return float("nan")
    if np.all(r == r[0]):
        return float(r[0])
    return float(np.tanh(np.arctanh(np.clip(r, -RHO_CLIP, RHO_CLIP)).mean()))


def rl2(pred: np.ndarray, true: np.ndarray, score_range: tuple[float, float]) -> float:
    lo, hi = score_range
    span = hi - lo if hi > lo else 1.0
    return float(np.mean(((np.asarray(pred) - np.asarray(true)) / span) ** 2) * 100.0)


def mse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean((np.asarray(pred) - np.asarray(true)) ** 2))


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred) - np.asarray(true))))


def gaussian_nll(pred: np.ndarray, sigma: np.ndarray, true: np.ndarray) -> float:
    var = np.maximum(np.asarray(sigma, dtype=np.float64), 1e-12) ** 2
    err2 = (np.asarray(true) - np.asarray(pred)) ** 2
    return float(np.mean(0.5 * np.log(2 * np.pi * var) + err2 / (2 * var)))


def coverage(pred: np.ndarray, sigma: np.ndarray, true: np.ndarray, level: float) -> float:
    """Share of true values inside the central `level` interval of N(pred, sigma^2)."""
    z = stats.norm.ppf(0.5 + level / 2)
    return float(np.mean(np.abs(np.asarray(true) - np.asarray(pred)) <= z * np.asarray(sigma)))


def sigma_error_spearman(pred: np.ndarray, sigma: np.ndarray, true: np.ndarray) -> float:
    return spearman(np.asarray(sigma), np.abs(np.asarray(pred) - np.asarray(true)))


def _rank_rows(a: np.ndarray) -> np.ndarray:
    return stats.rankdata(a, axis=-1)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(-1) / den
    return np.where(den > 0, r, np.nan)  # no ranking in a row: undefined


def bootstrap_spearman(
    groups: Sequence[tuple[np.ndarray, np.ndarray]],
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% interval of the averaged Spearman under resampling of the test videos.

    `groups` has one (pred (S, n_f), true (n_f,)) per fold: predictions of S seeds on the
    fold's n_f test videos. Each resample draws the videos of every fold with replacement
    (the same draw for all seeds), computes every seed's Spearman, averages folds with
    Fisher-z and then seeds, like the point estimate.
    """
    lo, hi, _ = bootstrap_interval(groups, n_boot, seed)
    return lo, hi


def bootstrap_interval(
    groups: Sequence[tuple[np.ndarray, np.ndarray]], n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, int]:
    """`bootstrap_spearman` plus the number of resamples skipped because the Spearman was
    undefined in them (e.g. all drawn labels equal): (low, high, skipped)."""
    if n_boot <= 0:
        return float("nan"), float("nan"), 0
    rng = np.random.default_rng(seed)
    per_fold = []
    for pred, true in groups:
        pred = np.atleast_2d(np.asarray(pred, dtype=np.float64))
        n = pred.shape[1]
        idx = rng.integers(0, n, size=(n_boot, n))
        t = _rank_rows(np.asarray(true, dtype=np.float64)[idx])  # (n_boot, n)
        per_fold.append(np.stack([_pearson_rows(_rank_rows(p[idx]), t) for p in pred], axis=1))
    if len(per_fold) == 1:
        stat = per_fold[0].mean(axis=1)
    else:  # Fisher-z over folds per resample and seed, then the seed mean
        z = np.mean([np.arctanh(np.clip(r, -RHO_CLIP, RHO_CLIP)) for r in per_fold], axis=0)
        stat = np.tanh(z).mean(axis=1)
    ok = np.isfinite(stat)
    if not ok.any():
        return float("nan"), float("nan"), int(n_boot)
    lo, hi = np.percentile(stat[ok], [2.5, 97.5])
    return float(lo), float(hi), int((~ok).sum())


def bootstrap_spearman_difference(
    pred_a: np.ndarray, pred_b: np.ndarray, true: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Spearman of model a minus that of model b on the same test videos, with a paired 95%
    bootstrap interval: (difference, low, high).

    pred_a (S_a, n) and pred_b (S_b, n) hold each model's seeds (a deterministic model has
    S = 1); each model's Spearman is the mean over its seeds. Every resample draws the n
    videos with replacement once, for both models, so the interval reflects the test set's
    sampling, not a comparison of two independent draws.
    """
    return paired_spearman_difference([(pred_a, pred_b, true)], n_boot, seed)


def paired_spearman_difference(
    groups: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """`bootstrap_spearman_difference` over folds: one (pred_a (S_a, n_f), pred_b (S_b, n_f),
    true (n_f,)) per fold. Each model's Spearman is averaged over folds with Fisher-z per
    seed, then over seeds, like the reported figures; every resample draws each fold's
    videos once for both models. (difference, low, high); low/high are NaN without resamples.
    """
    rng = np.random.default_rng(seed)

    def fisher(per_fold: list[np.ndarray]) -> np.ndarray:  # each (S, ...) -> (...)
        if len(per_fold) == 1:
            return per_fold[0].mean(axis=0)
        z = np.mean([np.arctanh(np.clip(r, -RHO_CLIP, RHO_CLIP)) for r in per_fold], axis=0)
        return np.tanh(z).mean(axis=0)

    def rho(p: np.ndarray, tr: np.ndarray) -> np.ndarray:  # (S, ..., n) -> (S, ...)
        return np.stack([_pearson_rows(_rank_rows(ps), tr) for ps in p])

    point_a, point_b, boot_a, boot_b = [], [], [], []
    for pred_a, pred_b, true in groups:
        pa = np.atleast_2d(np.asarray(pred_a, dtype=np.float64))
        pb = np.atleast_2d(np.asarray(pred_b, dtype=np.float64))
        t = np.asarray(true, dtype=np.float64)
        point_a.append(rho(pa, _rank_rows(t)))
        point_b.append(rho(pb, _rank_rows(t)))
        if n_boot > 0:
            idx = rng.integers(0, len(t), size=(n_boot, len(t)))
            tr = _rank_rows(t[idx])
            boot_a.append(rho(pa[:, idx], tr))
            boot_b.append(rho(pb[:, idx], tr))
    point = float(fisher(point_a) - fisher(point_b))
    if n_boot <= 0:
        return point, float("nan"), float("nan")
    diff = fisher(boot_a) - fisher(boot_b)
    diff = diff[np.isfinite(diff)]  # resamples where either Spearman is undefined are skipped
    if not len(diff):
        return point, float("nan"), float("nan")
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return point, float(lo), float(hi)
