"""Does DAE's sigma mean something? Synthetic heteroscedastic data with a known noise level.

Features x (N, D) ~ N(0, 1); score y = 50 + 16 tanh(x . w / 2) + s(x) eps with a
per-sample noise level s(x) = 0.5 + 4.5 sigmoid(2 x . v) (0.5-5 points) along a direction
v orthogonal to w. Two sets: 3000 train / 1000 test videos of 32-d features for DAE's
losses (Adam lr 1e-3, weight decay 1e-2, batch 32, 30 epochs, unless the row says
otherwise), and an MTL-AQA-sized set (1059 / 353 videos, 1024-d) for the shipped
configs/train/dae_mtl_aqa.yaml. Each row is one run with the defaults (validation split 0.2,
eval.calibrate_sigma auto: per protocol one factor per seed, fitted on the validation split,
scales sigma); "raw" is the same run's sigma before that factor. We compare sigma with the
true s(x) (Spearman) and give the coverage of the 50% / 90% intervals on the test set (final
and val protocols, 5 seeds). The "trains longer with little weight decay" rows: the head
then fits the training noise, and raw sigma shrinks to the training residuals.

    python benchmarks/bench_calibration.py [--seeds 5] [--threads 1]

Target (issue 11): with the defaults, 90% coverage on the test split within 0.85-0.95.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aqa_pipeline.config import load_config
from aqa_pipeline.datasets import Fold, LabelSet
from aqa_pipeline.features import FeatureSet, VideoRecord
from aqa_pipeline.results.metrics import coverage, spearman
from aqa_pipeline.results.predictions import Predictions
from aqa_pipeline.train import run_training


def heteroscedastic(n_train: int = 3000, n_test: int = 1000, dim: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    x = rng.normal(size=(n, dim)).astype(np.float32)
    w, v = rng.normal(size=dim), rng.normal(size=dim)
    w /= np.linalg.norm(w)
    v -= (v @ w) * w  # noise direction orthogonal to the score direction
    v /= np.linalg.norm(v)
    noise = 0.5 + 4.5 / (1 + np.exp(-2 * (x @ v)))
    score = 50 + 16 * np.tanh(x @ w / 2) + noise * rng.normal(size=n)
    ids = [f"v{i:05d}" for i in range(n)]
    recs = [
        VideoRecord(video_id=vid, clip_features=x[i : i + 1], clip_frames=np.array([[0, 16]]))
        for i, vid in enumerate(ids)
    ]
    fs = FeatureSet.from_records(recs, dim)
    fold = Fold("split", np.arange(n_train), np.arange(n_train, n))
    return (
        fs,
        LabelSet("synthetic", "heteroscedastic", ids, score, [fold]),
        dict(zip(ids, noise, strict=True)),
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sets = {"32-d": heteroscedastic(), "MTL-sized": heteroscedastic(1059, 353, 1024)}
    paper = {"name": "dae", "loss": "likelihood"}
    # name: (set, config overrides); the rest from `base` or the shipped config
    variants = {
        "likelihood (alpha 0.6, beta 0.4: the paper)": ("32-d", {"head": paper}),
        "likelihood (alpha = beta = 0.5: Gaussian NLL)": (
            "32-d", {"head": {**paper, "alpha": 0.5, "beta": 0.5}}),
        "stable (the authors' code)": ("32-d", {"head": {"name": "dae", "loss": "stable"}}),
        "likelihood 0.6/0.4, 100 epochs, wd 1e-4": (
            "32-d", {"head": paper, "train": {"epochs": 100, "batch_size": 32},
                     "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-4}}),
        "dae_mtl_aqa.yaml as shipped (stable)": ("MTL-sized", None),
    }  # fmt: skip
    base = {
        "label": {"scale": 100},
        "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-2},
        "train": {"epochs": 30, "batch_size": 32},
        "eval": {"val_fraction": 0.2, "bootstrap": 0},
        "test": {"batch_size": 1000},
    }
    print(f"{'DAE':40s} {'proto':5s} {'rho(sigma,noise)':>15s} {'cov50':>6s} {'cov90':>6s} "
          f"{'raw cov90':>9s} {'rho test':>8s}  seconds")  # fmt: skip
    for name, (which, overrides) in variants.items():
        fs, labels, noise = sets[which]
        if overrides is None:
            cfg = load_config("dae_mtl_aqa", ["eval.bootstrap=0"], kind="train")
        else:
            cfg = {**base, **overrides}
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            m = run_training(cfg, fs, labels, Path(tmp) / "run", seeds=args.seeds)
            preds = Predictions.read(Path(tmp) / "run" / "predictions.csv")
        seconds = time.perf_counter() - t0
        factors = m.get("sigma_scale", {}).get("split", {})
        for protocol in ("final", "val"):
            rhos, raw = [], []
            for seed in m["seeds"]:
                sel = preds.select(protocol, "split", seed)
                rhos.append(spearman(sel["sigma"], np.array([noise[v] for v in sel["video_id"]])))
                f = factors.get(protocol, {}).get(str(seed), 1.0)
                raw.append(coverage(sel["pred"], sel["sigma"] / f, sel["true"], 0.9))
            d = m["protocols"][protocol]
            print(f"{name:40s} {protocol:5s} {np.mean(rhos):6.3f} +- {np.std(rhos):.3f} "
                  f"{d['coverage_50']:6.3f} {d['coverage_90']:6.3f} {np.mean(raw):9.3f} "
                  f"{d['spearman']:8.3f}  {seconds:6.1f}")  # fmt: skip
    print("target: 90% coverage in [0.85, 0.95] on the test set with the defaults (cov90)")


if __name__ == "__main__":
    main()
