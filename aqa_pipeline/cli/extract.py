"""`aqa extract`: the feature-extraction command."""

from __future__ import annotations

import json
from pathlib import Path

import click

from aqa_pipeline.config import list_configs
from aqa_pipeline.errors import SomeFailedError
from aqa_pipeline.extract.backbones import list_backbones
from aqa_pipeline.extract.decode import DECODERS
from aqa_pipeline.extract.recipe import load_recipe
from aqa_pipeline.extract.runner import (
    DecodeReport,
    ExtractJob,
    ExtractSummary,
    run_decode_only,
    run_extraction,
)
from aqa_pipeline.extract.shards import launch_extraction
from aqa_pipeline.extract.sources import parse_shard
from aqa_pipeline.launch import LaunchOptions, launcher_options


def print_summary(summary: ExtractSummary) -> None:
    click.echo(
        f"{summary.output}: {summary.n_videos} videos, {summary.n_extracted} extracted, "
        f"{summary.n_skipped} already done, {summary.n_failed} failed, "
        f"{summary.n_clips} clips in the cache ({summary.seconds:.1f} s)"
    )
    for f in summary.failed:
        click.echo(f"  failed {f['video_id']}: {f['error']}", err=True)


def print_decode_report(r: DecodeReport, feeds: tuple[float, ...]) -> None:
    s = r.stats
    click.echo(
        f"decode only: {r.n_videos} videos ({r.n_failed} failed), {r.n_clips} clips, "
        f"{r.sampled_frames} sampled frames ({s.frames_decoded} decoded) in {r.seconds:.2f} s "
        f"with {r.workers} worker(s), decoder {r.decoder}"
    )
    click.echo(f"  {r.clips_per_s:.2f} clips/s, {r.frames_per_s:.1f} sampled frames/s")
    click.echo(
        f"  worker time by stage (summed over workers): probe {s.probe_s:.2f} s, decode "
        f"{s.decode_s:.2f} s, YUV->RGB {s.convert_s:.2f} s, resize/crop {s.preprocess_s:.2f} s "
        f"({r.resize_impl}, {r.preprocess_device}), whole {s.busy_s:.2f} s; "
        f"{s.seeks} seeks"
        + (f", {s.fallbacks} fallbacks to decoding in order" if s.fallbacks else "")
    )
    if r.preprocess_device != "workers":
        click.echo(f"  resize/crop on {r.preprocess_device}: {r.device_preprocess_s:.2f} s")
    rate = r.per_worker_clips_per_s
    if rate > 0:
        click.echo(f"  one decode worker delivers {rate:.2f} clips/s of its own time")
        for feed in feeds:
            click.echo(
                f"  to feed {feed:g} clips/s you need {r.workers_for(feed)} decode workers "
                "(a core each, plus FFmpeg's threads)"
            )
    for f in r.failed:
        click.echo(f"  failed {f['video_id']}: {f['error']}", err=True)


