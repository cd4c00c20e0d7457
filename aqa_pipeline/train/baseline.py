"""The baseline beside every run: ridge regression on the per-video mean features.

For each fold, ridge is fitted on the fold's training rows only, with lambda chosen by
k-fold cross-validation on those rows (the best mean held-out Spearman over a log grid);
the test rows are predicted once. It is closed form (one SVD per fit) and takes
milliseconds, so every `aqa train` reports it (`eval.baseline: ridge`, the default) and
the head's paired difference to it (see aqa_pipeline.results.protocols).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aqa_pipeline.results.metrics import spearman

LAMBDAS = np.logspace(-3, 5, 33)


def ridge_fit(
    x: np.ndarray, y: np.ndarray, lams: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Centred ridge via one SVD: weights (L, D) for each of the L lambdas, the feature
    mean (D,) and the target mean. x (n, D), y (n,)."""
    mx, my = x.mean(0), float(y.mean())
    u, s, vt = np.linalg.svd(x - mx, full_matrices=False)
    uy = u.T @ (y - my)
    w = np.stack([vt.T @ (s / (s**2 + lam) * uy) for lam in lams])
    return w, mx, my


def ridge_cv(
    x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0, lams: np.ndarray = LAMBDAS
) -> tuple[float, np.ndarray]:
    """The lambda with the best mean held-out Spearman over `folds` seeded folds of (x, y),
    and that CV curve (L,). Undefined fold Spearmans (NaN) are left out of the mean."""
    folds = max(2, min(folds, len(y)))
    order = np.random.default_rng(seed).permutation(len(y))
    scores = np.full((folds, len(lams)), np.nan)
    for k in range(folds):
        val = order[k::folds]
        tr = np.setdiff1d(order, val)
        w, mx, my = ridge_fit(x[tr], y[tr], lams)
        pred = (x[val] - mx) @ w.T + my  # (n_val, L)
        scores[k] = [spearman(pred[:, j], y[val]) for j in range(len(lams))]
    defined = np.isfinite(scores)
    n = defined.sum(axis=0)
    curve = np.where(n > 0, np.where(defined, scores, 0).sum(axis=0) / np.maximum(n, 1), np.nan)
    best = int(np.argmax(np.where(np.isfinite(curve), curve, -np.inf)))
    return float(lams[best]), curve


@dataclass(frozen=True)
class RidgeFit:
    """One fold's ridge baseline: test predictions (dataset units), lambda and its CV score."""

    pred: np.ndarray  # (n_test,)
    lam: float
    cv_spearman: float


def ridge_baseline(
    x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, folds: int = 5
) -> RidgeFit:
    """Fit ridge on rows `train` of (x (N, D), y (N,)) with lambda by CV on them only, and
    predict rows `test`. y of the test rows is never read."""
    x = np.asarray(x, dtype=np.float64)
    y_train = np.asarray(y, dtype=np.float64)[train]
    lam, curve = ridge_cv(x[train], y_train, folds)
    w, mx, my = ridge_fit(x[train], y_train, np.array([lam]))
    pred = (x[test] - mx) @ w[0] + my
    return RidgeFit(pred, lam, float(np.nanmax(curve)) if np.isfinite(curve).any() else np.nan)
