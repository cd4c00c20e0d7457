"""PNG figures of a run (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from aqa_pipeline.results.predictions import Predictions  # noqa: E402

LEVELS = np.linspace(0.05, 0.95, 19)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pred_vs_true(preds: Predictions, protocol: str, seed: int, path: Path) -> Path:
    """Predicted vs true scores of one seed (all folds), with +-sigma bars when present."""
    fig, ax = plt.subplots(figsize=(5, 5))
    _, folds, _ = preds.keys()
    lo, hi = np.inf, -np.inf
    for fold in folds:
        sel = preds.select(protocol, fold, seed)
        sigma = sel["sigma"] if np.isfinite(sel["sigma"]).all() else None
        ax.errorbar(
            sel["true"],
            sel["pred"],
            yerr=sigma,
            fmt="o",
            ms=3,
            alpha=0.7,
            elinewidth=0.6,
            label=fold if len(folds) > 1 else None,
        )
        lo = min(lo, sel["true"].min(), sel["pred"].min())
        hi = max(hi, sel["true"].max(), sel["pred"].max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("true score")
    ax.set_ylabel("predicted score" + (" (bars: +-sigma)" if preds.has_sigma else ""))
    ax.set_title(f"{protocol} protocol, seed {seed}")
    if len(folds) > 1 and len(folds) <= 12:
        ax.legend(fontsize=6)
    return _save(fig, path)


def observed_coverage(preds: Predictions, protocol: str) -> np.ndarray:
    """Observed coverage of the central intervals at LEVELS, pooled over folds and seeds."""
    _, folds, seeds = preds.keys()
    err, sig = [], []
    for fold in folds:
        for seed in seeds:
            sel = preds.select(protocol, fold, seed)
            err.append(np.abs(sel["pred"] - sel["true"]))
            sig.append(sel["sigma"])
    e, s = np.concatenate(err), np.concatenate(sig)
    z = stats.norm.ppf(0.5 + LEVELS / 2)
    return np.array([np.mean(e <= zi * s) for zi in z])


def calibration(preds: Predictions, protocols: list[str], path: Path) -> Path:
    """Observed vs nominal coverage of the Gaussian intervals."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for p in protocols:
        ax.plot(LEVELS, observed_coverage(preds, p), "o-", ms=3, label=p)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("observed coverage (test)")
    ax.set_title("calibration of sigma")
    ax.legend(fontsize=8)
    return _save(fig, path)


def curves(epoch_rows: list[dict[str, Any]], path: Path) -> Path:
    """Per seed: Spearman per epoch (test for the full run, validation for the val run,
    averaged over folds) and the training loss."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    seeds = sorted({int(r["seed"]) for r in epoch_rows})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for run, style in (("full", "-"), ("val", ":")):
        for i, seed in enumerate(seeds):
            rows = [r for r in epoch_rows if r["run"] == run and int(r["seed"]) == seed]
            if not rows:
                continue
            epochs = sorted({int(r["epoch"]) for r in rows})
            rho = [np.mean([r["spearman"] for r in rows if int(r["epoch"]) == e]) for e in epochs]
            loss = [
                np.mean([r["train_loss"] for r in rows if int(r["epoch"]) == e]) for e in epochs
            ]
            name = "test" if run == "full" else "val"
            color = colors[i % len(colors)]
            ax1.plot(epochs, rho, style, lw=1, color=color, label=f"seed {seed} {name}")
            ax2.plot(epochs, loss, style, lw=1, color=color, label=f"seed {seed} {run}")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("Spearman")
    ax1.set_title("Spearman per epoch (full run: test; val run: validation)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("training loss (mean per step)")
    for ax in (ax1, ax2):
        if len(seeds) <= 5:
            ax.legend(fontsize=6)
    return _save(fig, path)


def timeline(
    video_id: str,
    record: dict[str, np.ndarray],
    pred: float,
    true: float,
    fps: float | None,
    path: Path,
) -> Path:
    """Clip weight (bars) and clip score (line) over the video, with the totals."""
    frames = np.asarray(record["clip_frames"], dtype=np.float64)
    unit = "s" if fps else "frame"
    scale = 1.0 / fps if fps else 1.0
    start, stop = frames[:, 0] * scale, frames[:, 1] * scale
    fig, ax1 = plt.subplots(figsize=(10, 3.5))
    if "clip_weights" in record:
        ax1.bar(
            start,
            record["clip_weights"],
            width=stop - start,
            align="edge",
            alpha=0.4,
            color="tab:blue",
            label="clip weight",
        )
        ax1.set_ylabel("clip weight", color="tab:blue")
    ax1.set_xlabel(f"time ({unit})")
    if "clip_scores" in record:
        ax2 = ax1.twinx()
        ax2.plot((start + stop) / 2, record["clip_scores"], "o-", ms=3, color="tab:red")
        ax2.set_ylabel("clip score", color="tab:red")
    ax1.set_title(f"{video_id}: predicted {pred:.2f}, true {true:.2f}")
    return _save(fig, path)