@click.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    help=f"Recipe: a YAML file or a shipped name ({', '.join(list_configs('extract'))}; "
    "aqa list recipes).",
)
@click.option(
    "--input",
    "input_path",
    required=True,
    help="A folder of videos / frame folders, or a manifest CSV video_id,path[,start_frame,end_frame].",
)
@click.option(
    "--output",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HDF5 cache to write (resumed if present); required unless --decode-only.",
)
@click.option(
    "--backbone",
    default=None,
    help=f"Override the recipe's backbone ({', '.join(list_backbones())}; aqa list backbones).",
)
@click.option(
    "--weights",
    default=None,
    type=click.Path(),
    help="Pretrained weights: a file, or a local Hugging Face snapshot folder for the hf "
    "backbones (its sha256 is recorded).",
)
@click.option(
    "--random-init",
    is_flag=True,
    help="Use a seeded random backbone (recorded in the cache); for tests and demos.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option(
    "--batch-size",
    default=None,
    type=click.IntRange(min=1),
    help="Clips per backbone batch (default: the recipe's, else 8).",
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(min=0),
    help="Decode worker processes (default: the recipe's, else 2).",
)
@click.option("--shard", default=None, help="Process only part K of N (0-based K), e.g. 0/4.")
@click.option(
    "--dtype",
    default="float32",
    type=click.Choice(["float32", "float16"]),
    show_default=True,
    help="Storage dtype of the features.",
)
@click.option(
    "--amp",
    default="auto",
    type=click.Choice(["auto", "none", "bf16", "fp16"]),
    show_default=True,
    help="Mixed precision (auto: bf16/fp16 on CUDA, none on CPU).",
)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the backbone.")
@click.option(
    "--allow-unsafe-pickle",
    is_flag=True,
    help="Load a weights file that needs full unpickling (only for files you trust).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config entry, e.g. --set sampling.clip_len=32.",
)
@click.option(
    "--decoder",
    default="pyav",
    type=click.Choice(DECODERS),
    show_default=True,
    help="Video decoder; torchcodec is optional: pip install 'aqa-pipeline[torchcodec]'.",
)
@click.option(
    "--preprocess-device",
    default=None,
    metavar="DEVICE",
    help="Decode at native size and resize, crop and normalise on DEVICE (cuda, cuda:N, cpu) "
    "instead of in the decode workers.",
)
@click.option(
    "--seek/--no-seek",
    default=True,
    show_default=True,
    help="Skip the frames between sparse clips by seeking to keyframes, where the file's "
    "timestamps make that exact (the same frames either way).",
)
@click.option(
    "--decode-only",
    is_flag=True,
    help="Run sources, sampling, decoding and preprocessing without a backbone (no weights, "
    "no cache) and report clips/s, frames/s, time per stage and the workers a rate needs.",
)
@click.option(
    "--feed",
    "feeds",
    multiple=True,
    type=click.FloatRange(min=0, min_open=True),
    default=(100.0,),
    show_default=True,
    metavar="CLIPS_PER_S",
    help="With --decode-only: say how many decode workers feed this many clips/s.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: only on a terminal)."
)
@launcher_options(work="extraction")
def extract(config_path, input_path, output, backbone, weights, random_init, device, batch_size,
            workers, shard, dtype, amp, compile_, allow_unsafe_pickle, decoder, preprocess_device,
            seek, decode_only, feeds, overrides, as_json, progress, launch: LaunchOptions):  # fmt: skip
    """Run a frozen backbone over clip-sampled frames and cache the features in HDF5.

    Resumable: a rerun skips finished videos. A video that fails is recorded with its reason
    and the command exits 4; a cache made with another recipe or backbone exits 3.
    Without a terminal, progress is a log line every 100 videos or 30 s (environment:
    AQA_PROGRESS_EVERY, AQA_PROGRESS_SECONDS).
    """
    if weights and random_init:
        raise click.UsageError("give --weights or --random-init, not both")
    if output is None and not decode_only:
        raise click.UsageError("Missing option '--output' (needed unless --decode-only).")
    if decode_only and (launch.launcher == "slurm" or launch.shards or launch.gpus):
        raise click.UsageError("--decode-only runs here: give no --launcher slurm/--shards/--gpus")
    recipe = load_recipe(config_path, overrides, backbone=backbone)
    job = ExtractJob(
        recipe=recipe,
        input=str(input_path),
        output=output,
        weights=weights,
        random_init=random_init,
        device=device,
        batch_size=batch_size or recipe.extract.batch_size,
        workers=workers if workers is not None else recipe.extract.workers,
        shard=parse_shard(shard),
        dtype=dtype,
        amp=amp,
        compile=compile_,
        allow_unsafe_pickle=allow_unsafe_pickle,
        decoder=decoder,
        preprocess_device=preprocess_device,
        seek=seek,
    )
    if decode_only:
        report = run_decode_only(job, progress=progress)
        if as_json:
            click.echo(json.dumps(report.to_dict(tuple(feeds)), indent=2))
        else:
            print_decode_report(report, tuple(feeds))
        if report.n_failed:
            raise SomeFailedError(f"{report.n_failed} of {report.n_videos} videos failed")
        return
    if launch.launcher == "slurm" or launch.shards or launch.gpus:
        click.get_current_context().exit(launch_extraction(job, launch, progress))
    summary = run_extraction(job, progress=progress)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        print_summary(summary)
    if summary.n_failed:
        raise SomeFailedError(
            f"{summary.n_failed} of {summary.n_videos} videos failed (recorded in {output})"
        )
