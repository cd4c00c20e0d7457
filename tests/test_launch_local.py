"""The local engine of `aqa_pipeline.launch` and what runs on it: options, generic tasks in
turn and one worker process per (fake) GPU, Ctrl-C, extraction shards in this process and per
GPU (`aqa_pipeline.extract.shards`) with their reports, exit codes and merge, and sweeps
(`aqa_pipeline.train.sweep`). CPU only; the extractions use a tiny random Video Swin on tiny
videos."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import pytest
import submitit
from click.testing import CliRunner

from aqa_pipeline.errors import (
    EXIT_INTERRUPTED,
    EXIT_SOME_FAILED,
    EXIT_USER_ERROR,
    AqaError,
    Interrupted,
)
from aqa_pipeline.extract import shards
from aqa_pipeline.extract.recipe import Recipe
from aqa_pipeline.extract.runner import ExtractJob, run_extraction, shard_path
from aqa_pipeline.extract.shards import (
    ExtractShard,
    _preemption_signal_in_this_process_only,
    launch_extraction,
    split_job,
)
from aqa_pipeline.features.merge import merge_caches
from aqa_pipeline.features.store import FeatureSet, read_features
from aqa_pipeline.launch import LaunchOptions, launcher_options
from aqa_pipeline.launch.local import (
    assign_shards,
    read_result,
    run_here_or_in_pool,
    run_in_turn,
    run_per_gpu,
    visible_gpus,
)
from aqa_pipeline.launch.options import mem_gb, parse_key_values
from aqa_pipeline.launch.slurm import executor_parameters
from aqa_pipeline.synthetic import moving_square, write_video
from aqa_pipeline.train.sweep import (
    format_sweep_table,
    launch_train_sweep,
    plan_sweep,
    tabulate_sweep,
)
from tests.conftest import TINY_SWIN

N_GOOD = 5


# ---------------------------------------------------------------------------- fixtures


def tiny_recipe() -> Recipe:
    """16-frame clips of 64x64 frames through the tests' tiny random Video Swin: fast on a CPU."""
    return Recipe.model_validate(
        {
            "name": "tiny",
            "backbone": {"name": "swin3d", "arch": dict(TINY_SWIN)},
            "sampling": {"method": "consecutive", "clip_len": 16, "stride": 16},
            "preprocess": {"resize": [64, 64], "normalize": "imagenet"},
        }
    )


def make_input(folder: Path, n_good: int = N_GOOD, n_frames: int = 32) -> Path:
    """`n_good` short synthetic videos plus one corrupt file, whose failure must be recorded."""
    for i in range(n_good):
        write_video(folder / f"clip_{i:02d}.mp4", moving_square(n_frames, (48, 64), 1 + i, seed=i))
    (folder / "broken.mp4").write_bytes(b"this is not a video")
    return folder


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return make_input(tmp_path_factory.mktemp("videos"))


def make_job(videos: Path, output: Path) -> ExtractJob:
    return ExtractJob(recipe=tiny_recipe(), input=str(videos), output=output,
                      random_init=True, batch_size=4, workers=0)  # fmt: skip


