"""The Slurm engine against a real Slurm (scripts/slurm/start-local-cluster.sh starts a one-node
cluster on this machine): a two-shard extraction through submitit equal to a local run,
preempted and requeued tasks that resume from the store, dead tasks reported, and a train
sweep. Skipped, saying why, where no Slurm cluster answers (a user's laptop)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from aqa_pipeline.errors import EXIT_SOME_FAILED, EXIT_USER_ERROR
from aqa_pipeline.extract.parts import parts_dir
from aqa_pipeline.extract.runner import run_extraction
from aqa_pipeline.extract.shards import ExtractShard, finish, launch_extraction, split_job
from aqa_pipeline.features.store import STATUS_OK, read_features
from aqa_pipeline.launch import LaunchOptions
from aqa_pipeline.launch.slurm import follow, make_executor, submit_array
from aqa_pipeline.train.sweep import format_sweep_table, launch_train_sweep, tabulate_sweep
from tests.test_launch_local import (
    assert_same_cache,
    make_input,
    make_job,
    write_labels,
    write_train_config,
)

ROOT = Path(__file__).resolve().parents[1]
START = "sudo bash scripts/slurm/start-local-cluster.sh"


def why_no_slurm() -> str | None:
    """None when a Slurm cluster answers here, else the reason to skip."""
    for cmd in ("sbatch", "squeue", "sinfo", "srun", "scontrol"):
        if shutil.which(cmd) is None:
            return (
                f"Slurm is not installed here ({cmd} is not on PATH); start a test cluster: {START}"
            )
    try:
        proc = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True,
                              text=True, timeout=15)  # fmt: skip
    except subprocess.TimeoutExpired:
        return "no Slurm cluster answers (sinfo timed out)"
    if proc.returncode != 0:
        return f"no Slurm cluster answers (sinfo: {proc.stderr.strip()}); start one: {START}"
    if not {"idle", "mix", "alloc"} & {s.rstrip("*~#$@+") for s in proc.stdout.split()}:
        return f"the Slurm cluster has no node up (sinfo: {proc.stdout.split()})"
    return None


REASON = why_no_slurm()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


@pytest.fixture(autouse=True)
def importable_on_the_nodes(monkeypatch):
    """Tasks start a new Python from the submitting environment: make sure it finds this
    checkout even when the package is not installed."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """11 videos (one broken): shards of 5-6 videos, long enough to interrupt one midway."""
    return make_input(tmp_path_factory.mktemp("videos"), n_good=10, n_frames=48)


@pytest.fixture(scope="module")
def reference_cache(videos, tmp_path_factory) -> Path:
    """A plain local extraction of the same input."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    run_extraction(make_job(videos, out), progress=False)
    return out


@pytest.fixture(scope="module")
def reference(reference_cache):
    return read_features(reference_cache)


def squeue(job_id: str) -> dict[str, tuple[str, str]]:
    """{task: (state, reason)} of a job's tasks."""
    out = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--jobs", job_id,
                          "--format=%i|%T|%r"], capture_output=True, text=True).stdout  # fmt: skip
    return {t: (s, r) for t, s, r in (line.split("|") for line in out.split())}


