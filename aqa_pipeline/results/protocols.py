"""Model selection protocols and the metrics.json summary.

Protocols (one model trajectory per fold and seed, trained on the fold's whole train split):
- `final`: the last epoch. The honest default.
- `val`: the epoch chosen by a second run of the same seed trained on train minus a seeded
  validation part (eval.val_fraction), at its best validation Spearman; the reported
  figure is the full-train model at that epoch. The test set never picks anything.
- `best_on_test`: the epoch with the best TEST Spearman, which is what the papers report.
  It is optimistic by construction and labelled so.

Aggregation: Spearman per (fold, seed); Fisher-z average over folds per seed; mean and
sample std over seeds; a bootstrap 95% interval over test videos. Other metrics are
averaged over folds, then over seeds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from aqa_pipeline.results import metrics as M
from aqa_pipeline.results.predictions import BASELINE, BASELINE_SEED, PROTOCOLS, Predictions

NOTES = {
    "final": "last epoch",
    "val": "epoch chosen on a held-out part of train (never on test)",
    "best_on_test": "epoch with the best test Spearman: what the papers report (optimistic)",
}


@dataclass
class RunInfo:
    """What metrics.json says about the run beside the figures."""

    head: str | None = None
    name: str | None = None
    labels: str | None = None
    features: str | None = None
    label_scale: float | None = None
    train_epochs: int | None = None
    train_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> RunInfo:
        return cls(**{f.name: metrics.get(f.name) for f in fields(cls)})


SIGMA_METRICS = ("nll", "coverage_50", "coverage_90", "sigma_error_spearman")


def select_epoch(curve: np.ndarray) -> int:
    """The first epoch with the highest value (NaN never wins)."""
    c = np.where(np.isfinite(curve), curve, -np.inf)
    return int(np.argmax(c))


SMALL_SPLIT = 10  # a test or validation split with fewer videos gets a warning


def split_warnings(sel: dict[str, np.ndarray], where: str) -> list[str]:
    """What makes one (protocol, fold, seed)'s figures mean little: an undefined Spearman,
    collapsed predictions."""
    p, y = sel["pred"], sel["true"]
    out = []
    reason = M.spearman_undefined(p, y)
    if reason:
        out.append(f"{where}: Spearman undefined ({reason}); reported as null")
    elif M.collapsed(p, y):
        out.append(
            f"{where}: collapsed predictions (spread {np.ptp(p):.3g} < "
            f"{M.COLLAPSE_RATIO:g} of the labels' {np.ptp(y):.3g}); its Spearman means little"
        )
    return out


def fold_metrics(
    sel: dict[str, np.ndarray], score_range: tuple[float, float], scale: float | None
) -> dict[str, float]:
    p, y, s = sel["pred"], sel["true"], sel["sigma"]
    out = {
        "spearman": M.spearman(p, y),
        "rl2": M.rl2(p, y, score_range),
        "mse": M.mse(p, y),
        "mae": M.mae(p, y),
    }
    if scale:
        out["mse_norm"] = out["mse"] / scale**2
    if len(s) and np.isfinite(s).all():
        out["nll"] = M.gaussian_nll(p, s, y)
        out["coverage_50"] = M.coverage(p, s, y, 0.5)
        out["coverage_90"] = M.coverage(p, s, y, 0.9)
        out["sigma_error_spearman"] = M.sigma_error_spearman(p, s, y)
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def protocol_summary(
    preds: Predictions,
    protocol: str,
    score_ranges: dict[str, tuple[float, float]],
    scale: float | None,
    n_boot: int,
) -> dict[str, Any]:
    _, folds, seeds = preds.keys()
    per: dict[tuple[str, int], dict[str, float]] = {}
    epochs: dict[str, dict[str, int]] = {}
    groups = []
    warnings: list[str] = []
    for fold in folds:
        stacked = []
        for seed in seeds:
            sel = preds.select(protocol, fold, seed)
            per[fold, seed] = fold_metrics(sel, score_ranges[fold], scale)
            warnings += split_warnings(sel, f"{protocol}, fold {fold}, seed {seed}")
            epochs.setdefault(fold, {})[str(seed)] = (
                int(sel["epoch"][0]) if len(sel["epoch"]) else -1
            )
            order = np.argsort(sel["video_id"], kind="stable")
            stacked.append(sel["pred"][order])
            true = sel["true"][order]
        groups.append((np.stack(stacked), true))
    names = list(per[folds[0], seeds[0]])
    per_seed: dict[str, dict[str, float]] = {}
    for seed in seeds:
        rows = [per[f, seed] for f in folds]
        m = {k: float(np.mean([r[k] for r in rows])) for k in names}
        m["spearman"] = M.fisher_z_mean([r["spearman"] for r in rows])
        per_seed[str(seed)] = m
    out: dict[str, Any] = {"note": NOTES.get(protocol, "")}
    for k in names:
        out[k], out[f"{k}_std"] = _mean_std([per_seed[str(s)][k] for s in seeds])
    lo, hi, skipped = M.bootstrap_interval(groups, n_boot)
    out["spearman_ci95"] = [lo, hi]
    out["spearman_ci95_skipped"] = skipped
    if skipped:
        warnings.append(f"{protocol}: {skipped} of {n_boot} bootstrap resamples had an "
                        "undefined Spearman and were skipped")  # fmt: skip
    out["warnings"] = warnings
    out["spearman_per_seed"] = [per_seed[str(s)]["spearman"] for s in seeds]
    out["per_seed"] = per_seed
    out["per_fold"] = {
        f: {k: float(np.mean([per[f, s][k] for s in seeds])) for k in names} for f in folds
    }
    out["epochs"] = epochs
    return out


def summarize(
    preds: Predictions,
    score_ranges: dict[str, tuple[float, float]],
    scale: float | None = None,
    n_boot: int = 1000,
    baseline: Predictions | None = None,
) -> dict[str, Any]:
    """metrics.json: headline figures (final protocol) plus every protocol in detail; with
    the baseline's predictions of the same videos, its figures (`baseline`) and the head's
    paired difference to it (`vs_baseline`, per protocol too)."""
    protocols, folds, seeds = preds.keys()
    dropped = []
    for p in PROTOCOLS:
        missing = [
            f for f in folds if p in protocols and not len(preds.select(p, f, seeds[0])["pred"])
        ]
        if missing:
            dropped.append(f"{p}: not reported (no predictions for fold(s) {missing})")
    detail = {
        p: protocol_summary(preds, p, score_ranges, scale, n_boot)
        for p in PROTOCOLS
        if p in protocols and not any(d.startswith(f"{p}:") for d in dropped)
    }
    final = detail["final"]
    n_test = sum(len(preds.select("final", f, seeds[0])["pred"]) for f in folds)
    warnings = list(dropped)
    for fold in folds:
        n = len(preds.select("final", fold, seeds[0])["pred"])
        if n < SMALL_SPLIT:
            warnings.append(f"fold {fold}: the test split has {n} videos (< {SMALL_SPLIT}); "
                            "its figures are very uncertain")  # fmt: skip
    for d in detail.values():
        warnings += d["warnings"]
    out: dict[str, Any] = {
        "spearman": final["spearman"],
        "spearman_std": final["spearman_std"],
        "spearman_ci95": final["spearman_ci95"],
        "spearman_per_seed": final["spearman_per_seed"],
    }
    for p in ("val", "best_on_test"):
        d = detail.get(p)
        out[f"spearman_{p}"] = d["spearman"] if d else None
        out[f"spearman_{p}_std"] = d["spearman_std"] if d else None
    for k in ("rl2", "mse", "mae", "mse_norm", *SIGMA_METRICS):
        if k in final:
            out[k], out[f"{k}_std"] = final[k], final[f"{k}_std"]
    out.update({"n_test": n_test, "n_folds": len(folds), "folds": folds, "seeds": seeds})
    out["warnings"] = list(dict.fromkeys(warnings))
    if baseline is not None and len(baseline):
        out["baseline"] = baseline_summary(baseline, score_ranges, n_boot)
        for p, d in detail.items():
            d["vs_baseline"] = versus_baseline(preds, baseline, p, n_boot)
        out["vs_baseline"] = detail["final"]["vs_baseline"]
    out["protocols"] = detail
    return out


def _by_video(sel: dict[str, np.ndarray]) -> np.ndarray:
    return np.argsort(sel["video_id"], kind="stable")


def baseline_summary(
    baseline: Predictions, score_ranges: dict[str, tuple[float, float]], n_boot: int
) -> dict[str, Any]:
    """The baseline's figures on the same test videos: Spearman (Fisher-z over folds) with
    its bootstrap interval, R-l2, MSE and MAE (means over folds), and per fold."""
    _, folds, _ = baseline.keys()
    per_fold, groups = {}, []
    for fold in folds:
        sel = baseline.select(BASELINE, fold, BASELINE_SEED)
        per_fold[fold] = fold_metrics(sel, score_ranges[fold], None)
        order = _by_video(sel)
        groups.append((sel["pred"][order][None], sel["true"][order]))
    out: dict[str, Any] = {"name": "ridge"}
    out["spearman"] = M.fisher_z_mean([per_fold[f]["spearman"] for f in folds])
    lo, hi, skipped = M.bootstrap_interval(groups, n_boot)
    out["spearman_ci95"], out["spearman_ci95_skipped"] = [lo, hi], skipped
    for key in ("rl2", "mse", "mae"):
        out[key] = float(np.mean([per_fold[f][key] for f in folds]))
    out["per_fold"] = per_fold
    return out


def versus_baseline(
    preds: Predictions, baseline: Predictions, protocol: str, n_boot: int
) -> dict[str, Any]:
    """The head's Spearman minus the baseline's on the same test videos, with a paired
    bootstrap 95% interval (every resample draws the videos once for both)."""
    _, folds, seeds = preds.keys()
    groups = []
    for fold in folds:
        base = baseline.select(BASELINE, fold, BASELINE_SEED)
        order = _by_video(base)
        head = []
        for seed in seeds:
            sel = preds.select(protocol, fold, seed)
            mine = _by_video(sel)
            if not np.array_equal(sel["video_id"][mine], base["video_id"][order]):
                raise ValueError(f"fold {fold}: the head and the baseline scored other videos")
            head.append(sel["pred"][mine])
        groups.append((np.stack(head), base["pred"][order][None], base["true"][order]))
    diff, lo, hi = M.paired_spearman_difference(groups, max(n_boot, 0))
    return {"difference": diff, "ci95": [lo, hi]}