@pytest.fixture(scope="module")
def reference_cache(videos, tmp_path_factory) -> Path:
    """A plain single-process extraction of the same input."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    run_extraction(make_job(videos, out), progress=False)
    return out


@pytest.fixture(scope="module")
def reference(reference_cache) -> FeatureSet:
    return read_features(reference_cache)


def assert_same_cache(actual: FeatureSet, expected: FeatureSet, atol: float = 1e-4) -> None:
    assert sorted(actual.video_ids) == sorted(expected.video_ids)
    for vid in expected.video_ids:
        i, j = actual.index(vid), expected.index(vid)
        assert actual.status[i] == expected.status[j], vid
        np.testing.assert_allclose(actual.clips(i), expected.clips(j), atol=atol, err_msg=vid)
        np.testing.assert_array_equal(actual.frames(i), expected.frames(j))
    assert actual.cache_key == expected.cache_key


# ---------------------------------------------------------------------------- options


def test_options_reach_the_command_as_one_object():
    seen = {}

    @click.command()
    @launcher_options
    def cmd(launch: LaunchOptions) -> None:
        seen["launch"] = launch

    args = ["--launcher", "slurm", "--shards", "4", "--partition", "gpu", "--gpus-per-task", "1",
            "--cpus-per-task", "3", "--mem", "16G", "--time-min", "30", "--array-parallelism", "2",
            "--slurm-set", "qos=high", "--slurm-set", "exclusive", "--wait", "--log-dir", "/tmp/x"]  # fmt: skip
    result = CliRunner().invoke(cmd, args)
    assert result.exit_code == 0, result.output
    launch = seen["launch"]
    assert (launch.launcher, launch.shards, launch.partition, launch.gpus_per_task) == (
        "slurm", 4, "gpu", 1)  # fmt: skip
    assert launch.slurm_set == {"qos": "high", "exclusive": True}
    assert launch.wait and launch.log_dir == Path("/tmp/x")

    params = executor_parameters(launch, "aqa-extract")
    assert params == {
        "name": "aqa-extract", "timeout_min": 30, "slurm_partition": "gpu", "gpus_per_node": 1,
        "cpus_per_task": 3, "mem_gb": 16.0, "slurm_array_parallelism": 2,
        "slurm_additional_parameters": {"qos": "high", "exclusive": True},
    }  # fmt: skip
    # submitit itself accepts every name and type (checked without a cluster)
    submitit.AutoExecutor(folder="/tmp/unused", cluster="debug").update_parameters(**params)


def test_options_refuse_what_does_not_apply():
    with pytest.raises(AqaError, match="--partition, --mem only apply to --launcher slurm"):
        LaunchOptions(partition="gpu", mem="4G")
    with pytest.raises(AqaError, match="--gpus is for --launcher local"):
        LaunchOptions(launcher="slurm", gpus="all")
    with pytest.raises(AqaError, match="--mem expects a size like 16G"):
        LaunchOptions(launcher="slurm", mem="lots")
    with pytest.raises(AqaError, match="--shards must be at least 1"):
        LaunchOptions(shards=0)
    with pytest.raises(AqaError, match="--slurm-set expects key=value"):
        parse_key_values(["=3"])
    assert mem_gb("16G") == 16.0 and mem_gb("512M") == 0.5 and mem_gb("2048") == 2.0
    assert mem_gb("1T") == 1024.0


def test_one_given_shard_is_not_split_again(videos, tmp_path):
    job = make_job(videos, tmp_path / "c.h5")
    job.shard = (0, 2)
    with pytest.raises(AqaError, match="--shard K/N runs one given shard here"):
        launch_extraction(job, LaunchOptions(shards=2))


def test_visible_gpus_and_shard_assignment(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus("all") == ["3", "5"]
    assert visible_gpus("0, 1") == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(AqaError, match="no GPU is visible"):
        visible_gpus("all")
    with pytest.raises(AqaError, match="distinct device ids"):
        visible_gpus("0,0")
    assert assign_shards(5, ["a", "b"]) == {"a": [0, 2, 4], "b": [1, 3]}
    assert assign_shards(1, ["a", "b"]) == {"a": [0]}


def test_split_job_names_each_shard_file(tmp_path):
    job = ExtractJob(recipe=None, input="in", output=tmp_path / "cache.h5")
    shards = split_job(job, 3)
    assert [s.shard for s in shards] == [(0, 3), (1, 3), (2, 3)]
    assert [s.output.name for s in shards] == [f"cache.shard-{k}-of-3.h5" for k in range(3)]
    assert split_job(job, 1) == [job]


def test_preemption_handler_acts_in_the_task_process_only():
    """Forked decode workers inherit the handler; the guard keeps them from requeuing too."""
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda sig, frame: calls.append(os.getpid()))
    try:
        _preemption_signal_in_this_process_only()
        pid = os.fork()
        if pid == 0:  # a forked worker: the signal must not reach the original handler
            os.kill(os.getpid(), signal.SIGUSR2)
            os._exit(1 if calls else 0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        os.kill(os.getpid(), signal.SIGUSR2)
        assert calls == [os.getpid()]
    finally:
        signal.signal(signal.SIGUSR2, previous)


# ---------------------------------------------------------------------------- the generic engine


def interrupting_task(note: str) -> None:
    """A task interrupted midway, as run_extraction is by Ctrl-C."""
    raise Interrupted(f"interrupted: {note}")


def test_tasks_in_turn_record_errors_and_stop_on_interruption():
    tasks = [(math.sqrt, 16.0), functools.partial(int, "7"), (int, "x")]
    outcomes = run_in_turn(tasks)
    assert [(o.index, o.result) for o in outcomes[:2]] == [(0, 4.0), (1, 7)]
    assert not outcomes[2].ok and outcomes[2].error.startswith("ValueError: invalid literal")
    with pytest.raises(ValueError):
        run_in_turn(tasks, stop_on_error=True)
    with pytest.raises(Interrupted):  # never recorded as the failure of one task
        run_in_turn([(interrupting_task, "a"), (math.sqrt, 4.0)])


def test_tasks_per_gpu_return_results_and_errors(tmp_path):
    """Builtins as tasks: each worker sees its own CUDA_VISIBLE_DEVICES; an error ends its
    task only, and the worker goes on with the next one."""
    env = (os.getenv, "CUDA_VISIBLE_DEVICES")
    tasks = [env, env, (int, "x"), (math.sqrt, 9.0)]
    outcomes = run_per_gpu(tasks, ["3", "5"], tmp_path / "logs", progress=False)
    assert [o.index for o in outcomes] == [0, 1, 2, 3]
    assert [outcomes[0].result, outcomes[1].result, outcomes[3].result] == ["3", "5", 3.0]
    assert outcomes[2].error.startswith("ValueError: invalid literal")
    assert outcomes[2].logs == [str(tmp_path / "logs" / "gpu-3.log")]
    assert read_result(tmp_path / "logs", 3) == {"result": 3.0}


@pytest.fixture
def sigint_raises():
    """Ctrl-C raises KeyboardInterrupt here and in the workers, even when the test session
    inherited an ignored SIGINT (a shell starts background jobs so: `make test &`, nohup)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("how", ["Interrupted", "SIGINT"])
