"""The local engine: tasks run in this process one after the other (`run_in_turn`), in one
worker process per GPU, each with its own CUDA_VISIBLE_DEVICES (`run_per_gpu`), or in a pool
of CPU worker processes sharing the cores (`run_in_pool`; `run_here_or_in_pool` picks).

A task is a picklable zero-argument callable, or a `(fn, arg)` pair meaning `fn(arg)`; what it
returns is its `TaskOutcome.result`. The engine knows nothing of what the tasks do.

With G GPUs and N tasks, task k runs on GPU k mod G (`assign_shards`). A worker process gets
its tasks in a pickle file (LOG_DIR/gpu-<id>.pkl) and writes one result file per task as it
finishes (LOG_DIR/task-<k>.result.pkl), so the parent can follow progress and tell which tasks
a crashed worker left undone. Worker logs go to LOG_DIR/gpu-<id>.log. Inside a worker the one
visible GPU is cuda:0, whatever its id outside.

Ctrl-C (or an interrupted worker) stops the run: the parent gives the workers a few seconds
to stop by themselves, terminates the rest, waits for them and raises KeyboardInterrupt, for
the caller to say what was kept. A worker never records an interruption (KeyboardInterrupt,
`aqa_pipeline.errors.Interrupted`) as the failure of a task: it stops and exits 130.

Run as a module (`python -m aqa_pipeline.launch.local WORK.pkl`) this file is the worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm import tqdm

from aqa_pipeline.errors import EXIT_INTERRUPTED, AqaError, Interrupted
from aqa_pipeline.launch.outcome import TaskOutcome

POLL_S = 0.5
GRACE_S = 3.0  # after Ctrl-C, how long workers (interrupted too) get to stop by themselves
STOP_S = 10.0  # how long terminated workers get to exit before they are killed

# A task: fn() or, as a pair, fn(arg).
Task = Callable[[], Any] | tuple[Callable[[Any], Any], Any]


def call_task(task: Task) -> Any:
    """Run one task: `fn()` for a callable, `fn(arg)` for a `(fn, arg)` pair."""
    if isinstance(task, tuple):
        fn, arg = task
        return fn(arg)
    return task()


def describe_error(exc: BaseException) -> str:
    """'ExceptionType: message', with an AqaError's user-facing message."""
    message = exc.format_message() if isinstance(exc, AqaError) else str(exc)
    return f"{type(exc).__name__}: {message}"


def run_in_turn(tasks: Sequence[Task], *, stop_on_error: bool = False) -> list[TaskOutcome]:
    """Run the tasks here, one after the other.

    An exception ends its task only (recorded in its outcome) unless `stop_on_error`, when it
    propagates. An interruption (Ctrl-C, `Interrupted`) always propagates."""
    outcomes = []
    for k, task in enumerate(tasks):
        try:
            outcomes.append(TaskOutcome(k, result=call_task(task)))
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as exc:
            if stop_on_error:
                raise
            outcomes.append(TaskOutcome(k, error=describe_error(exc)))
    return outcomes


