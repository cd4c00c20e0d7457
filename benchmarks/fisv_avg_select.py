"""Choose the settings of aqa_pipeline/configs/train/{dae,mlp}_fisv_{tes,pcs}.yaml by 5-fold
cross-validation on Fis-V's 400 training programs (the 100 test programs take no part): one
`aqa tune` (aqa_pipeline.train.tune) per head and target, from their shipped config.

Features: each program's mean of GDLT's Video Swin-B clip features
(bench_fisv_avg.mean_features), written once to OUT/fisv_mean.h5. The space per head
(one CV run of 5 folds x --seeds seeds per setting, trials in --jobs processes):

    dae  loss stable x weight decay {1e-3, 1e-2, 3e-2, 1e-1}, and loss {likelihood, v1} x
         weight decay {1e-4, 3e-4, 3e-3, 3e-2}; each x data.standardize {no, yes} x
         lr {3e-4, 1e-3} x train.epochs (--epochs)
    mlp  weight decay {1e-4, 3e-4, 3e-3, 3e-2} x standardize x lr x epochs

(The summed `stable` DAE loss has gradients ~2 x batch size larger than a batch mean, so under
Adam it needs a larger decay for the same effect than the mean-reduced losses.) Every epoch
count is its own trial, and data.standardize z-scores with each CV fold's own training rows.
`--trials N` draws N settings per head and target instead (seeded).

    python benchmarks/fisv_avg_select.py [--fisv ../shared/data/fisv] [--out fisv_avg_select]
        [--heads dae mlp] [--targets tes pcs] [--epochs 50 100 150 200 300] [--jobs 2]
        [--trials N] [--threads 1]

Prints, per head and target, every setting's CV Spearman (mean +- std and per fold), ridge
regression's on the same folds and the choice; OUT/<target>_<head>/ holds the trials,
table.csv, chosen.yaml and tune.json. A rerun skips finished trials.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench_fisv_avg import mean_features

from aqa_pipeline.features import write_features
from aqa_pipeline.launch import LaunchOptions
from aqa_pipeline.train.losses import DAE_LOSSES
from aqa_pipeline.train.tune import make_space, plan_tune, run_tune

ROOT = Path(__file__).resolve().parents[1]
WD_SUM = [1e-3, 1e-2, 3e-2, 1e-1]
WD_MEAN = [1e-4, 3e-4, 3e-3, 3e-2]
LRS = [3e-4, 1e-3]


def space(head: str, losses: list[str], epochs: list[int]) -> list[dict[str, list]]:
    """The grids of `head` (see the module docstring)."""
    common = {"data.standardize": [False, True], "optim.lr": LRS, "train.epochs": epochs}
    if head == "mlp":
        return [{"optim.weight_decay": WD_MEAN, **common}]
    return [{"head.loss": [loss], "optim.weight_decay": WD_SUM if loss == "stable" else WD_MEAN,
             **common} for loss in losses]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--fisv", type=Path, default=ROOT.parent / "shared" / "data" / "fisv")
    ap.add_argument("--out", type=Path, default=Path("fisv_avg_select"))
    ap.add_argument("--heads", nargs="+", choices=["dae", "mlp"], default=["dae", "mlp"])
    ap.add_argument("--targets", nargs="+", choices=["tes", "pcs"], default=["tes", "pcs"])
    ap.add_argument("--epochs", type=int, nargs="+", default=[50, 100, 150, 200, 300])
    ap.add_argument("--dae-losses", nargs="+", choices=DAE_LOSSES, default=list(DAE_LOSSES))
    ap.add_argument("--trials", type=int, default=None, help="random settings per tune")
    ap.add_argument("--seed", type=int, default=0, help="the --trials draw and the CV folds")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=1, help="seeds per CV run")
    ap.add_argument("--jobs", type=int, default=1, help="trials at once (processes)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per trial")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "fisv_mean.h5"
    if not cache.exists():
        write_features(cache, mean_features(args.fisv))
    overrides = [f"train.threads={args.threads}"] if args.threads else []
    for target in args.targets:
        labels = f"fisv:{args.fisv}?target={target.upper()}"
        for head in args.heads:
            print(f"\n== {target.upper()} {head} ==", flush=True)
            plan = plan_tune(f"{head}_fisv_{target}", cache, labels, args.out / f"{target}_{head}",
                             make_space(grids=space(head, args.dae_losses, args.epochs)),
                             overrides=overrides, trials=args.trials, seed=args.seed,
                             folds=args.folds, seeds=args.seeds)  # fmt: skip
            result = run_tune(plan, LaunchOptions(), jobs=args.jobs)
            print(result.table)
            c, r = result.chosen, result.ridge
            if c is None:
                print(f"{target.upper()} {head}: nothing chosen ({len(result.failed)} failed)")
                continue
            print(f"BEST {target.upper()} {head}: {c['setting']} CV Spearman "
                  f"{c['cv_spearman']:.4f} +- {c['cv_spearman_std']:.4f} (ridge "
                  f"{r['cv_spearman']:.4f}); {plan.tune_dir / 'chosen.yaml'}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
