"""An extraction as N shard jobs, run by the generic engine (`aqa_pipeline.launch`): the
task every engine runs, the dispatch to an engine, the per-shard report, the merge.

    launch_extraction(job, opts)   the entry point: here, one process per GPU or a Slurm array
    ExtractShard                   the task: `run_extraction` on one shard (requeued on Slurm)
    split_job / default_log_dir    cache.h5 -> cache.shard-k-of-n.h5, cache.logs/
    report / finish                a line per shard, the merge into the output, the exit code

Every engine (in this process, one process per GPU, a Slurm array task) runs a shard the
same way: `ExtractShard()(shard_job)`, which is `run_extraction` on that shard's own cache
file. Resuming is the store's business: a rerun of a shard skips the videos it already has
(in `SHARD.h5.parts/` or the finished file), so a killed or requeued task loses at most the
videos in flight.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from submitit.helpers import Checkpointable, DelayedSubmission
from submitit.slurm.slurm import SlurmJobEnvironment

from aqa_pipeline.errors import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USER_ERROR,
    AqaError,
    Interrupted,
)
from aqa_pipeline.extract.parts import parts_dir
from aqa_pipeline.extract.runner import ExtractJob, shard_path
from aqa_pipeline.launch import LaunchOptions, TaskOutcome
from aqa_pipeline.launch.local import run_in_turn, run_per_gpu, visible_gpus
from aqa_pipeline.launch.slurm import follow, make_executor, submit_array


class ExtractShard(Checkpointable):
    """Runs one shard job; on preemption or time-out submitit requeues the same shard.

    `progress`: a video progress bar (None: only on a terminal); off in workers and tasks.
    """

    def __init__(self, progress: bool | None = False):
        self.progress = progress

    def __call__(self, job: ExtractJob) -> dict[str, Any]:
        from aqa_pipeline.extract.runner import run_extraction

        _preemption_signal_in_this_process_only()
        summary = run_extraction(job, progress=self.progress).to_dict()
        summary["shard"] = list(job.shard) if job.shard else None
        summary["host"] = socket.gethostname()
        summary["pid"] = os.getpid()
        summary["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
        # Slurm counts how often this task was requeued; 0 or absent on a first run.
        summary["restarts"] = int(os.environ.get("SLURM_RESTART_COUNT", 0) or 0)
        return summary

    def checkpoint(self, job: ExtractJob) -> DelayedSubmission:
        """Called by submitit on preemption/time-out: requeue the same shard, no engine state
        (the requeued run skips what the store already holds)."""
        return DelayedSubmission(ExtractShard(self.progress), job)


def _preemption_signal_in_this_process_only() -> None:
    """Slurm signals every process of a task on preemption, and decode workers forked by the
    runner inherit submitit's handler (checkpoint + `scontrol requeue`): let it act in the
    task's own process only, so a shard is requeued once."""
    signum = getattr(signal, "SIG" + SlurmJobEnvironment.USR_SIG, None)
    handler = signal.getsignal(signum) if signum else None
    if not callable(handler):  # not under submitit: nothing to guard
        return
    owner = os.getpid()

    def in_owner_only(sig: int, frame: Any) -> None:
        if os.getpid() == owner:
            handler(sig, frame)

    signal.signal(signum, in_owner_only)


def split_job(job: ExtractJob, n: int) -> list[ExtractJob]:
    """n shard jobs, each writing its own file (cache.h5 -> cache.shard-k-of-n.h5); n=1: the job."""
    if n == 1:
        return [job]
    return [replace(job, output=shard_path(Path(job.output), k, n), shard=(k, n)) for k in range(n)]


def default_log_dir(output: Path) -> Path:
    """cache.h5 -> cache.logs/ beside it."""
    output = Path(output)
    return output.with_name(output.stem + ".logs")


def report(outcomes: list[TaskOutcome], n: int) -> None:
    """One line per shard; its failed videos with their reasons; dead tasks with their logs."""
    for o in sorted(outcomes, key=lambda o: o.index):
        name = f"shard {o.index}/{n}" if n > 1 else "extraction"
        if o.ok:
            s = o.result
            click.echo(
                f"{name}: {s['n_videos']} videos, {s['n_extracted']} extracted, "
                f"{s['n_skipped']} already done, {s['n_failed']} failed "
                f"({s['seconds']:.1f} s) -> {s['output']}"
            )
            for f in s["failed"]:
                click.echo(f"  {name}: video {f['video_id']} failed: {f['error']}", err=True)
        else:
            click.echo(f"{name}: task died: {o.error}", err=True)
            for path in o.logs:
                click.echo(f"  log: {path}", err=True)


