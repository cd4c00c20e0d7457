"""The `aqa` command-line tool: one click group, one module per subcommand family.

Exit codes are documented in `aqa_pipeline.errors`.
"""

from __future__ import annotations

import logging

import click

from aqa_pipeline import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aqa")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Action quality assessment: extract backbone features once, train heads many times.

    \b
    Exit codes: 0 ok, 1 user error, 2 usage error,
                3 cache/config mismatch, 4 some inputs failed (recorded).
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _register() -> None:
    from aqa_pipeline.datasets.manifest import manifest
    from aqa_pipeline.demo import demo
    from aqa_pipeline.evaluate.cli import evaluate
    from aqa_pipeline.extract.cli import extract
    from aqa_pipeline.features.cli import features
    from aqa_pipeline.train.cli import train

    for command in (extract, features, train, evaluate, manifest, demo):
        main.add_command(command)


_register()


if __name__ == "__main__":
    main()
