"""Stage 2 evaluation: metrics, protocols, reports, timelines, re-scoring saved heads.

`evaluate_run(run_dir, features=None, labels=None) -> dict` is the Python API.
"""

from __future__ import annotations

from typing import Any


def evaluate_run(run_dir: Any, features: Any = None, labels: Any = None, **kwargs: Any) -> dict:
    """See `aqa_pipeline.evaluate.run.evaluate_run`."""
    from aqa_pipeline.evaluate.run import evaluate_run as _evaluate_run

    return _evaluate_run(run_dir, features=features, labels=labels, **kwargs)


__all__ = ["evaluate_run"]