def test_an_interrupted_worker_stops_the_run(tmp_path, how, sigint_raises):
    """The worker re-raises the interruption (its task is not recorded as failed, its next
    task does not run) and exits 130; the parent stops the other workers and raises."""
    first = (
        (interrupting_task, "x") if how == "Interrupted" else (signal.raise_signal, signal.SIGINT)
    )
    tasks = [first, (time.sleep, 60), (os.getenv, "CUDA_VISIBLE_DEVICES")]
    logs = tmp_path / "logs"
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_per_gpu(tasks, ["0", "1"], logs, progress=False)
    assert time.monotonic() - start < 30  # GPU 1's sleeping worker was terminated
    assert not any(logs.glob("task-*.result.pkl"))  # task 2 (GPU 0) never ran
    assert "interrupted" in (logs / "gpu-0.log").read_text()


def ctrl_c_stops_the_workers(call: str, worker_pids) -> None:
    """Run `call` (two workers sleeping 120 s) in a child Python, SIGINT it alone once
    worker_pids(parent_pid) finds both workers: it must terminate and reap them, exit 130."""
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignored\n"
        "from aqa_pipeline.launch.local import run_in_pool, run_per_gpu\n"
        "try:\n"
        f"    {call}\n"
        "except KeyboardInterrupt:\n"
        "    print('stopped', flush=True)\n"
        "    sys.exit(130)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids: list[int] = []
        end = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < end:
            time.sleep(0.3)
            pids = worker_pids(parent.pid)
        assert len(pids) == 2, "the workers did not start"
        time.sleep(1.0)  # let them pick up their tasks
        parent.send_signal(signal.SIGINT)
        out, _ = parent.communicate(timeout=30)
    finally:
        parent.kill()
    assert parent.returncode == 130 and "stopped" in out
    for pid in pids:  # terminated and reaped by the parent
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_ctrl_c_in_the_parent_terminates_the_workers(tmp_path):
    """SIGINT to the parent only: it terminates its workers, waits for them and raises."""
    logs = tmp_path / "logs"

    def worker_pids(_parent: int) -> list[int]:
        text = "".join(p.read_text() for p in logs.glob("gpu-*.log")) if logs.exists() else ""
        return [int(pid) for pid in re.findall(r"worker pid (\d+)", text)]

    call = f"run_per_gpu([(time.sleep, 120)] * 2, ['0', '1'], {str(logs)!r}, progress=False)"
    ctrl_c_stops_the_workers(call, worker_pids)