def kill_task_processes(task_id: str) -> None:
    """SIGKILL the processes of a running task's job step (`scontrol listpids`, this node)."""
    raw_id = subprocess.run(["squeue", "--noheader", "--jobs", task_id, "--format=%A"],
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    table = subprocess.run(["scontrol", "listpids", raw_id], capture_output=True, text=True,
                           check=True).stdout.splitlines()[1:]  # fmt: skip
    pids = [int(row.split()[0]) for row in table if row.split()[2] == "0"]  # step 0: the task
    assert pids, f"no process of task {task_id} found: {table}"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def wait_for(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def test_two_shards_through_submitit_equal_a_local_run(videos, reference, tmp_path, capsys):
    out = tmp_path / "cache.h5"
    opts = LaunchOptions(launcher="slurm", shards=2, wait=True, time_min=10,
                         log_dir=tmp_path / "logs")  # fmt: skip
    start = time.monotonic()
    code = launch_extraction(make_job(videos, out), opts)
    seconds = time.monotonic() - start
    printed = capsys.readouterr()
    assert "submitted Slurm job" in printed.out and "(2 task(s))" in printed.out
    assert code == EXIT_SOME_FAILED, printed  # broken.mp4 is recorded as failed
    assert "video broken failed" in printed.err
    merged = read_features(out)
    assert_same_cache(merged, reference, atol=1e-4)
    diff = max(float(np.abs(merged.clips(merged.index(v)) - reference.clips(i)).max(initial=0))
               for i, v in enumerate(reference.video_ids))  # fmt: skip
    print(f"\n2-shard Slurm extraction: {seconds:.1f} s, max |slurm - local| = {diff:.2e}")
    shards = merged.provenance["merged_from"]
    assert [s["shard"]["k"] for s in shards] == [0, 1]
    assert len({s["cache_key"] for s in shards}) == 1 == len({merged.cache_key})

    script = next((tmp_path / "logs").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-1%2" in script and "#SBATCH --time=10" in script


def test_preempted_and_requeued_tasks_resume_from_the_store(videos, reference, tmp_path):
    """Midway through its shard, task 0 gets the preemption signal (submitit calls
    ExtractShard.checkpoint and requeues it) and task 1 is killed outright, then requeued with
    `scontrol requeue`. Both resume from the store: the videos done before the interruption are
    skipped, the rest extracted, and the merge equals the local run."""
    job = make_job(videos, tmp_path / "cache.h5")
    job.workers = 1  # a forked decode worker, which gets the signals too
    shard_jobs = split_job(job, 2)
    # 30 min: the signal comes well before 80% of the time limit, so submitit sees a preemption
    opts = LaunchOptions(launcher="slurm", time_min=30)
    executor = make_executor(tmp_path / "logs", opts, "aqa-test-requeue")
    jobs = submit_array(executor, ExtractShard(), shard_jobs)
    array_id = jobs[0].job_id.split("_")[0]

    def videos_done(k: int) -> int:
        """Videos extracted so far (the broken one, failed, is redone on a rerun: not counted)."""
        n = 0
        for part in parts_dir(shard_jobs[k].output).glob("v-*.npz"):
            with np.load(part) as z:
                n += json.loads(str(z["meta"]))["status"] == STATUS_OK
        return n

    interrupt = {  # each as soon as its shard has extracted a first video
        # what Slurm sends before preempting a task (or before its time limit)
        0: lambda: subprocess.run(["scancel", "--signal=USR2", jobs[0].job_id], check=True),
        # SIGKILL, as from the OOM killer or a dying node: in-flight work is lost
        1: lambda: kill_task_processes(jobs[1].job_id),
    }

    def interrupted_midway() -> bool:
        for k in [k for k in interrupt if videos_done(k) >= 1]:
            assert not shard_jobs[k].output.exists(), f"shard {k} finished before the test"
            interrupt.pop(k)()
        return not interrupt

    wait_for(interrupted_midway, 120, "a first extracted video in each shard")
    wait_for(lambda: squeue(array_id)[jobs[1].job_id][0] != "RUNNING", 30, "task 1 to die")
    subprocess.run(["scontrol", "requeue", jobs[1].job_id], check=True)
    released: set[str] = set()

    def both_restarted() -> bool:
        # Slurm holds a requeued task back for a while (reason BeginTime): start it now.
        for task, (state, reason) in squeue(array_id).items():
            if state == "PENDING" and reason == "BeginTime" and task not in released:
                subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], check=True)
                released.add(task)
        return len(released) == 2

    wait_for(both_restarted, 60, "both tasks to be requeued")
    outcomes = follow(jobs, progress=False)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    for o in outcomes:
        s = o.result
        assert s["restarts"] == 1, s  # Slurm ran this task a second time
        assert s["n_skipped"] >= 1, s  # ... which resumed from what the store held
        # ... and did the rest: none left when the tiny shard had extracted all its videos
        # (not yet merged) before the signal reached it, which a fast decode makes possible
        assert s["n_extracted"] + s["n_skipped"] + s["n_failed"] == s["n_videos"]
        print(
            f"\nshard {s['shard']}: restarts {s['restarts']}, {s['n_skipped']} videos kept "
            f"from before the interruption, {s['n_extracted']} extracted after it"
        )
    log = jobs[0].paths.stdout.read_text() + jobs[0].paths.stderr.read_text()
    for line in (
        "this job is preempted",
        "Calling checkpoint method",
        f"Requeued job {jobs[0].job_id}",
    ):
        assert line in log  # submitit's handler asked ExtractShard.checkpoint, then requeued
    assert finish(job, shard_jobs, outcomes) == EXIT_SOME_FAILED
    assert_same_cache(read_features(job.output), reference, atol=1e-4)


def test_dead_tasks_are_reported_with_their_logs(videos, tmp_path, capsys):
    job = make_job(videos, tmp_path / "cache.h5")
    shard_jobs = split_job(job, 2)
    executor = make_executor(tmp_path / "logs", LaunchOptions(launcher="slurm"), "aqa-test-dead")
    jobs = submit_array(executor, ExtractShard(), shard_jobs)
    subprocess.run(["scancel", jobs[0].job_id.split("_")[0]], check=True)
    outcomes = follow(jobs, progress=False, grace_s=3)
    assert all("ended without a result (Slurm state CANCELLED" in o.error for o in outcomes)
    assert finish(job, shard_jobs, outcomes) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert f"log: {jobs[1].paths.stderr}" in err
    assert "not merged: 2 of 2 shard(s) did not finish" in err
    assert not job.output.exists()


def test_no_wait_returns_at_submission_with_the_merge_command(videos, tmp_path, capsys):
    out = tmp_path / "cache.h5"
    opts = LaunchOptions(launcher="slurm", shards=2, log_dir=tmp_path / "logs")
    assert launch_extraction(make_job(videos, out), opts) == 0
    printed = capsys.readouterr().out
    job_id = printed.split("submitted Slurm job ")[1].split()[0]
    try:
        assert set(squeue(job_id)) == {f"{job_id}_0", f"{job_id}_1"}
        shards = f"{tmp_path}/cache.shard-0-of-2.h5 {tmp_path}/cache.shard-1-of-2.h5"
        assert f"aqa features merge {shards} -o {out}" in printed
    finally:
        subprocess.run(["scancel", job_id], check=True)


def test_train_sweep_as_one_job_array(reference_cache, tmp_path, capsys):
    """2 configs x 2 seeds: one array of 4 tasks, each writing its run directory."""
    configs = [write_train_config(tmp_path / f"mlp_{lr}.yaml", lr) for lr in (1e-3, 1e-2)]
    labels = write_labels(tmp_path / "labels.csv", n_good=10)
    sweep = tmp_path / "sweep"
    opts = LaunchOptions(launcher="slurm", wait=True, time_min=10)
    code = launch_train_sweep(configs, [0, 1], None, reference_cache, labels, sweep, opts)
    printed = capsys.readouterr()
    assert code == 0, printed
    assert "(4 task(s))" in printed.out
    rows = tabulate_sweep(sweep)
    assert sorted(r["name"] for r in rows) == [f"mlp_{lr}-seed{s}" for lr in ("0.001", "0.01")
                                               for s in (0, 1)]  # fmt: skip
    assert all(r["status"] == "done" and -1 <= r["spearman"] <= 1 for r in rows)
    assert all((sweep / "runs" / r["name"] / "heads.safetensors").exists() for r in rows)
    table = format_sweep_table(rows)
    print("\n" + table)
    assert re.search(r"mlp_0\.01 +2 run\(s\) +spearman -?\d\.\d{4} \+- \d\.\d{4}", table)
