"""Engines that run the work: here (in turn, or one process per GPU) or as Slurm job arrays.

- `launch_extraction(job, opts)`: an extraction as N shards, merged at the end.
- `launch_train_sweep(...)` / `tabulate_sweep(dir)`: configs x seeds (x folds) of heads.
- `@launcher_options`: the `--launcher/--shards/--gpus/--partition ...` click options.
"""

from aqa_pipeline.launch.options import LaunchOptions, launcher_options
from aqa_pipeline.launch.shards import launch_extraction
from aqa_pipeline.launch.sweep import format_sweep_table, launch_train_sweep, tabulate_sweep

__all__ = [
    "LaunchOptions",
    "format_sweep_table",
    "launch_extraction",
    "launch_train_sweep",
    "launcher_options",
    "tabulate_sweep",
]