def test_tasks_in_a_cpu_pool_return_results_in_order_and_errors():
    """run_in_pool: results by task index whatever order they end in, a failing task's
    error in its outcome, notify called once per task; one task runs here, in turn."""
    tasks = [(time.sleep, 0.5), (math.sqrt, 16.0), (int, "x"), functools.partial(int, "7")]
    seen: list[int] = []
    outcomes = run_here_or_in_pool(tasks, 2, lambda k, o: seen.append(k))
    assert [o.index for o in outcomes] == [0, 1, 2, 3] and sorted(seen) == [0, 1, 2, 3]
    assert [outcomes[k].result for k in (0, 1, 3)] == [None, 4.0, 7]
    assert outcomes[2].error.startswith("ValueError: invalid literal")
    assert run_here_or_in_pool([(math.sqrt, 9.0)], 2, lambda k, o: None)[0].result == 3.0
    # a worker that dies (here: exits at once, as one killed for memory would) is an error,
    # not a hang
    died = run_here_or_in_pool([(os._exit, 3), (time.sleep, 0.1)], 2, lambda k, o: None)
    assert died[0].error.startswith("BrokenProcessPool")


def test_ctrl_c_terminates_the_cpu_pool():
    """The same for a pool of CPU workers (spawned: found by their command line)."""

    def worker_pids(parent: int) -> list[int]:
        found = subprocess.run(["pgrep", "-P", str(parent), "-f", "spawn_main"],
                               capture_output=True, text=True).stdout.split()  # fmt: skip
        return [int(pid) for pid in found]

    ctrl_c_stops_the_workers(
        "run_in_pool([(time.sleep, 120)] * 2, 2, lambda k, o: None)", worker_pids
    )


# ---------------------------------------------------------------------------- extraction


def test_shards_in_this_process_merge_to_the_single_run(videos, reference, tmp_path, capsys):
    out = tmp_path / "cache.h5"
    code = launch_extraction(make_job(videos, out), LaunchOptions(shards=2))
    printed = capsys.readouterr()
    assert code == EXIT_SOME_FAILED  # broken.mp4 is recorded as failed, the rest merged
    assert "video broken failed" in printed.err
    assert f"merged 2 shards into {out}" in printed.out
    merged = read_features(out)
    assert_same_cache(merged, reference)
    assert merged.failed()[0]["video_id"] == "broken"
    assert [m["shard"]["k"] for m in merged.provenance["merged_from"]] == [0, 1]

    # a rerun redoes nothing: every shard's videos come from its finished file
    code = launch_extraction(make_job(videos, out), LaunchOptions(shards=2))
    printed = capsys.readouterr().out
    assert code == EXIT_SOME_FAILED
    assert printed.count(" 0 extracted") == 2, printed
    assert_same_cache(read_features(out), reference)


