"""`aqa evaluate`: metrics and report of a run; re-scoring on a cache; timelines; scoring an
authors' head checkpoint (`--checkpoint`)."""

from __future__ import annotations

from pathlib import Path

import click

from aqa_pipeline.cli.train import allow_unsafe_pickle_option
from aqa_pipeline.results.predictions import PROTOCOLS


@click.command("evaluate")
@click.option(
    "--run-dir",
    default=None,
    type=click.Path(file_okay=False, exists=True),
    help="A run directory written by aqa train.",
)
@click.option(
    "--sweep",
    default=None,
    type=click.Path(file_okay=False, exists=True),
    help="Tabulate every run of a sweep (aqa train with several configs or --launcher slurm).",
)
@click.option(
    "--features",
    default=None,
    type=click.Path(),
    help="Re-score the saved heads on this cache (the training one or another).",
)
@click.option(
    "--labels",
    default=None,
    metavar="SPEC",
    help="Labels for re-scoring (NAME:PATH[?key=value&...]; default: the run's).",
)
@click.option(
    "--timeline",
    default=None,
    metavar="VIDEO_ID|all",
    help="Draw clip weight/score timelines (heads with per-clip outputs).",
)
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default="final",
    show_default=True,
    help="Which snapshot the timelines show.",
)
@click.option("--seed", type=int, default=None, help="Seed of the timelines (default: the first).")
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="Where re-scoring writes (default RUN_DIR/rescore/<cache name>); with --checkpoint, "
    "the output folder (required).",
)
@click.option(
    "--checkpoint",
    default=None,
    type=click.Path(dir_okay=False),
    help="Score a head checkpoint released by its authors (GDLT, InterAQA, DAE; their "
    "pickle, `module.` prefixes accepted) on --features; needs --config (the head, its "
    "options and the label scale it was trained with) and --out.",
)
@click.option(
    "--config",
    "config_path",
    default=None,
    help="With --checkpoint: the train config (a YAML file or a shipped name, e.g. gdlt_rg_ball).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="With --checkpoint: override a config value (repeatable).",
)
@allow_unsafe_pickle_option
def evaluate(
    run_dir: str | None,
    sweep: str | None,
    features: str | None,
    labels: str | None,
    timeline: str | None,
    protocol: str,
    seed: int | None,
    out: str | None,
    checkpoint: str | None,
    config_path: str | None,
    overrides: tuple[str, ...],
    allow_unsafe_pickle: bool,
) -> None:
    """Recompute metrics.json and report.md of a run (from predictions.csv), re-score its
    saved heads on a feature cache, or score an authors' head checkpoint on a cache. Exit 3
    when the cache does not fit the heads."""
    from aqa_pipeline.cli.train import print_summary
    from aqa_pipeline.evaluate.run import evaluate_run
    from aqa_pipeline.train.sweep import format_sweep_table, tabulate_sweep

    if checkpoint:
        if run_dir or sweep or timeline:
            raise click.UsageError("--checkpoint scores a file: not with --run-dir, --sweep "
                                   "or --timeline")  # fmt: skip
        if not (config_path and features and out):
            raise click.UsageError("--checkpoint needs --config, --features and --out")
        from aqa_pipeline.evaluate.checkpoint import score_checkpoint
        from aqa_pipeline.train.config import load_train_config

        cfg = load_train_config(config_path, overrides)
        metrics = score_checkpoint(checkpoint, cfg, features, labels, out, allow_unsafe_pickle)
        print_summary(metrics, Path(out))
        return
    if config_path or overrides or allow_unsafe_pickle:
        raise click.UsageError("--config, --set and --allow-unsafe-pickle go with --checkpoint")
    if sweep:
        click.echo(format_sweep_table(tabulate_sweep(Path(sweep))))
        return
    if not run_dir:
        raise click.UsageError("give --run-dir, --sweep or --checkpoint")

    metrics = evaluate_run(run_dir, features, labels, timeline, protocol, seed, out)
    print_summary(metrics, Path(metrics["report"]).parent)
