"""`aqa evaluate`: metrics and report of a run; re-scoring on a cache; timelines."""

from __future__ import annotations

from pathlib import Path

import click

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
    help="Where re-scoring writes (default RUN_DIR/rescore/<cache name>).",
)
def evaluate(
    run_dir: str | None,
    sweep: str | None,
    features: str | None,
    labels: str | None,
    timeline: str | None,
    protocol: str,
    seed: int | None,
    out: str | None,
) -> None:
    """Recompute metrics.json and report.md of a run (from predictions.csv), or re-score
    its saved heads on a feature cache. Exit 3 when the cache does not fit the heads."""
    from aqa_pipeline.cli.train import print_summary
    from aqa_pipeline.evaluate.run import evaluate_run
    from aqa_pipeline.train.sweep import format_sweep_table, tabulate_sweep

    if sweep:
        click.echo(format_sweep_table(tabulate_sweep(Path(sweep))))
        return
    if not run_dir:
        raise click.UsageError("give --run-dir or --sweep")

    metrics = evaluate_run(run_dir, features, labels, timeline, protocol, seed, out)
    print_summary(metrics, Path(metrics["report"]).parent)
