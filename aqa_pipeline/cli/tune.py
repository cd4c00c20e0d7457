"""`aqa tune`: choose a head's settings by k-fold CV on the training split only (see
aqa_pipeline.train.tune), then optionally train the chosen config (--then-train)."""

from __future__ import annotations

from pathlib import Path

import click

from aqa_pipeline.cli.train import print_summary
from aqa_pipeline.datasets import list_adapters
from aqa_pipeline.errors import EXIT_OK, EXIT_USER_ERROR
from aqa_pipeline.launch import LaunchOptions, launcher_options
from aqa_pipeline.results import rundir
from aqa_pipeline.train.tune import make_space, parse_grid, plan_tune, read_space, run_tune


@click.command("tune")
@click.option(
    "--config",
    "config_path",
    required=True,
    help="Train config to tune: a YAML file or a shipped name (aqa list configs).",
)
@click.option(
    "--features",
    required=True,
    type=click.Path(),
    help="Feature cache (HDF5); only the training videos need features.",
)
@click.option(
    "--labels",
    default=None,
    metavar="SPEC",
    help=f"Labels: NAME:PATH[?key=value&...] with NAME one of "
    f"{', '.join(list_adapters())}. Default: the config's labels. Only the "
    "first fold's training rows are used.",
)
@click.option(
    "--out",
    "tune_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder: trials/<id>/ (a run directory per trial), table.csv, "
    "chosen.yaml, tune.json. A rerun skips finished trials.",
)
@click.option(
    "--grid",
    "grid",
    multiple=True,
    metavar="KEY=V1,V2,...",
    help="A key and its values (YAML scalars), e.g. --grid optim.lr=1e-4,3e-4 "
    "(repeatable; the settings are the product).",
)
@click.option(
    "--space",
    "space_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="YAML file {key: [values]} (or a list of such grids, run one after the "
    "other); --grid keys are added to each grid.",
)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=None,
    help="Draw N settings at random (seeded) instead of the full grid.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seeds the --trials draw and the CV folds.",
)
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="k of the k-fold CV on the training rows.",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Seeds per CV run (train.seed .. train.seed + N - 1).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value before tuning, e.g. --set train.batch_size=32.",
)
@click.option(
    "--then-train",
    "then_train",
    default=None,
    type=click.Path(file_okay=False),
    help="Then train the chosen config on the full training split with the usual "
    "protocols and the ridge baseline, into this run directory.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Local: trials at once, each in its own process with cores / N threads.",
)
@launcher_options(work="sweep")
def tune(
    config_path: str,
    features: str,
    labels: str | None,
    tune_dir: str,
    grid: tuple[str, ...],
    space_file: str | None,
    trials: int | None,
    seed: int,
    folds: int,
    seeds: int,
    overrides: tuple[str, ...],
    then_train: str | None,
    jobs: int,
    launch: LaunchOptions,
) -> None:
    """Choose a head's settings by k-fold cross-validation on the training split only.

    Every setting of the space is trained on k seeded folds of the labels' training rows
    (the test rows take no part) and scored by its CV Spearman (final epoch), beside ridge
    regression on the same folds; the best CV mean is chosen and written to chosen.yaml.
    Every setting is validated before any training (a bad value exits 1 naming the key).

    \b
    aqa tune --config dae_mtl_aqa --features mtl.h5 --labels mtl_aqa:DIR --out tune/dae \\
        --grid optim.lr=1e-4,3e-4,1e-3 --grid train.epochs=50,100,200 --jobs 2
    """
    if jobs > 1 and launch.launcher == "slurm":
        raise click.UsageError("--jobs is for --launcher local; on Slurm every trial is a task")
    space = make_space(parse_grid(grid), read_space(space_file) if space_file else ())
    plan = plan_tune(config_path, features, labels, Path(tune_dir), space,
                     overrides=overrides, trials=trials, seed=seed, folds=folds, seeds=seeds)  # fmt: skip
    result = run_tune(plan, launch, jobs, then_train)
    if result.submitted:
        click.echo("not waiting (--no-wait); when the tasks have ended, rerun this command: "
                   "finished trials are skipped, the table and the choice are written")  # fmt: skip
        click.get_current_context().exit(EXIT_OK)
    click.echo(result.table)
    for tid, outcome in result.failed:
        click.echo(f"trial {tid} failed: {outcome.error}", err=True)
        for path in outcome.logs:
            click.echo(f"  log: {path}", err=True)
    if result.failed:
        click.echo(f"{len(result.failed)} trial(s) did not finish; nothing chosen. Rerun the "
                   "same command: finished trials are skipped", err=True)  # fmt: skip
        click.get_current_context().exit(EXIT_USER_ERROR)
    if result.chosen is None:
        click.echo("no trial has a defined CV Spearman; nothing chosen", err=True)
        click.get_current_context().exit(EXIT_USER_ERROR)
    c, r = result.chosen, result.ridge
    click.echo(f"chosen: trial {c['trial']} ({' '.join(f'{k}={v}' for k, v in c['setting'].items())}), "
               f"CV Spearman {c['cv_spearman']:.4f} +- {c['cv_spearman_std']:.4f}; ridge on the "
               f"same folds {r['cv_spearman']:.4f} +- {r['cv_spearman_std']:.4f}")  # fmt: skip
    click.echo(f"written: {plan.tune_dir / 'chosen.yaml'}, table.csv, tune.json")
    if result.then_train:
        run_dir = Path(result.then_train["run_dir"])
        print_summary(rundir.read_json(run_dir / "metrics.json"), run_dir)
