"""Speed of DAE training on MTL-AQA-sized features: 1059 train x 1024-d, 353 test.

Times the training loop (`run_epochs`: every epoch trains on all rows and predicts the
test set) for 1 seed and for N seeds trained together (vmapped), plus a whole
`run_training` (validation run + full run + files + report) for reference.

    python benchmarks/bench_dae.py [--epochs 100] [--batch-size 8] [--seeds 10] [--threads 2]

Targets (issue 3): 100 epochs <= 5 s for one seed; 10 seeds <= 3x one seed.
Wall time depends on what else runs on the machine: the load average is printed, and the
process CPU time beside the wall time (with one thread, CPU time is roughly the wall time
of an otherwise idle machine).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aqa_pipeline.datasets import Fold, LabelSet
from aqa_pipeline.features import FeatureSet, VideoRecord
from aqa_pipeline.train.config import resolve_config
from aqa_pipeline.train.data import TrainData
from aqa_pipeline.train.group import build_group
from aqa_pipeline.train.heads import build_head
from aqa_pipeline.train.inputs import VideoInputs
from aqa_pipeline.train.loop import run_epochs
from aqa_pipeline.train.runner import run_training


def synthetic(n_train: int = 1059, n_test: int = 353, dim: int = 1024, seed: int = 0):
    """Random features with a linear score (0-100), MTL-AQA's split sizes."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    x = rng.normal(size=(n, dim)).astype(np.float32)
    score = 50 + 10 * (x @ rng.normal(size=dim) / np.sqrt(dim)) + rng.normal(size=n)
    ids = [f"v{i:05d}" for i in range(n)]
    recs = [
        VideoRecord(video_id=v, clip_features=x[i : i + 1], clip_frames=np.array([[0, 16]]))
        for i, v in enumerate(ids)
    ]
    fs = FeatureSet.from_records(recs, dim)
    fold = Fold("split", np.arange(n_train), np.arange(n_train, n))
    return fs, LabelSet("synthetic", "synthetic", ids, score, [fold])


def time_loop(cfg: dict, data: TrainData, fold: Fold, seeds: list[int]) -> tuple[float, float]:
    """(wall, process CPU) seconds of the training loop for `seeds`."""
    s_n = len(seeds)
    steps = -(-len(fold.train) // cfg["train"]["batch_size"])
    opts = {k: v for k, v in cfg["head"].items() if k != "name"}
    group = build_group(
        lambda: build_head("dae", data.feature_dim, **opts), seeds, cfg, steps, torch.device("cpu")
    )
    t0, c0 = time.perf_counter(), time.process_time()
    run_epochs(
        group,
        data,
        VideoInputs(data),
        np.tile(fold.train, (s_n, 1)),
        {"test": np.tile(fold.test, (s_n, 1))},
        cfg,
        seeds,
        (0, 0),
        1,
        best_on="test",
    )
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--loss", default="stable")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fs, labels = synthetic()
    cfg = resolve_config(
        {
            "head": {"name": "dae", "loss": args.loss},
            "label": {"scale": 100},
            "optim": {"name": "adam", "lr": 1e-4, "weight_decay": 1e-5},
            "train": {"epochs": args.epochs, "batch_size": args.batch_size},
            "eval": {"val_fraction": 0.0, "bootstrap": 0},
            "test": {"batch_size": 512},
        }
    )
    data = TrainData.build(fs, labels, 100.0, clips=False, cache="synthetic")
    fold = labels.folds[0]
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"batch {args.batch_size}, {args.epochs} epochs, 1059 x 1024 train, 353 test; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    time_loop(resolve_config({**cfg, "train": {**cfg["train"], "epochs": 1}}), data, fold, [0])
    one, one_cpu = time_loop(cfg, data, fold, [0])
    many, many_cpu = time_loop(cfg, data, fold, list(range(args.seeds)))
    print(
        f"1 seed:   {one:6.2f} s wall, {one_cpu:6.2f} s CPU "
        f"(target <= 5 s: {'met' if one <= 5 else 'NOT met'} on wall time)"
    )
    print(
        f"{args.seeds} seeds: {many:6.2f} s wall, {many_cpu:6.2f} s CPU = {many / one:.2f}x one "
        f"seed's wall, {many_cpu / one_cpu:.2f}x its CPU "
        f"(target <= 3x: {'met' if many <= 3 * one else 'NOT met'} on wall time)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_training(cfg, fs, labels, Path(tmp) / "run", seeds=1)
        print(
            f"run_training, 1 seed (loop + predictions, metrics, report files): "
            f"{time.perf_counter() - t0:.2f} s wall"
        )
    print(f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
