"""Where and how the work runs: the `--launcher ...` command-line options.

`@launcher_options` adds the options to a click command and hands the command one
`launch: LaunchOptions` argument instead of a dozen keyword arguments:

    @click.command()
    @launcher_options
    def extract(..., launch: LaunchOptions):
        sys.exit(launch_extraction(job, launch))   # aqa_pipeline.extract.shards

`@launcher_options(work="sweep")` words the help for `aqa train` sweeps and leaves out the
options that only mean something to an extraction (--shards, --gpus).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import click

from aqa_pipeline.errors import AqaError

LAUNCHERS = ("local", "slurm")
# Options that only mean something to Slurm (named for error messages).
SLURM_ONLY = {
    "partition": "--partition",
    "gpus_per_task": "--gpus-per-task",
    "cpus_per_task": "--cpus-per-task",
    "mem": "--mem",
    "time_min": "--time-min",
    "array_parallelism": "--array-parallelism",
    "slurm_set": "--slurm-set",
}


@dataclass
class LaunchOptions:
    """How to run N shards (or sweep runs): here, one process per GPU, or as a Slurm array."""

    launcher: str = "local"
    shards: int | None = None  # None: 1, or one per GPU with --gpus
    gpus: str | None = None  # local only: "all" or device ids "0,1"
    partition: str | None = None
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None  # a Slurm size: "16G", "500M" (plain numbers are MB)
    time_min: int | None = None  # per task; None: DEFAULT_TIME_MIN
    array_parallelism: int | None = None
    slurm_set: dict[str, Any] = field(default_factory=dict)
    wait: bool = False
    log_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise AqaError(f"--launcher must be one of {LAUNCHERS}, got {self.launcher!r}")
        if self.shards is not None and self.shards < 1:
            raise AqaError(f"--shards must be at least 1, got {self.shards}")
        if self.launcher == "local":
            given = [flag for name, flag in SLURM_ONLY.items() if getattr(self, name)]
            if given:
                raise AqaError(f"{', '.join(given)} only apply to --launcher slurm")
        elif self.gpus is not None:
            raise AqaError("--gpus is for --launcher local; on Slurm use --gpus-per-task")
        if self.mem is not None:
            mem_gb(self.mem)  # validates early, with a clear message


def parse_key_values(items: Iterable[str], flag: str = "--slurm-set") -> dict[str, Any]:
    """["qos=high", "exclusive"] -> {"qos": "high", "exclusive": True} (a bare key is a flag)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not key:
            raise AqaError(f"{flag} expects key=value (an sbatch option), got {item!r}")
        out[key] = value if sep else True
    return out


_MEM_UNITS = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}


def mem_gb(text: str) -> float:
    """A Slurm memory size ("16G", "500M", "2T"; plain numbers are MB) in GB."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise AqaError(f"--mem expects a size like 16G or 500M, got {text!r}")
    number, unit = float(match.group(1)), (match.group(2) or "M").upper()
    return number * _MEM_UNITS[unit]


# How the help of the launcher options speaks of the work, per command.
WORKS = ("extraction", "sweep")


def launcher_options(
    command: Callable[..., Any] | None = None, *, work: str = "extraction"
) -> Callable[..., Any]:
    """Add the launcher options to a click command; it receives them as `launch`.

    `work` words the help for the command: "extraction" (`aqa extract`: shards, decode
    workers, per-GPU processes) or "sweep" (`aqa train`: one task per sweep run; there is no
    --shards or --gpus, and `launch` keeps their defaults). Use it bare (`@launcher_options`,
    extraction) or called (`@launcher_options(work="sweep")`).
    """
    if work not in WORKS:
        raise ValueError(f"launcher_options: work must be one of {WORKS}, got {work!r}")
    if command is None:
        return functools.partial(_add_launcher_options, work=work)
    return _add_launcher_options(command, work)


def _add_launcher_options(command: Callable[..., Any], work: str) -> Callable[..., Any]:
    extraction = work == "extraction"
    offered = {f.name for f in fields(LaunchOptions)}
    if not extraction:
        offered -= {"shards", "gpus"}  # a sweep runs one task per run, here in turn

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in offered}
        values["slurm_set"] = parse_key_values(values["slurm_set"])
        return command(*args, launch=LaunchOptions(**values), **kwargs)

    if extraction:
        launcher_help = "local: here (one process per GPU with --gpus); slurm: one job array."
        task = "array task (one shard)"
        cpus_help = "Slurm: CPUs per array task (decode workers + 1)."
        wait_help = "Slurm: follow the tasks until they end, report and merge the shards."
        log_help = ("Where task logs go (Slurm: on a filesystem the nodes share). "
                    "Default: beside the output.")  # fmt: skip
    else:
        launcher_help = "local: the sweep runs here, one after the other; slurm: one job array."
        task = "array task (one sweep run)"
        cpus_help = "Slurm: CPUs per array task (one sweep run)."
        wait_help = "Slurm: follow the sweep runs until they end, then print their table."
        log_help = ("Where task logs go (Slurm: on a filesystem the nodes share). "
                    "Default: <--run-dir>/logs.")  # fmt: skip

    options = [
        click.option("--launcher", type=click.Choice(LAUNCHERS), default="local", show_default=True,
                     help=launcher_help),
    ]  # fmt: skip
    if extraction:
        options += [
            click.option("--shards", type=click.IntRange(min=1), default=None,
                         help="Split the work into N shards, merged at the end "
                              "(default 1, or one per GPU with --gpus)."),
            click.option("--gpus", default=None, metavar="all|IDS",
                         help="Local: one process per GPU ('all' visible ones, or ids like 0,1), "
                              "each with its own CUDA_VISIBLE_DEVICES."),
        ]  # fmt: skip
    options += [
        click.option("--partition", default=None, help="Slurm partition."),
        click.option("--gpus-per-task", type=click.IntRange(min=0), default=None,
                     help=f"Slurm: GPUs per {task}."),
        click.option("--cpus-per-task", type=click.IntRange(min=1), default=None, help=cpus_help),
        click.option("--mem", default=None, metavar="SIZE",
                     help="Slurm: memory per task, e.g. 16G."),
        click.option("--time-min", type=click.IntRange(min=1), default=None,
                     help="Slurm: time limit per task in minutes (default 120); a task that "
                          "reaches it is requeued and resumes."),
        click.option("--array-parallelism", type=click.IntRange(min=1), default=None,
                     help="Slurm: at most K array tasks running at once."),
        click.option("--slurm-set", multiple=True, metavar="KEY=VALUE",
                     help="Slurm: any other sbatch option, e.g. --slurm-set qos=high "
                          "--slurm-set account=lab (repeatable)."),
        click.option("--wait/--no-wait", default=False, show_default=True, help=wait_help),
        click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help=log_help),
    ]  # fmt: skip
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