def test_one_process_per_gpu_with_its_own_device(videos, reference, tmp_path):
    """Two fake GPU ids, three shards: GPU 0 runs shards 0 and 2, GPU 1 runs shard 1, each
    worker process with CUDA_VISIBLE_DEVICES set to its id (the work itself stays on CPU)."""
    out = tmp_path / "cache.h5"
    opts = LaunchOptions(gpus="0,1", shards=3, log_dir=tmp_path / "logs")
    assert launch_extraction(make_job(videos, out), opts) == EXIT_SOME_FAILED
    results = {k: read_result(tmp_path / "logs", k)["result"] for k in range(3)}
    assert {k: r["cuda_visible_devices"] for k, r in results.items()} == {0: "0", 1: "1", 2: "0"}
    assert {k: tuple(r["shard"]) for k, r in results.items()} == {k: (k, 3) for k in range(3)}
    pids = {k: r["pid"] for k, r in results.items()}
    assert pids[0] == pids[2] != pids[1] and os.getpid() not in pids.values()
    assert "CUDA_VISIBLE_DEVICES=1" in (tmp_path / "logs" / "gpu-1.log").read_text()
    assert_same_cache(read_features(out), reference)


def test_a_failing_worker_is_reported_and_nothing_is_merged(videos, tmp_path, capsys):
    job = make_job(videos, tmp_path / "cache.h5")
    job.random_init = False  # and no weights file: every shard fails at once
    opts = LaunchOptions(gpus="7", shards=2, log_dir=tmp_path / "logs")  # one worker, 2 shards
    code = launch_extraction(job, opts)
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR
    assert "shard 0/2: task died: AqaError: backbone 'swin3d' needs weights" in err
    assert "shard 1/2: task died: AqaError" in err
    assert f"log: {tmp_path / 'logs' / 'gpu-7.log'}" in err
    assert "not merged: 2 of 2 shard(s) did not finish" in err
    assert not (tmp_path / "cache.h5").exists()


def test_ctrl_c_during_a_gpus_run_exits_130_and_keeps_the_videos(videos, tmp_path, monkeypatch):
    seen = {}

    def interrupted(tasks, gpus, log_dir, progress=None, unit="task"):
        seen["devices"] = [job.device for _, job in tasks]
        raise KeyboardInterrupt  # what run_per_gpu raises after stopping the workers

    monkeypatch.setattr(shards, "run_per_gpu", interrupted)
    job = make_job(videos, tmp_path / "cache.h5")
    job.device = "cuda:1"
    with pytest.raises(Interrupted) as info:
        launch_extraction(job, LaunchOptions(gpus="0,1", log_dir=tmp_path / "logs"))
    assert info.value.exit_code == EXIT_INTERRUPTED == 130
    message = info.value.format_message()
    assert "the GPU workers were stopped; finished videos are kept" in message
    assert f"{tmp_path}/cache.shard-*-of-2.h5.parts" in message
    assert "a rerun of the same command resumes" in message
    assert seen["devices"] == ["cuda", "cuda"]  # each worker's one visible GPU


def test_merge_refuses_incomplete_or_repeated_shards(videos, tmp_path, capsys):
    job = make_job(videos, tmp_path / "cache.h5")
    first = split_job(job, 2)[0]
    ExtractShard()(first)
    with pytest.raises(AqaError, match=r"incomplete: shard\(s\) \[1\] of 2 missing"):
        merge_caches([first.output], tmp_path / "merged.h5")
    with pytest.raises(AqaError, match="given more than once|in both"):
        merge_caches([first.output, first.output], tmp_path / "merged.h5")
    assert not (tmp_path / "merged.h5").exists()
    assert shard_path(job.output, 1, 2).name == "cache.shard-1-of-2.h5"


# ---------------------------------------------------------------------------- sweeps


def write_train_config(path: Path, lr: float) -> Path:
    """A small MLP head trained for 3 epochs: seconds on a CPU."""
    path.write_text(f"head: {{name: mlp}}\noptim: {{lr: {lr}}}\ntrain: {{epochs: 3, batch_size: 4}}\n"
                    "eval: {val_fraction: 0, bootstrap: 10}\n")  # fmt: skip
    return path


