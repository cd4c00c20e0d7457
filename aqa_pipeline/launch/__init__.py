"""A generic engine that runs picklable callables (tasks) here, one process per GPU, or as a
Slurm job array, and reports a `TaskOutcome` per task. It knows nothing of what the tasks do:
extraction shards live in `aqa_pipeline.extract.shards`, head sweeps in
`aqa_pipeline.train.sweep`.

    options.py  LaunchOptions, @launcher_options (the --launcher/--shards/--gpus/... options)
    outcome.py  TaskOutcome: a task's result, or its error and logs
    local.py    run_in_turn (here), run_per_gpu (a worker per GPU), visible_gpus, assign_shards
    slurm.py    make_executor, submit_array, follow, collect, require_slurm, executor_parameters

A task is a zero-argument callable or a `(fn, arg)` pair locally; on Slurm, `submit_array`
calls fn(*row) for each row of its argument columns.
"""

from __future__ import annotations

from typing import Any

from aqa_pipeline.launch.options import LaunchOptions, launcher_options
from aqa_pipeline.launch.outcome import TaskOutcome
from aqa_pipeline.launch.slurm import (
    collect,
    executor_parameters,
    follow,
    make_executor,
    require_slurm,
    submit_array,
)

__all__ = [
    "LaunchOptions",
    "TaskOutcome",
    "assign_shards",
    "collect",
    "executor_parameters",
    "follow",
    "launcher_options",
    "make_executor",
    "require_slurm",
    "run_in_turn",
    "run_per_gpu",
    "submit_array",
    "visible_gpus",
]

# local.py is also the per-GPU worker (`python -m aqa_pipeline.launch.local`): importing it
# here, before runpy runs it as __main__, would make Python warn in every worker log.
_LOCAL = ("assign_shards", "run_in_turn", "run_per_gpu", "visible_gpus")


def __getattr__(name: str) -> Any:
    if name in _LOCAL:
        from aqa_pipeline.launch import local

        return getattr(local, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
