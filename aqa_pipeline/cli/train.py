"""`aqa train`: train a head on a feature cache; writes a run directory."""

from __future__ import annotations

import json
from pathlib import Path

import click

from aqa_pipeline.datasets import list_adapters
from aqa_pipeline.launch import LaunchOptions, launcher_options
from aqa_pipeline.results.report import fmt
from aqa_pipeline.train.sweep import launch_train_sweep


def print_summary(metrics: dict, run_dir: Path) -> None:
    for name, d in metrics["protocols"].items():
        lo, hi = d["spearman_ci95"]
        click.echo(
            f"{name:>13}: Spearman {fmt(d['spearman'])} +- {fmt(d['spearman_std'])} "
            f"(95% CI {fmt(lo, 3)}..{fmt(hi, 3)}), R-l2 {fmt(d['rl2'], 3)}, "
            f"MSE {fmt(d['mse'], 3)}"
        )
    if "baseline" in metrics:
        b, vs = metrics["baseline"], metrics["vs_baseline"]
        lo, hi = vs["ci95"]
        click.echo(
            f"ridge baseline: Spearman {fmt(b['spearman'])}; head (final) minus ridge "
            f"{fmt(vs['difference'], sign=True)} (paired 95% CI {fmt(lo, 3, True)}.."
            f"{fmt(hi, 3, True)})"
        )
    if "coverage_90" in metrics:
        click.echo(
            f"        sigma: NLL {fmt(metrics['nll'], 3)}, coverage 50% "
            f"{fmt(metrics['coverage_50'], 3)}, 90% {fmt(metrics['coverage_90'], 3)}, "
            f"Spearman(sigma, |err|) {fmt(metrics['sigma_error_spearman'], 3)}"
        )
    for warning in metrics.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"best_on_test selects epochs on the test set (what papers report); report: "
        f"{run_dir / 'report.md'}"
    )


# an authors' head checkpoint that needs full unpickling (`aqa train --init-from`, single
# runs only, and `aqa evaluate --checkpoint`)
allow_unsafe_pickle_option = click.option(
    "--allow-unsafe-pickle",
    is_flag=True,
    help="Read a head checkpoint that needs full unpickling (e.g. one storing numpy scalars, "
    "as InterAQA's and the DAE's scripts save). It can run arbitrary code: only for files you "
    "trust.",
)


@click.command("train")
@click.option(
    "--config",
    "config_paths",
    required=True,
    multiple=True,
    help="Train config: a YAML file or a shipped name (dae_mtl_aqa; see aqa list configs). "
    "Repeat it for a sweep "
    "(configs x seeds x folds, one run directory each under --run-dir).",
)
@click.option(
    "--features",
    required=True,
    type=click.Path(),
    help="Feature cache (HDF5) written by aqa extract / aqa features import.",
)
@click.option(
    "--labels",
    default=None,
    metavar="SPEC",
    help=f"Labels: NAME:PATH[?key=value&...] with NAME one of {', '.join(list_adapters())} "
    "(aqa list datasets), e.g. jigsaws:DIR?task=Suturing&fold=0, fisv:DIR?target=TES, "
    "csv:FILE.csv. Default: the config's labels.",
)
@click.option(
    "--run-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder (config, log, epochs.csv, predictions.csv, metrics.json, "
    "heads.safetensors, report.md).",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=None,
    help="Train N seeds (train.seed .. train.seed + N - 1); default: the config's.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set optim.lr=1e-3 (repeatable).",
)
@click.option(
    "--folds",
    default=None,
    metavar="0,1,...",
    help="Sweeps: one run per listed fold (0-based) instead of all folds in one run.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace a finished run in --run-dir (only once the new run completes).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue a killed run in --run-dir from its checkpoints (saved every "
    "train.checkpoint_minutes); the config must be the one it started with (else exit 3).",
)
@click.option(
    "--init-from",
    default=None,
    type=click.Path(dir_okay=False),
    help="Start every seed from a head checkpoint released by the head's authors (GDLT, "
    "InterAQA, DAE; sets train.init_from; its sha256 goes to environment.json).",
)
@allow_unsafe_pickle_option
@launcher_options(work="sweep")
def train(
    config_paths: tuple[str, ...],
    features: str,
    labels: str | None,
    run_dir: str,
    seeds: int | None,
    overrides: tuple[str, ...],
    folds: str | None,
    overwrite: bool,
    resume: bool,
    init_from: str | None,
    allow_unsafe_pickle: bool,
    launch: LaunchOptions,
) -> None:
    """Train a head on cached features for every fold and seed, then evaluate it.

    Reports three protocols: final (last epoch), val (epoch chosen on a seeded held-out part
    of train) and best_on_test (epoch chosen on the test set, as papers report: optimistic).
    Exit 3 when the cache's provenance differs from the config's features.require.
    """
    from aqa_pipeline.train.config import load_train_config
    from aqa_pipeline.train.runner import run_training

    if init_from:
        overrides = (*overrides, f"train.init_from={json.dumps(str(Path(init_from).resolve()))}")
    if len(config_paths) > 1 or folds or launch.launcher == "slurm":
        if allow_unsafe_pickle:
            raise click.UsageError("--allow-unsafe-pickle is for a single run")
        if resume or overwrite:
            raise click.UsageError(
                "--resume and --overwrite are for a single run; a sweep rerun skips its "
                "finished runs and resumes killed ones"
            )
        fold_list = [int(f) for f in folds.split(",")] if folds else None
        code = launch_train_sweep(
            list(config_paths), seeds, fold_list, features,
            labels, Path(run_dir), launch, overrides,
        )  # fmt: skip
        click.get_current_context().exit(code)
    cfg = load_train_config(config_paths[0], overrides, seeds)
    metrics = run_training(cfg, features, labels, Path(run_dir), resume=resume, overwrite=overwrite,
                           allow_unsafe_pickle=allow_unsafe_pickle)  # fmt: skip
    print_summary(metrics, Path(run_dir))
