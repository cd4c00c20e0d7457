"""The local engine of `aqa_pipeline.launch`: options, shards in this process, one worker
process per (fake) GPU, per-shard reports and exit codes, merging, and the sweep table.
CPU only; the extractions use a tiny random Video Swin on tiny videos."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import click
import numpy as np
import pytest
import submitit
from click.testing import CliRunner

from aqa_pipeline.errors import EXIT_SOME_FAILED, EXIT_USER_ERROR, AqaError
from aqa_pipeline.extract.recipe import Recipe
from aqa_pipeline.extract.runner import ExtractJob, run_extraction, shard_path
from aqa_pipeline.features.merge import merge_caches
from aqa_pipeline.features.store import FeatureSet, read_features
from aqa_pipeline.launch import (
    LaunchOptions,
    launch_extraction,
    launch_train_sweep,
    launcher_options,
)
from aqa_pipeline.launch.local import assign_shards, visible_gpus
from aqa_pipeline.launch.options import mem_gb, parse_key_values
from aqa_pipeline.launch.shards import (
    ExtractShard,
    _preemption_signal_in_this_process_only,
    split_job,
)
from aqa_pipeline.launch.slurm import executor_parameters
from aqa_pipeline.launch.sweep import format_sweep_table, plan_sweep, tabulate_sweep
from aqa_pipeline.synthetic import moving_square, write_video
from tests.conftest import TINY_SWIN

N_GOOD = 5


# ---------------------------------------------------------------------------- fixtures


def tiny_recipe() -> Recipe:
    """16-frame clips of 64x64 frames through the tests' tiny random Video Swin: fast on a CPU."""
    return Recipe.model_validate({
        "name": "tiny",
        "backbone": {"name": "swin3d", "arch": dict(TINY_SWIN)},
        "sampling": {"method": "consecutive", "clip_len": 16, "stride": 16},
        "preprocess": {"resize": [64, 64], "normalize": "imagenet"},
    })


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
    results = {k: json.loads((tmp_path / "logs" / f"shard-{k}.result.json").read_text())["summary"]
               for k in range(3)}  # fmt: skip
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