Notify = Callable[[int, TaskOutcome], None]  # called as each task ends: (index, outcome)


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a Slurm allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_in_pool(tasks: Sequence[Task], jobs: int, notify: Notify) -> list[TaskOutcome]:
    """The tasks in `jobs` spawned worker processes, each with cores // jobs torch threads
    (a task may still set its own); `notify` is called as each ends. A task's exception is
    its outcome's error, as is a worker's death (BrokenProcessPool: e.g. killed for memory).
    On an interruption the workers are terminated and it propagates (what the tasks saved
    is theirs to resume)."""
    threads = max(1, available_cores() // jobs)
    pool = ProcessPoolExecutor(jobs, multiprocessing.get_context("spawn"), _set_torch_threads,
                               (threads,))  # fmt: skip
    outcomes: dict[int, TaskOutcome] = {}
    try:
        futures = {pool.submit(call_task, task): k for k, task in enumerate(tasks)}
        for future in as_completed(futures):
            k, exc = futures[future], future.exception()
            outcomes[k] = TaskOutcome(k, error=describe_error(exc)) if exc else TaskOutcome(
                k, result=future.result())  # fmt: skip
            notify(k, outcomes[k])
    except BaseException:
        # no public way to stop a running task: terminate this process's workers
        for worker in multiprocessing.active_children():
            worker.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return [outcomes[k] for k in range(len(tasks))]


def run_here_or_in_pool(tasks: Sequence[Task], jobs: int, notify: Notify) -> list[TaskOutcome]:
    """In turn in this process (jobs=1 or a single task), else in a pool of `jobs` workers."""
    if jobs > 1 and len(tasks) > 1:
        return run_in_pool(tasks, min(jobs, len(tasks)), notify)
    outcomes = []
    for k, task in enumerate(tasks):
        (outcome,) = run_in_turn([task])
        outcome.index = k
        notify(k, outcome)
        outcomes.append(outcome)
    return outcomes


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


def assign_shards(n_tasks: int, gpus: list[str]) -> dict[str, list[int]]:
    """Task (shard) k -> GPU k mod G; GPUs left without a task are not used."""
    plan: dict[str, list[int]] = {}
    for k in range(n_tasks):
        plan.setdefault(gpus[k % len(gpus)], []).append(k)
    return plan


def run_per_gpu(
    tasks: Sequence[Task],
    gpus: list[str],
    log_dir: Path,
    progress: bool | None = None,
    *,
    unit: str = "task",
) -> list[TaskOutcome]:
    """One worker process per GPU (CUDA_VISIBLE_DEVICES=<id>) running its tasks in turn;
    waits for all of them. A task that raised, or that its worker died before finishing, has
    an error and the worker's log. On Ctrl-C, or when a worker was interrupted, every worker
    is terminated and KeyboardInterrupt raised."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    plan = assign_shards(len(tasks), gpus)
    for k in range(len(tasks)):
        result_path(log_dir, k).unlink(missing_ok=True)
    workers: dict[str, tuple[subprocess.Popen, Path]] = {}
    outcomes: dict[int, TaskOutcome] = {}
    bar = tqdm(total=len(tasks), unit=unit, disable=None if progress is None else not progress)
    try:
        for gpu, ids in plan.items():
            work_file = log_dir / f"gpu-{gpu}.pkl"
            work_file.write_bytes(pickle.dumps([(k, tasks[k]) for k in ids]))
            log_path = log_dir / f"gpu-{gpu}.log"
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "aqa_pipeline.launch.local", str(work_file)],
                    env=env, stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
            workers[gpu] = (proc, log_path)
        while True:
            running = [gpu for gpu, (proc, _) in workers.items() if proc.poll() is None]
            for k in range(len(tasks)):
                if k not in outcomes and result_path(log_dir, k).exists():
                    outcomes[k] = _read_result(log_dir, k, workers[_gpu_of(plan, k)][1])
                    bar.update(1)
            interrupted = [gpu for gpu, (proc, _) in workers.items()
                           if proc.returncode in (EXIT_INTERRUPTED, -signal.SIGINT)]  # fmt: skip
            if interrupted:
                tqdm.write(f"the worker for GPU {', '.join(interrupted)} was interrupted; "
                           "stopping the others", file=sys.stderr)  # fmt: skip
                raise KeyboardInterrupt
            if not running:
                break
            time.sleep(POLL_S)
    except BaseException:
        stop_workers([proc for proc, _ in workers.values()])
        raise
    finally:
        bar.close()
    for k in range(len(tasks)):
        if k not in outcomes:
            gpu = _gpu_of(plan, k)
            proc, log_path = workers[gpu]
            outcomes[k] = TaskOutcome(
                k, error=f"the worker process for GPU {gpu} exited with code {proc.returncode} "
                         f"before finishing this {unit}", logs=[str(log_path)],
            )  # fmt: skip
    return [outcomes[k] for k in sorted(outcomes)]


def stop_workers(
    procs: list[subprocess.Popen], grace: float = GRACE_S, timeout: float = STOP_S
) -> None:
    """Stop the workers and wait for them: `grace` s to end by themselves (a Ctrl-C at the
    terminal interrupts them too, and they close their stores), then SIGTERM, then SIGKILL
    after `timeout` s."""
    live = [p for p in procs if p.poll() is None]
    _wait_all(live, grace)
    for p in live:
        if p.poll() is None:
            p.terminate()
    _wait_all(live, timeout)
    for p in live:
        if p.poll() is None:
            p.kill()
            p.wait()


def _wait_all(procs: list[subprocess.Popen], seconds: float) -> None:
    end = time.monotonic() + seconds
    for p in procs:
        try:
            p.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass


def _gpu_of(plan: dict[str, list[int]], k: int) -> str:
    return next(gpu for gpu, ids in plan.items() if k in ids)


def result_path(log_dir: Path, k: int) -> Path:
    """Where a worker leaves task k's result: {"result": value} or {"error": text} (pickled)."""
    return Path(log_dir) / f"task-{k}.result.pkl"


def read_result(log_dir: Path, k: int) -> dict[str, Any]:
    """The pickled result file of task k."""
    return pickle.loads(result_path(log_dir, k).read_bytes())


def _read_result(log_dir: Path, k: int, log_path: Path) -> TaskOutcome:
    data = read_result(log_dir, k)
    if "result" in data:
        return TaskOutcome(k, result=data["result"])
    return TaskOutcome(k, error=data["error"], logs=[str(log_path)])


def _write_result(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pickle.dumps(data))
    os.replace(tmp, path)


def worker_main(work_file: Path) -> None:
    """The per-GPU worker: run each (k, task) in turn, one result file per task. A task's
    exception is its result; an interruption ends the worker (the parent stops the run)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    work: list[tuple[int, Task]] = pickle.loads(Path(work_file).read_bytes())
    log_dir = Path(work_file).parent
    print(f"worker pid {os.getpid()}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}, "
          f"tasks {[k for k, _ in work]}", flush=True)  # fmt: skip
    for k, task in work:
        try:
            result = call_task(task)
        except (Interrupted, KeyboardInterrupt):
            raise  # not a failure of this task: the whole run stops
        except Exception as exc:  # reported per task by the parent; the next task still runs
            traceback.print_exc()
            _write_result(result_path(log_dir, k), {"error": describe_error(exc)})
            continue
        try:
            _write_result(result_path(log_dir, k), {"result": result})
        except Exception as exc:  # e.g. a result that does not pickle
            traceback.print_exc()
            _write_result(result_path(log_dir, k), {"error": "cannot return the result: "
                                                             + describe_error(exc)})  # fmt: skip


def main(argv: list[str]) -> int:
    try:
        worker_main(Path(argv[0]))
    except (Interrupted, KeyboardInterrupt) as exc:
        detail = exc.format_message() if isinstance(exc, Interrupted) else "interrupted (Ctrl-C)"
        print(f"worker pid {os.getpid()} stops: {detail}", flush=True)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
