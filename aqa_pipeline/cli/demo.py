"""`aqa demo`: the whole pipeline on a built-in synthetic dataset, on CPU, in minutes.

Squares move at different speeds; a video's score is 10 x its speed (pixels per frame).
The demo encodes the videos, extracts features with a seeded random backbone (flagged as
such in the cache), trains a DAE head on the cached features, evaluates it and prints the
test Spearman and the report path.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from aqa_pipeline.cli.extract import print_summary
from aqa_pipeline.cli.features import cache_info
from aqa_pipeline.config import load_config
from aqa_pipeline.evaluate import evaluate_run
from aqa_pipeline.extract.recipe import load_recipe
from aqa_pipeline.extract.runner import ExtractJob, run_extraction
from aqa_pipeline.synthetic import make_demo_videos
from aqa_pipeline.train import run_training

TRAIN_CONFIG = "dae_demo"


def run_demo(out: Path, n_videos: int = 64, seed: int = 0, workers: int = 1) -> dict:
    out = Path(out)
    t0 = time.perf_counter()
    videos = out / "videos"
    labels = videos / "labels.csv"
    if not labels.exists():
        click.echo(f"writing {n_videos} synthetic videos to {videos}")
        labels = make_demo_videos(videos, n_videos=n_videos, seed=seed)
    recipe = load_recipe("demo")
    cache = out / "features.h5"
    job = ExtractJob(recipe=recipe, input=str(videos), output=cache, random_init=True,
                     batch_size=recipe.extract.batch_size, workers=workers)  # fmt: skip
    summary = run_extraction(job)
    print_summary(summary)
    info = cache_info(cache)
    click.echo(
        f"cache: {info['n_videos']} videos, {info['n_clips']} clips, {info['feature_dim']}-d "
        f"({info['key_fields']['backbone']['name']}, random init: "
        f"{info['key_fields']['weights']['random_init']})"
    )
    run_dir = out / "run"
    click.echo(f"training DAE on the cached features -> {run_dir}")
    run_training(
        load_config(TRAIN_CONFIG, kind="train"), cache, f"csv:{labels}", run_dir, overwrite=True
    )
    metrics = evaluate_run(run_dir)
    return {
        "cache": str(cache),
        "labels": str(labels),
        "run_dir": str(run_dir),
        "report": str(run_dir / "report.md"),
        "metrics": metrics,
        "seconds": time.perf_counter() - t0,
    }


@click.command()
@click.option(
    "--out",
    default="demo_out",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the videos, cache and run directory go.",
)
@click.option("--n-videos", default=64, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="Decode worker processes.")
def demo(out: Path, n_videos: int, seed: int, workers: int) -> None:
    """Synthesize a small video set, extract, train DAE, evaluate: the whole job."""
    result = run_demo(out, n_videos, seed, workers)
    m = result["metrics"]
    click.echo(
        f"test Spearman (final epoch, mean over seeds {m['seeds']}): {m['spearman']:.3f} "
        f"+- {m['spearman_std']:.3f}; val-selected {m['spearman_val']:.3f}; "
        f"best-on-test {m['spearman_best_on_test']:.3f} (optimistic, what papers report)"
    )
    click.echo(f"report: {result['report']}")
    click.echo(f"demo finished in {result['seconds']:.1f} s")
