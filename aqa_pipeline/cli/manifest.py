"""`aqa manifest ...`: extraction manifests from dataset annotations."""

from __future__ import annotations

import click

from aqa_pipeline.datasets.manifest import LAYOUTS, mtl_aqa_manifest


@click.group()
def manifest() -> None:
    """Write extraction manifests (video_id,path,start_frame,end_frame) from annotations."""


@manifest.command(name="mtl-aqa")
@click.option(
    "--annotations",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Folder with the MTL-AQA annotation and split pickles.",
)
@click.option("--root", required=True, help="Where the frame folders or event videos are.")
@click.option(
    "--layout",
    type=click.Choice(LAYOUTS),
    default="dives",
    show_default=True,
    help="dives: a frame folder per dive; events: a video/folder per event, trimmed.",
)
@click.option("--ext", default="", help="Suffix of the event sources with --layout events (.mp4).")
@click.option("--split", default=None, help="Keep only the dives of this split number.")
@click.option("-o", "--output", required=True, help="The manifest CSV to write.")
def mtl_aqa(
    annotations: str, root: str, layout: str, ext: str, split: str | None, output: str
) -> None:
    """Write an extraction manifest (video_id,path,start_frame,end_frame) for MTL-AQA."""
    n = mtl_aqa_manifest(annotations, root, output, layout, ext, split)
    click.echo(f"wrote {n} dives to {output}")
