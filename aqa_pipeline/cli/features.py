"""`aqa features ...`: inspect, verify, merge and import feature caches."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from aqa_pipeline.errors import AqaError, SomeFailedError
from aqa_pipeline.features.importers import import_npy_dir
from aqa_pipeline.features.merge import merge_caches
from aqa_pipeline.features.store import read_features
from aqa_pipeline.features.verify import verify_cache

log = logging.getLogger(__name__)


@click.group()
def features() -> None:
    """Inspect, verify, merge and import feature caches."""


def cache_info(path: Path) -> dict:
    fs = read_features(path, clips=False)
    lengths = fs.clip_offsets[1:] - fs.clip_offsets[:-1]
    ok = lengths[fs.ok_mask]
    return {
        "path": str(path),
        "n_videos": fs.n_videos,
        "n_ok": int(fs.ok_mask.sum()),
        "n_failed": int((~fs.ok_mask).sum()),
        "n_clips": int(fs.clip_offsets[-1]),
        "clips_per_video": {"min": int(ok.min()), "max": int(ok.max()), "mean": float(ok.mean())}
        if len(ok)
        else None,
        "feature_dim": fs.feature_dim,
        "dtype": str(fs.video_features.dtype),
        "cache_key": fs.cache_key,
        "key_fields": fs.key_fields,
        "provenance": fs.provenance,
        "video_ids": fs.video_ids,
        "failed": fs.failed(),
    }


@features.command()
@click.argument("cache", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(cache: Path, as_json: bool) -> None:
    """Counts, feature dim, provenance and failed videos of CACHE."""
    data = cache_info(cache)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    kf = data["key_fields"]
    click.echo(f"{cache}")
    click.echo(f"  videos      {data['n_videos']} ({data['n_ok']} ok, {data['n_failed']} failed)")
    cpv = data["clips_per_video"]
    per = f" ({cpv['min']}-{cpv['max']} per video)" if cpv else ""
    click.echo(f"  clips       {data['n_clips']}{per}")
    click.echo(f"  features    {data['feature_dim']}-d {data['dtype']}")
    click.echo(f"  backbone    {kf.get('backbone')}")
    click.echo(f"  weights     {kf.get('weights')}")
    click.echo(f"  sampling    {kf.get('sampling')}")
    click.echo(f"  preprocess  {kf.get('preprocess')}")
    click.echo(f"  cache key   {data['cache_key']}")
    prov = data["provenance"]
    for m in prov.get("merged_from") or []:
        click.echo(
            f"  merged from {m['file']} shard={m['shard']} videos={m['n_videos']} key={m['cache_key']}"
        )
    for run in prov.get("runs") or []:
        click.echo(f"  run         {run.get('time')} on {run.get('host')}: {run.get('command')}")
    for f in data["failed"]:
        click.echo(f"  failed      {f['video_id']}: {f['error']}")


@features.command()
@click.argument("cache", type=click.Path(path_type=Path))
def verify(cache: Path) -> None:
    """Check CACHE's internal consistency (exit 1 listing the problems)."""
    problems = verify_cache(cache)
    if problems:
        for p in problems:
            click.echo(f"  {p}", err=True)
        raise AqaError(f"{cache}: {len(problems)} problem(s) found")
    click.echo(f"{cache}: ok")


@features.command()
@click.argument("shards", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
def merge(shards: tuple[Path, ...], output: Path) -> None:
    """Merge SHARDS (caches with the same key) into OUTPUT; refuses missing shards."""
    fs = merge_caches(list(shards), output)
    click.echo(f"{output}: {fs.n_videos} videos, {fs.n_clips} clips from {len(shards)} files")


@features.command(name="import")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["npy-dir"]), default="npy-dir", show_default=True
)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backbone", required=True, help="What made the features, e.g. swin3d_b.")
@click.option(
    "--weights-sha256", default=None, help="sha256 of the weights that made them, if known."
)
@click.option(
    "--weights-name",
    default=None,
    help="File name of those weights, e.g. swin_base_patch244_window877_kinetics600_22k.pth.",
)
@click.option(
    "--recipe",
    default=None,
    help="Extract config (path or name) whose sampling and preprocessing made them.",
)
@click.option(
    "--clip-len", default=None, type=int, help="Frames per clip (default: the recipe's, else 1)."
)
@click.option(
    "--dtype", default="float32", type=click.Choice(["float32", "float16"]), show_default=True
)
@click.option("--note", default="", help="Free text kept in the provenance (e.g. the release URL).")
def import_(folder, fmt, output, backbone, weights_sha256, weights_name, recipe, clip_len, dtype, note):  # fmt: skip
    """Import a released feature folder (per-video (T, D) .npy files) as a cache."""
    from aqa_pipeline.extract.recipe import load_recipe

    sampling = preprocess = None
    if recipe:
        parsed = load_recipe(recipe)
        sampling, preprocess = parsed.sampling.key(), parsed.preprocess.key()
    clip_len = clip_len or int((sampling or {}).get("clip_len", 1))
    fs = import_npy_dir(folder, output, backbone, clip_len, dtype, weights_sha256, weights_name,
                        sampling, preprocess, note)  # fmt: skip
    click.echo(f"{output}: {fs.n_videos} videos, {fs.n_clips} clips, {fs.feature_dim}-d")
    _warn_if_dim_contradicts(backbone, fs.feature_dim)
    if len(fs.failed()):
        for f in fs.failed():
            click.echo(f"  failed {f['video_id']}: {f['error']}", err=True)
        raise SomeFailedError(f"{len(fs.failed())} files could not be imported")


def _warn_if_dim_contradicts(backbone: str, dim: int) -> None:
    """Warn (stderr and the log) when `backbone` is a known backbone whose features are not
    `dim`-d; silent for unknown names and for architecture-dependent ones (swin3d)."""
    from aqa_pipeline.extract.backbones import get_spec  # features must not import extract

    try:
        expected = get_spec(backbone).feature_dim
    except AqaError:  # not a backbone of this tool (features made elsewhere): nothing to check
        return
    if expected is not None and expected != dim:
        message = (
            f"warning: the files hold {dim}-d features but --backbone {backbone} makes "
            f"{expected}-d features; check --backbone (it is recorded in the cache)"
        )
        log.warning(message)
        click.echo(message, err=True)
