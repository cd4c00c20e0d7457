"""The local engine: shards run in this process one after the other, or with `--gpus` in one
worker process per GPU, each with its own CUDA_VISIBLE_DEVICES.

With G GPUs and N shards (default N = G), shard k runs on GPU k mod G. A worker process gets
its shard jobs in a pickle file and writes one result file per shard as it finishes, so the
parent can follow progress and tell which shards a crashed worker left undone. Worker logs
go to LOG_DIR/gpu-<id>.log.

Run as a module (`python -m aqa_pipeline.launch.local WORK.pkl`) this file is the worker.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from aqa_pipeline.errors import AqaError
from aqa_pipeline.extract.runner import ExtractJob
from aqa_pipeline.launch.options import LaunchOptions
from aqa_pipeline.launch.outcome import TaskOutcome
from aqa_pipeline.launch.shards import ExtractShard, default_log_dir, finish, split_job

POLL_S = 0.5


def visible_gpus(spec: str) -> list[str]:
    """GPU ids for `--gpus`: "all" (CUDA_VISIBLE_DEVICES if set, else every CUDA device) or
    an explicit comma-separated list such as "0,1"."""
    spec = spec.strip()
    if spec.lower() == "all":
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        if env is not None:
            ids = [g.strip() for g in env.split(",") if g.strip()]
        else:
            import torch

            ids = [str(i) for i in range(torch.cuda.device_count())]
        if not ids:
            raise AqaError("--gpus all: no GPU is visible on this machine (CUDA_VISIBLE_DEVICES, "
                           "torch.cuda.device_count()); drop --gpus to run on the CPU")  # fmt: skip
        return ids
    ids = [g.strip() for g in spec.split(",")]
    if not all(ids) or len(set(ids)) != len(ids):
        raise AqaError(f"--gpus expects 'all' or distinct device ids like 0,1; got {spec!r}")
    return ids


def assign_shards(n_shards: int, gpus: list[str]) -> dict[str, list[int]]:
    """Shard k -> GPU k mod G; GPUs left without a shard are not used."""
    plan: dict[str, list[int]] = {}
    for k in range(n_shards):
        plan.setdefault(gpus[k % len(gpus)], []).append(k)
    return plan


def launch_extraction_local(job: ExtractJob, opts: LaunchOptions, progress: bool | None) -> int:
    """Run the shards here (in turn) or one worker process per GPU; merge; the exit code."""
    gpus = visible_gpus(opts.gpus) if opts.gpus else []
    n = opts.shards or max(1, len(gpus))
    shard_jobs = split_job(job, n)
    if not gpus:
        outcomes = [
            TaskOutcome(k, result=ExtractShard(progress)(shard_job))
            for k, shard_job in enumerate(shard_jobs)
        ]
    else:
        log_dir = Path(opts.log_dir or default_log_dir(job.output))
        outcomes = run_per_gpu(shard_jobs, gpus, log_dir, progress)
    return finish(job, shard_jobs, outcomes)


def run_per_gpu(
    shard_jobs: list[ExtractJob], gpus: list[str], log_dir: Path, progress: bool | None = None
) -> list[TaskOutcome]:
    """One worker process per GPU (CUDA_VISIBLE_DEVICES=<id>); waits for all of them."""
    log_dir.mkdir(parents=True, exist_ok=True)
    plan = assign_shards(len(shard_jobs), gpus)
    for k in range(len(shard_jobs)):
        _result_path(log_dir, k).unlink(missing_ok=True)
    workers: dict[str, tuple[subprocess.Popen, Path]] = {}
    for gpu, shard_ids in plan.items():
        work = [(k, _on_visible_gpu(shard_jobs[k])) for k in shard_ids]
        work_file = log_dir / f"gpu-{gpu}.pkl"
        work_file.write_bytes(pickle.dumps(work))
        log_path = log_dir / f"gpu-{gpu}.log"
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "aqa_pipeline.launch.local", str(work_file)],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        workers[gpu] = (proc, log_path)

    outcomes: dict[int, TaskOutcome] = {}
    bar = tqdm(
        total=len(shard_jobs), unit="shard", disable=None if progress is None else not progress
    )
    try:
        while True:
            running = [gpu for gpu, (proc, _) in workers.items() if proc.poll() is None]
            for k in range(len(shard_jobs)):
                if k not in outcomes and _result_path(log_dir, k).exists():
                    outcomes[k] = _read_result(log_dir, k, workers[_gpu_of(plan, k)][1])
                    bar.update(1)
            if not running:
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        for proc, _ in workers.values():
            proc.terminate()
        raise
    finally:
        bar.close()
    for k in range(len(shard_jobs)):
        if k not in outcomes:
            gpu = _gpu_of(plan, k)
            proc, log_path = workers[gpu]
            outcomes[k] = TaskOutcome(
                k, error=f"the worker process for GPU {gpu} exited with code {proc.returncode} "
                         "before finishing this shard", logs=[str(log_path)],
            )  # fmt: skip
    return [outcomes[k] for k in sorted(outcomes)]


def _on_visible_gpu(job: ExtractJob) -> ExtractJob:
    """Inside a worker the one visible GPU is cuda:0, whatever its id outside."""
    return replace(job, device="cuda") if job.device.startswith("cuda") else job


def _gpu_of(plan: dict[str, list[int]], k: int) -> str:
    return next(gpu for gpu, ids in plan.items() if k in ids)


def _result_path(log_dir: Path, k: int) -> Path:
    return log_dir / f"shard-{k}.result.json"


def _read_result(log_dir: Path, k: int, log_path: Path) -> TaskOutcome:
    data = json.loads(_result_path(log_dir, k).read_text())
    if "summary" in data:
        return TaskOutcome(k, result=data["summary"])
    return TaskOutcome(k, error=data["error"], logs=[str(log_path)])


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def worker_main(work_file: Path) -> None:
    """The per-GPU worker: run each (k, shard job) in turn, one result file per shard."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    work: list[tuple[int, ExtractJob]] = pickle.loads(work_file.read_bytes())
    log_dir = work_file.parent
    print(f"worker pid {os.getpid()}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}, "
          f"shards {[k for k, _ in work]}", flush=True)  # fmt: skip
    for k, job in work:
        try:
            _write_json(_result_path(log_dir, k), {"summary": ExtractShard()(job)})
        except Exception as exc:  # reported per shard by the parent; the next shard still runs
            traceback.print_exc()
            message = exc.format_message() if isinstance(exc, AqaError) else str(exc)
            _write_json(_result_path(log_dir, k), {"error": f"{type(exc).__name__}: {message}"})


if __name__ == "__main__":
    worker_main(Path(sys.argv[1]))
