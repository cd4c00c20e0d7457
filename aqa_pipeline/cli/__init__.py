"""The `aqa` command-line tool: every command lives in this package, one module per family.

    extract.py   aqa extract                   features.py  aqa features info|verify|merge|import
    train.py     aqa train (runs and sweeps)   evaluate.py  aqa evaluate
    manifest.py  aqa manifest mtl-aqa          listing.py   aqa list backbones|weights|...
    tune.py      aqa tune (CV on train only)   demo.py      aqa demo

Commands parse their configs once, here at the boundary, and hand typed objects to the
stages below. Exit codes are documented in `aqa_pipeline.errors`.
"""

from __future__ import annotations

import logging

import click

from aqa_pipeline import __version__
from aqa_pipeline.errors import Interrupted


class AqaGroup(click.Group):
    """The command group; Ctrl-C anywhere exits 130 with a message, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted("interrupted (Ctrl-C); finished work is kept") from None


@click.group(cls=AqaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aqa")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Action quality assessment: extract backbone features once, train heads many times.

    \b
    Exit codes: 0 ok, 1 user error, 2 usage error,
                3 cache/config mismatch, 4 some inputs failed (recorded),
                130 interrupted (finished work is kept; a rerun resumes).
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _register() -> None:
    from aqa_pipeline.cli.demo import demo
    from aqa_pipeline.cli.evaluate import evaluate
    from aqa_pipeline.cli.extract import extract
    from aqa_pipeline.cli.features import features
    from aqa_pipeline.cli.listing import list_
    from aqa_pipeline.cli.manifest import manifest
    from aqa_pipeline.cli.train import train
    from aqa_pipeline.cli.tune import tune

    for command in (extract, features, train, tune, evaluate, manifest, list_, demo):
        main.add_command(command)


_register()
