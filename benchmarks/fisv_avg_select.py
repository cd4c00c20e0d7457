"""Choose the settings of aqa_pipeline/configs/train/{dae,mlp}_fisv_{tes,pcs}.yaml by 5-fold
cross-validation on Fis-V's 400 training programs (the test programs are never read).

Each setting (DAE loss x standardize x lr x weight decay) trains once per fold; the five
folds run together as five stacked "seeds", each with its own training rows. The CV score of a
setting at epoch E is the mean over folds of the held-out Spearman after E epochs, so every
epoch count in --epochs is scored by one run. Features are z-scored (standardize) with the
mean and std of all 400 training programs' features (no labels are involved).

    python benchmarks/fisv_avg_select.py [--fisv ../shared/data/fisv] [--threads 1]

Prints every setting's CV Spearman and, per head and target, the best one, beside ridge
regression's best CV Spearman on the same folds (aqa_pipeline.train.baseline.ridge_cv).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch
from bench_fisv_avg import mean_features

from aqa_pipeline.datasets import load_labels
from aqa_pipeline.train.baseline import ridge_cv
from aqa_pipeline.train.config import resolve_config
from aqa_pipeline.train.data import TrainData
from aqa_pipeline.train.group import build_group
from aqa_pipeline.train.heads import build_head
from aqa_pipeline.train.inputs import FeatureNorm, VideoInputs
from aqa_pipeline.train.loop import RunPlan, run_epochs
from aqa_pipeline.train.losses import DAE_LOSSES

ROOT = Path(__file__).resolve().parents[1]
# Weight decay grids: the summed `stable` DAE loss has gradients ~2 x batch size larger than
# a batch mean, so (under Adam) it needs a larger decay for the same effect than the
# mean-reduced losses (MLP's MSE, DAE `likelihood` and `v1`).
WD_SUM = [1e-3, 1e-2, 3e-2, 1e-1]
WD_MEAN = [1e-4, 3e-4, 3e-3, 3e-2]
LRS = [3e-4, 1e-3]
GRID: dict[str, list[dict]] = {
    "dae": [
        {"loss": "stable", "lr": LRS, "weight_decay": WD_SUM},
        {"loss": "likelihood", "lr": LRS, "weight_decay": WD_MEAN},
        {"loss": "v1", "lr": LRS, "weight_decay": WD_MEAN},
    ],
    "mlp": [{"loss": None, "lr": LRS, "weight_decay": WD_MEAN}],
}


def cv_folds(n: int, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions (k, n - n // k) to train on and (k, n // k) to hold out, one row per fold."""
    order = np.random.default_rng(seed).permutation(n)[: n - n % k]
    held = np.stack([order[i::k] for i in range(k)])
    train = np.stack([np.setdiff1d(order, h) for h in held])
    return train, held


def cv_curve(
    head: str, data: TrainData, train_rows: np.ndarray, folds, settings: dict, epochs: int
) -> np.ndarray:
    """Mean held-out Spearman over folds after each epoch (epochs,)."""
    head_opts = {"loss": settings["loss"]} if settings["loss"] else {}
    cfg = resolve_config(
        {
            "head": {"name": head, **head_opts},
            "optim": {"name": "adam", "lr": settings["lr"], "weight_decay": settings["wd"]},
            "train": {"epochs": epochs, "batch_size": 32},
            "eval": {"val_fraction": 0.0, "bootstrap": 0},
            "test": {"batch_size": 512},
        }
    )
    tr, held = train_rows[folds[0]], train_rows[folds[1]]
    norm = FeatureNorm.fit(data, train_rows, clips=False) if settings["standardize"] else None
    seeds = list(range(len(tr)))
    steps = -(-tr.shape[1] // 32)
    group = build_group(
        lambda: build_head(head, data.feature_dim, **head_opts),
        seeds,
        cfg,
        steps,
        torch.device("cpu"),
    )
    out = run_epochs(
        group, data, VideoInputs(data, norm), RunPlan.of(cfg, tr, {"held": held}, seeds)
    )
    return out.spearman["held"].mean(1)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--fisv", type=Path, default=ROOT.parent / "shared" / "data" / "fisv")
    ap.add_argument("--heads", nargs="+", default=["dae", "mlp"])
    ap.add_argument("--targets", nargs="+", default=["tes", "pcs"])
    ap.add_argument("--epochs", type=int, nargs="+", default=[50, 100, 150, 200, 300])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--dae-losses", nargs="+", choices=DAE_LOSSES, default=list(DAE_LOSSES), help="to try"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fs = mean_features(args.fisv)
    for target in args.targets:
        labels = load_labels(f"fisv:{args.fisv}?target={target.upper()}")
        data = TrainData.build(fs, labels, 43.0, clips=False, cache="fisv-mean")
        train_rows = labels.folds[0].train
        folds = cv_folds(len(train_rows))
        rows = np.array([fs.index(v) for v in labels.video_ids])[train_rows]
        lam, curve = ridge_cv(fs.video_features[rows].astype(np.float64), labels.score[train_rows])
        print(f"{target.upper()} ridge: CV Spearman {curve.max():.4f} (lambda {lam:.3g})")
        for head in args.heads:
            results = []
            grid = [g for g in GRID[head] if head != "dae" or g["loss"] in args.dae_losses]
            for g, std in itertools.product(grid, [False, True]):
                for lr, wd in itertools.product(g["lr"], g["weight_decay"]):
                    t0 = time.perf_counter()
                    settings = {"loss": g["loss"], "standardize": std, "lr": lr, "wd": wd}
                    curve = cv_curve(head, data, train_rows, folds, settings, max(args.epochs))
                    at = {e: float(curve[e - 1]) for e in args.epochs}
                    results += [({**settings, "epochs": e}, rho) for e, rho in at.items()]
                    row = " ".join(f"{e}:{rho:.4f}" for e, rho in at.items())
                    print(
                        f"{target.upper()} {head} loss={g['loss']} standardize={std!s:5s} "
                        f"lr={lr:g} wd={wd:g}  {row}"
                        f"  ({time.perf_counter() - t0:.0f} s)",
                        flush=True,
                    )
            best, rho = max(results, key=lambda r: r[1])
            print(f"BEST {target.upper()} {head}: {best} CV Spearman {rho:.4f}", flush=True)


if __name__ == "__main__":
    main()