def write_labels(path: Path, n_good: int = N_GOOD) -> Path:
    """Scores for the good videos, in two cross-validation folds (split column 0/1)."""
    rows = [f"clip_{i:02d},{10 + 3 * i},{i % 2}" for i in range(n_good)]
    path.write_text("video_id,score,split\n" + "\n".join(rows) + "\n")
    return path


def test_plan_sweep_names_every_run(tmp_path):
    a = write_train_config(tmp_path / "a.yaml", 0.1)
    b = write_train_config(tmp_path / "b.yaml", 0.2)
    runs = plan_sweep([a, b], [0, 1], [0, 3], tmp_path / "sweep", overrides=["train.epochs=2"])
    assert len(runs) == 8
    assert runs[0].name == "a-seed0-fold0" and runs[-1].name == "b-seed1-fold3"
    assert (runs[-1].seed, runs[-1].fold) == (1, 3)
    assert runs[-1].config["optim"] == {"lr": 0.2} and runs[-1].config["train"]["epochs"] == 2
    assert runs[-1].run_dir == (tmp_path / "sweep" / "runs" / "b-seed1-fold3").resolve()
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(AqaError, match="share the name"):
        plan_sweep([a, write_train_config(other / "a.yaml", 0.3)], [0], None, tmp_path / "s")


def test_local_sweep_trains_one_run_per_seed_and_fold(reference_cache, tmp_path, capsys):
    config = write_train_config(tmp_path / "mlp.yaml", 1e-3)
    labels = write_labels(tmp_path / "labels.csv")
    sweep = tmp_path / "sweep"
    code = launch_train_sweep(
        [config], [0], [0, 1], reference_cache, labels, sweep, LaunchOptions()
    )
    assert code == 0, capsys.readouterr()
    rows = tabulate_sweep(sweep)
    assert [(r["name"], r["status"]) for r in rows] == [("mlp-seed0-fold0", "done"),
                                                        ("mlp-seed0-fold1", "done")]  # fmt: skip
    assert all(r["n_folds"] == 1 and -1 <= r["spearman"] <= 1 for r in rows)  # one fold each
    assert "mlp-seed0-fold1  done" in capsys.readouterr().out
    with pytest.raises(AqaError, match=r"no fold \[2\]; it has 2: \['fold0', 'fold1'\]"):
        launch_train_sweep([config], [0], [0, 2], reference_cache, labels, sweep, LaunchOptions())


def test_tabulate_sweep_reads_each_run(tmp_path):
    runs = [{"name": f"{c}-seed{s}", "config": f"{c}.yaml", "seed": s, "fold": None,
             "run_dir": str(tmp_path / "runs" / f"{c}-seed{s}")}
            for c in ("a", "b") for s in (0, 1)]  # fmt: skip
    (tmp_path / "sweep.json").write_text(json.dumps({"runs": runs}))
    for i, run in enumerate(runs[:3]):  # b-seed1 never finished
        Path(run["run_dir"]).mkdir(parents=True)
        metrics = {"spearman": 0.5 + 0.1 * i, "spearman_std": 0.01, "rl2": 1.5, "note": "x"}
        (Path(run["run_dir"]) / "metrics.json").write_text(json.dumps(metrics))
    rows = tabulate_sweep(tmp_path)
    assert [r["status"] for r in rows] == ["done", "done", "done", "missing"]
    assert rows[1]["spearman"] == pytest.approx(0.6) and "note" not in rows[1]
    table = format_sweep_table(rows)
    assert "b-seed1  missing" in table
    assert "a       2 run(s)  spearman 0.5500 +- 0.0707" in table

    (Path(runs[0]["run_dir"]) / "metrics.json").write_text("{not json")
    with pytest.raises(AqaError, match="metrics.json: not valid JSON"):
        tabulate_sweep(tmp_path)
    with pytest.raises(AqaError, match="no sweep.json and no run directory"):
        tabulate_sweep(tmp_path / "runs" / "b-seed1")
