"""Stage 2 training: heads on cached features, several seeds at once, honest protocols.

`run_training(config, features, labels, run_dir, seeds, resume) -> dict` is the Python API (see
`aqa_pipeline.train.runner`); `aqa train` is its command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_training(
    config: Any,
    features: Any,
    labels: Any,
    run_dir: str | Path,
    seeds: int | list[int] | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train and evaluate; returns metrics.json's content. See `runner.run_training`."""
    from aqa_pipeline.train.runner import run_training as _run_training

    return _run_training(config, features, labels, run_dir, seeds, resume, overwrite)


__all__ = ["run_training"]
