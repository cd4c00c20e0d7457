"""Speed of `aqa tune` against the training it runs: is the tune's own overhead small?

A grid of 12 DAE settings (lr {1e-4, 3e-4, 1e-3} x weight decay {1e-5, 1e-4} x loss
{stable, v1}) x 5 CV folds x 1 seed on MTL-AQA-sized synthetic features (1059 train x
1024-d, 353 test, as benchmarks/bench_dae.py makes them; written to a cache file), 100
epochs, batch 8. Measured in one run:

1. the tune's wall time: `plan_tune` + `run_tune` (cache and labels read, ridge on the
   folds, every trial in --jobs processes, table and files), from a fresh TUNE_DIR;
2. the sum of the trials' own `train_seconds` (their metrics.json, as they ran in the tune,
   i.e. sharing the machine with the other --jobs - 1 processes);
3. the same trials run alone, one after the other in this process with all cores
   (`run_training` of each trial's config on the same CV folds): the sum of their wall
   times and of their train_seconds. --alone K runs only the first K and scales the sums
   by 12 / K (every trial trains the same number of steps); --alone 0 skips it.

Target (issue 11): on 2 cores the tune's wall time <= 1.1 x the sum of its trials' own
training time run alone (3). Printed: both ratios, the CPU model, torch threads and the
load average (other work on the machine slows everything down; rerun on a quiet one).

    python benchmarks/bench_tune.py [--epochs 100] [--batch-size 8] [--folds 5] [--jobs 2]
        [--alone 12] [--n-train 1059] [--n-test 353] [--dim 1024] [--out DIR]
    python benchmarks/bench_tune.py --epochs 3 --n-train 200 --dim 64 --alone 2  # smoke test
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from bench_dae import synthetic

from aqa_pipeline.features import write_features
from aqa_pipeline.launch import LaunchOptions
from aqa_pipeline.provenance import describe_cpu
from aqa_pipeline.results import rundir
from aqa_pipeline.train import run_training
from aqa_pipeline.train.tune import make_space, plan_tune, run_tune

GRID = {"optim.lr": [1e-4, 3e-4, 1e-3], "optim.weight_decay": [1e-5, 1e-4],
        "head.loss": ["stable", "v1"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="tune --jobs")
    ap.add_argument("--alone", type=int, default=12,
                    help="trials to time alone (0: skip; fewer than 12: scaled)")  # fmt: skip
    ap.add_argument("--n-train", type=int, default=1059)
    ap.add_argument("--n-test", type=int, default=353)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=None, help="keep the files here (default: temp)")
    args = ap.parse_args()
    print(f"CPU: {describe_cpu()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    base = {
        "head": {"name": "dae", "loss": "stable"},
        "label": {"scale": 100},
        "optim": {"name": "adam", "lr": 1e-4, "weight_decay": 1e-5},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size},
        "test": {"batch_size": 512},
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        fs, labels = synthetic(args.n_train, args.n_test, args.dim)
        cache = write_features(out / "synthetic.h5", fs)
        tune_dir = out / f"tune-{time.strftime('%Y%m%d-%H%M%S')}"
        t0 = time.perf_counter()
        plan = plan_tune(base, cache, labels, tune_dir, make_space(grids=[GRID]),
                         folds=args.folds, seeds=1)  # fmt: skip
        result = run_tune(plan, LaunchOptions(), jobs=args.jobs)
        wall = time.perf_counter() - t0
        n = len(plan.trials)
        in_tune = sum(float(r["train_seconds"]) for r in result.rows)
        print(result.table)
        print(f"\n{n} trials x {args.folds} folds x 1 seed, {args.epochs} epochs, batch "
              f"{args.batch_size}, {args.n_train} x {args.dim} train rows (CV folds of them); "
              f"--jobs {args.jobs}")  # fmt: skip
        print(f"tune wall time {wall:.1f} s; sum of its trials' train_seconds {in_tune:.1f} s "
              f"(ratio {wall / in_tune:.3f})")  # fmt: skip
        k = min(args.alone, n)
        if k > 0:
            walls, secs = [], []
            for i, trial in enumerate(plan.trials[:k]):
                t = time.perf_counter()
                m = run_training(trial.config, plan.features, plan.cv, out / "alone" / str(i))
                walls.append(time.perf_counter() - t)
                secs.append(float(m["train_seconds"]))
            scale = n / k
            alone_wall, alone_train = sum(walls) * scale, sum(secs) * scale
            note = "" if k == n else f" (first {k} trials, scaled by {n}/{k})"
            print(f"the same trials alone, in turn, {torch.get_num_threads()} threads{note}: "
                  f"wall {alone_wall:.1f} s, train_seconds {alone_train:.1f} s")  # fmt: skip
            ratio = wall / alone_train
            print(f"tune wall / sum of the trials' training time alone: {ratio:.3f} "
                  f"(target <= 1.1: {'met' if ratio <= 1.1 else 'NOT met'}); "
                  f"/ their wall time alone: {wall / alone_wall:.3f}")  # fmt: skip
        rundir.write_json(tune_dir / "bench.json", {"cpu": describe_cpu(), "wall": wall,
                          "train_seconds_in_tune": in_tune, "jobs": args.jobs,
                          "args": {k: str(v) for k, v in vars(args).items()}})  # fmt: skip
        print(f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
