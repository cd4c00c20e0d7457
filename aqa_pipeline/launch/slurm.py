"""The Slurm engine: one submitit job array of picklable callables, one task each (a shard
of an extraction, a run of a sweep: the engine does not know which).

`make_executor(log_dir, opts, name)` makes the executor, `submit_array(executor, fn, *columns)`
submits task i as fn(columns[0][i], ...), `follow(jobs)` waits for them and returns a
`TaskOutcome` per task (`collect` reads one). Submission goes through submitit
(AutoExecutor(cluster="slurm") + map_array); each task pickles its callable's return value
next to its logs. A callable that subclasses submitit's `Checkpointable` is requeued on
preemption or time-out.

Following the tasks does not need Slurm's accounting store (`sacct`): a task has finished
when its result file exists and `squeue` shows it neither queued nor running, and has died
when `squeue` reports it ended (or no longer knows it) and no result appeared.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError
from tqdm import tqdm

from aqa_pipeline.errors import AqaError
from aqa_pipeline.launch.options import LaunchOptions, mem_gb
from aqa_pipeline.launch.outcome import TaskOutcome

DEFAULT_TIME_MIN = 120
POLL_S = 2.0
GRACE_S = 20.0  # how long an ended task may take to show its result file (shared filesystems)
# Slurm states after which a task runs no more (a requeued task is PENDING/REQUEUED again).
ENDED = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
    "BOOT_FAIL", "DEADLINE", "PREEMPTED", "REVOKED",
}  # fmt: skip


def require_slurm() -> None:
    """A clear error where there is no Slurm to submit to."""
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        raise AqaError(
            "--launcher slurm: sbatch/squeue are not on PATH. Run this on a Slurm login node, "
            "or start a one-node test cluster: sudo bash scripts/slurm/start-local-cluster.sh"
        )


def executor_parameters(opts: LaunchOptions, name: str) -> dict[str, Any]:
    """The submitit AutoExecutor parameters for `opts` (only what was given, plus the time)."""
    params: dict[str, Any] = {"name": name, "timeout_min": opts.time_min or DEFAULT_TIME_MIN}
    if opts.partition:
        params["slurm_partition"] = opts.partition
    if opts.gpus_per_task is not None:
        params["gpus_per_node"] = opts.gpus_per_task  # one task per job: per node == per task
    if opts.cpus_per_task is not None:
        params["cpus_per_task"] = opts.cpus_per_task
    if opts.mem is not None:
        params["mem_gb"] = mem_gb(opts.mem)
    if opts.array_parallelism is not None:
        params["slurm_array_parallelism"] = opts.array_parallelism
    if opts.slurm_set:
        params["slurm_additional_parameters"] = dict(opts.slurm_set)
    return params


def make_executor(log_dir: Path, opts: LaunchOptions, name: str) -> submitit.AutoExecutor:
    """An executor whose jobs keep their files (pickles, logs) under LOG_DIR/<job id>/."""
    require_slurm()
    executor = submitit.AutoExecutor(folder=Path(log_dir).resolve() / "%j", cluster="slurm")
    try:
        executor.update_parameters(**executor_parameters(opts, name))
    except (ValueError, NameError, AssertionError) as exc:  # submitit's checks of the values
        raise AqaError(f"invalid Slurm options: {exc}") from exc
    return executor


def submit_array(
    executor: submitit.AutoExecutor, fn: Callable[..., Any], *columns: Sequence[Any]
) -> list[submitit.Job]:
    """One job array, task i running fn(columns[0][i], columns[1][i], ...) (as map_array);
    prints the array's job id."""
    try:
        jobs = executor.map_array(fn, *columns)
    except Exception as exc:  # sbatch refused (bad partition, limits...): say what it said
        raise AqaError(f"sbatch refused the job array: {exc}") from exc
    array_id = jobs[0].job_id.split("_")[0]
    click.echo(f"submitted Slurm job {array_id} ({len(jobs)} task(s)); logs in "
               f"{jobs[0].paths.folder.parent}")  # fmt: skip
    return jobs


def squeue_states(job_id: str) -> dict[str, str] | None:
    """{task job id ("123_0"): state} for the tasks Slurm still knows, finished ones included
    ({} once it forgot the job); None when squeue cannot answer (controller down)."""
    cmd = ["squeue", "--noheader", "--array", "--states=all", "--jobs", job_id, "--format=%i|%T"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return {} if "Invalid job id" in proc.stderr else None
    states = {}
    for line in proc.stdout.splitlines():
        task, _, state = line.strip().partition("|")
        if task:
            states[task] = state
    return states


def follow(
    jobs: list[submitit.Job], progress: bool | None = None, grace_s: float = GRACE_S
) -> list[TaskOutcome]:
    """Wait until every task has a result or has died; a progress bar over finished tasks."""
    array_id = jobs[0].job_id.split("_")[0]
    outcomes: dict[int, TaskOutcome] = {}
    ended_at: dict[int, float] = {}
    warned = False
    bar = tqdm(total=len(jobs), unit="task", disable=None if progress is None else not progress)
    try:
        while len(outcomes) < len(jobs):
            states = squeue_states(array_id)
            if states is None and not warned:
                tqdm.write(
                    "warning: squeue does not answer; waiting for the result files", file=sys.stderr
                )
                warned = True
            now = time.monotonic()
            for i, job in enumerate(jobs):
                if i in outcomes:
                    continue
                state = states.get(job.job_id) if states else None
                active = state is not None and state.split()[0] not in ENDED
                # A result is final once Slurm runs the task no more: a task requeued after
                # writing one (killed late, or failed during a requeue) writes it again.
                if job.paths.result_pickle.exists() and not active:
                    outcomes[i] = collect(i, job)
                    bar.update(1)
                    continue
                if states is None:
                    continue
                if active:
                    ended_at.pop(i, None)  # pending, running, requeued
                elif now - ended_at.setdefault(i, now) > grace_s:
                    why = f"Slurm state {state}" if state else "Slurm no longer knows the task"
                    outcomes[i] = TaskOutcome(i, error=f"task {job.job_id} ended without a "
                                              f"result ({why})", logs=_logs(job))  # fmt: skip
                    bar.update(1)
            if len(outcomes) < len(jobs):
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        click.echo(f"\nstopped following; the tasks keep running (squeue -j {array_id}, "
                   f"scancel {array_id} to stop them)", err=True)  # fmt: skip
        raise
    finally:
        bar.close()
    return [outcomes[i] for i in range(len(jobs))]


def collect(i: int, job: submitit.Job) -> TaskOutcome:
    """The outcome of a task whose result file exists (a value, or the exception it raised)."""
    try:
        return TaskOutcome(i, result=job.result())
    except (FailedJobError, UncompletedJobError) as exc:
        return TaskOutcome(i, error=f"task {job.job_id}: {_last_error_line(str(exc))}",
                           logs=_logs(job))  # fmt: skip


def _last_error_line(text: str) -> str:
    """The exception line of the traceback submitit puts between dashed lines."""
    parts = text.split("-" * 22)
    trace = parts[1] if len(parts) >= 3 else text
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text.strip()


def _logs(job: submitit.Job) -> list[str]:
    return [str(job.paths.stderr), str(job.paths.stdout)]