def finish(job: ExtractJob, shard_jobs: list[ExtractJob], outcomes: list[TaskOutcome]) -> int:
    """Report every shard, merge when all finished, and return the exit code:
    0 all good, 4 some videos failed (recorded), 1 a task died (3 if the merge found a mismatch)."""
    n = len(shard_jobs)
    report(outcomes, n)
    dead = [o for o in outcomes if not o.ok]
    if dead or len(outcomes) < n:
        missing = n - len(outcomes) + len(dead)
        click.echo(
            f"not merged: {missing} of {n} shard(s) did not finish. Rerun the same command: "
            "finished videos are kept and skipped.",
            err=True,
        )
        return EXIT_USER_ERROR
    if n > 1:
        from aqa_pipeline.features.merge import merge_caches

        try:
            merged = merge_caches([Path(j.output) for j in shard_jobs], Path(job.output))
        except AqaError as exc:
            click.echo(f"merge refused: {exc.format_message()}", err=True)
            return exc.exit_code
        click.echo(f"merged {n} shards into {job.output}: {merged.n_videos} videos, "
                   f"{merged.n_clips} clips")  # fmt: skip
    n_failed = sum(o.result["n_failed"] for o in outcomes)
    if n_failed:
        click.echo(
            f"{n_failed} video(s) failed (recorded in the cache with their reasons)", err=True
        )
        return EXIT_SOME_FAILED
    return EXIT_OK


def launch_extraction(job: ExtractJob, opts: LaunchOptions, progress: bool | None = None) -> int:
    """Run `job` as opts says (here, per GPU, or as a Slurm array) and return the exit code."""
    if job.shard is not None and (opts.launcher == "slurm" or (opts.shards or 1) > 1 or opts.gpus):
        raise AqaError(
            "--shard K/N runs one given shard here; --shards/--gpus/--launcher slurm split the "
            "work themselves: give one or the other"
        )
    if opts.launcher == "slurm":
        return launch_extraction_slurm(job, opts, progress)
    return launch_extraction_local(job, opts, progress)


def launch_extraction_local(job: ExtractJob, opts: LaunchOptions, progress: bool | None) -> int:
    """Run the shards here (in turn) or one worker process per GPU; merge; the exit code.

    Ctrl-C stops every worker and exits 130 (`Interrupted`): finished videos are kept in each
    shard's store, and a rerun of the same command resumes."""
    gpus = visible_gpus(opts.gpus) if opts.gpus else []
    n = opts.shards or max(1, len(gpus))
    shard_jobs = split_job(job, n)
    if not gpus:  # in this process: an error ends the command, as a plain run would
        tasks = [(ExtractShard(progress), shard_job) for shard_job in shard_jobs]
        outcomes = run_in_turn(tasks, stop_on_error=True)
        return finish(job, shard_jobs, outcomes)
    log_dir = Path(opts.log_dir or default_log_dir(job.output))
    tasks = [(ExtractShard(), _on_visible_gpu(shard_job)) for shard_job in shard_jobs]
    try:
        outcomes = run_per_gpu(tasks, gpus, log_dir, progress, unit="shard")
    except KeyboardInterrupt:
        out = Path(job.output)
        where = parts_dir(shard_path(out, "*", n) if n > 1 else out)  # type: ignore[arg-type]
        raise Interrupted(
            f"interrupted: the GPU workers were stopped; finished videos are kept ({where}); "
            f"a rerun of the same command resumes, skipping them. Worker logs: {log_dir}"
        ) from None
    return finish(job, shard_jobs, outcomes)


def _on_visible_gpu(job: ExtractJob) -> ExtractJob:
    """Inside a worker the one visible GPU is cuda:0, whatever its id outside."""
    return replace(job, device="cuda") if job.device.startswith("cuda") else job


def launch_extraction_slurm(job: ExtractJob, opts: LaunchOptions, progress: bool | None) -> int:
    """Submit the shards as one array; with --wait follow, report and merge (the exit code)."""
    job = replace(job, output=Path(job.output).resolve())
    if Path(job.input).exists():  # tasks may start elsewhere: absolute paths
        job = replace(job, input=str(Path(job.input).resolve()))
    shard_jobs = split_job(job, opts.shards or 1)
    log_dir = Path(opts.log_dir or default_log_dir(job.output))
    executor = make_executor(log_dir, opts, "aqa-extract")
    jobs = submit_array(executor, ExtractShard(), shard_jobs)
    if not opts.wait:
        outputs = " ".join(str(j.output) for j in shard_jobs)
        click.echo(
            f"not waiting (--no-wait). Follow with: squeue -j {jobs[0].job_id.split('_')[0]}"
        )
        if len(shard_jobs) > 1:
            click.echo(f"when all tasks have ended: aqa features merge {outputs} -o {job.output}")
        return EXIT_OK
    return finish(job, shard_jobs, follow(jobs, progress))
