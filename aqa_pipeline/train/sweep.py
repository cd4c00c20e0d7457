"""Head sweeps: configs x seeds (x folds) as one Slurm job array (or in turn, here), run by
the generic engine (`aqa_pipeline.launch`), and the table of their results
(`aqa evaluate --sweep DIR`).

    plan_sweep          the runs: SweepRun(name, config, seed, fold, run_dir) each
    TrainRun            the task: one run (skipped when finished, resumed when requeued)
    launch_train_sweep  plan, run here or as a Slurm array, print the table; the exit code
    tabulate_sweep      one row per run from its metrics.json; format_sweep_table prints them
    one_fold / load_with_folds   the labels of one fold; labels checked for the folds asked

A sweep directory:

    SWEEP/sweep.json                          the planned runs (config, seed, fold, run dir)
    SWEEP/runs/<config>-seed<S>[-fold<F>]/    one run directory each, written by run_training
                                              (its metrics.json is what the table reads)
    SWEEP/logs/                               Slurm task logs

Every run trains with one seed, and with folds given, on one fold: an index into the folds
of the labels (e.g. JIGSAWS' 4 cross-validation folds). A requeued run (preemption, time
limit) continues from the checkpoints its first attempt left (`aqa train --resume`).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
from submitit.helpers import Checkpointable, DelayedSubmission

from aqa_pipeline.config import flatten, load_config
from aqa_pipeline.errors import EXIT_OK, EXIT_USER_ERROR, AqaError
from aqa_pipeline.launch import LaunchOptions, follow, make_executor, submit_array
from aqa_pipeline.launch.local import run_in_turn
from aqa_pipeline.train.config import resolve_config

# Metric columns of the table, in this order, when present in metrics.json.
COLUMNS = ("spearman", "spearman_std", "spearman_val", "spearman_best_on_test", "rl2", "mse",
           "baseline.spearman", "vs_baseline.difference")  # fmt: skip


@dataclass
class SweepRun:
    """One task of a sweep: a config (resolved), a seed, maybe a fold, its run directory."""

    name: str
    config_path: str
    config: dict[str, Any]
    seed: int
    fold: int | None
    run_dir: Path


class TrainRun(Checkpointable):
    """Trains one sweep run; imports the training code on the worker, not at submission."""

    def __call__(self, run: SweepRun, features: Any, labels: Any) -> dict[str, Any]:
        from aqa_pipeline.train import run_training
        from aqa_pipeline.train.checkpoint import was_interrupted

        if run.fold is not None:
            labels = one_fold(labels if labels is not None else run.config.get("labels"), run.fold)
        done = run.run_dir / "metrics.json"
        if done.is_file():  # finished by an earlier attempt: a rerun skips it
            return json.loads(done.read_text())
        resume = was_interrupted(run.run_dir)  # a requeued attempt
        return run_training(run.config, features, labels, run.run_dir, [run.seed], resume)

    def checkpoint(self, run: SweepRun, features: Any, labels: Any) -> DelayedSubmission:
        """On preemption/time-out submitit requeues the same run (it resumes)."""
        return DelayedSubmission(TrainRun(), run, features, labels)


def one_fold(labels: Any, fold: int) -> Any:
    """The labels (a spec or LabelSet) restricted to their fold number `fold` (0-based)."""
    label_set = load_with_folds(labels, [fold])
    return replace(label_set, folds=[label_set.folds[fold]])


def load_with_folds(labels: Any, folds: Sequence[int]) -> Any:
    """Load the labels; a clear error when they lack one of `folds`."""
    from aqa_pipeline.datasets import load_labels

    if labels is None:
        raise AqaError("a sweep over folds needs labels (--labels, or labels: in the config)")
    label_set = load_labels(labels)
    names = [f.name for f in label_set.folds]
    missing = [f for f in folds if not 0 <= f < len(names)]
    if missing:
        raise AqaError(f"{label_set.source}: no fold {missing}; it has {len(names)}: {names}")
    return label_set


def plan_sweep(
    configs: Sequence[Path],
    seeds: int | Sequence[int] | None,
    folds: Sequence[int] | None,
    sweep_dir: Path,
    overrides: Sequence[str] = (),
) -> list[SweepRun]:
    """configs x seeds (x folds), each with its run directory under SWEEP/runs/.

    seeds mean what they mean in a single run: None, each config's train.seeds; a count N,
    train.seed .. train.seed + N - 1 of each config; a list, those seeds. Every config is
    validated here, before any run starts."""
    if not configs or (seeds is not None and not isinstance(seeds, int) and not seeds):
        raise AqaError("a sweep needs at least one config and one seed")
    stems = [Path(c).stem for c in configs]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise AqaError(f"sweep: two configs share the name {dup}; run directories would collide")
    runs = []
    for path, stem in zip(configs, stems, strict=True):
        base = load_config(path, overrides, kind="train")
        resolved = resolve_config(base, seeds, where=f"config {path}")
        for seed in resolved.train.seeds:
            for fold in folds or [None]:
                config = copy.deepcopy(base)
                name = f"{stem}-seed{seed}" + (f"-fold{fold}" if fold is not None else "")
                run_dir = Path(sweep_dir).resolve() / "runs" / name
                runs.append(SweepRun(name, str(path), config, int(seed), fold, run_dir))
    return runs


def _absolute(value: Any) -> Any:
    """Paths that exist here become absolute (tasks may start in another directory)."""
    return (
        str(Path(value).resolve())
        if isinstance(value, str | Path) and Path(value).exists()
        else value
    )


def launch_train_sweep(
    configs: Sequence[Path],
    seeds: int | Sequence[int] | None,
    folds: Sequence[int] | None,
    features: Any,
    labels: Any,
    sweep_dir: Path,
    opts: LaunchOptions,
    overrides: Sequence[str] = (),
    progress: bool | None = None,
) -> int:
    """Run every (config, seed, fold) here in turn or as one Slurm array; the exit code
    (0: all runs finished, 1: some did not). With --no-wait it returns after submission."""
    sweep_dir = Path(sweep_dir)
    runs = plan_sweep(configs, seeds, folds, sweep_dir, overrides)
    features, labels = _absolute(features), _absolute(labels)
    if folds:  # a missing fold fails here, not in every task
        specs = {str(s): s for s in (labels or r.config.get("labels") for r in runs)}
        for spec in specs.values():
            load_with_folds(spec, folds)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    plan = [{"name": r.name, "config": r.config_path, "seed": r.seed, "fold": r.fold,
             "run_dir": str(r.run_dir)} for r in runs]  # fmt: skip
    (sweep_dir / "sweep.json").write_text(json.dumps({"runs": plan}, indent=2))
    click.echo(f"sweep of {len(runs)} run(s) in {sweep_dir}")

    if opts.launcher == "slurm":
        executor = make_executor(Path(opts.log_dir or sweep_dir / "logs"), opts, "aqa-train")
        n = len(runs)
        jobs = submit_array(executor, TrainRun(), runs, [features] * n, [labels] * n)
        if not opts.wait:
            click.echo(f"not waiting (--no-wait); when done: aqa evaluate --sweep {sweep_dir}")
            return EXIT_OK
        outcomes = follow(jobs, progress)
    else:  # here, in turn: an error ends its run only (reported with the others)
        outcomes = run_in_turn([functools.partial(TrainRun(), r, features, labels) for r in runs])

    for run, o in zip(runs, outcomes, strict=True):
        if not o.ok:
            click.echo(f"run {run.name} failed: {o.error}", err=True)
            for path in o.logs:
                click.echo(f"  log: {path}", err=True)
    click.echo(format_sweep_table(tabulate_sweep(sweep_dir)))
    failed = sum(not o.ok for o in outcomes)
    if failed:
        click.echo(f"{failed} of {len(runs)} run(s) did not finish", err=True)
        return EXIT_USER_ERROR
    return EXIT_OK


# ---------------------------------------------------------------------------- the table


def tabulate_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per run: name, config, seed, fold, status ('done' or 'missing') and the
    numeric entries of its metrics.json (nested keys dotted)."""
    sweep_dir = Path(sweep_dir)
    plan_file = sweep_dir / "sweep.json"
    if plan_file.exists():
        plan = json.loads(plan_file.read_text())["runs"]
    else:  # a folder of run directories made some other way
        found = sorted(sweep_dir.glob("**/metrics.json"))
        if not found:
            raise AqaError(f"{sweep_dir}: no sweep.json and no run directory with metrics.json")
        plan = [{"name": p.parent.name, "config": None, "seed": None, "fold": None,
                 "run_dir": str(p.parent)} for p in found]  # fmt: skip
    rows = []
    for entry in plan:
        row = {k: entry.get(k) for k in ("name", "config", "seed", "fold", "run_dir")}
        metrics_file = Path(entry["run_dir"]) / "metrics.json"
        if not metrics_file.exists():
            row["status"] = "missing"
        else:
            try:
                metrics = json.loads(metrics_file.read_text())
            except json.JSONDecodeError as exc:
                raise AqaError(f"{metrics_file}: not valid JSON ({exc})") from exc
            row["status"] = "done"
            row.update({k: v for k, v in flatten(metrics).items() if _is_number(v)})
        rows.append(row)
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_sweep_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the runs, then the mean and std of each config's first metric."""
    if not rows:
        return "(no runs)"
    keys = dict.fromkeys(k for r in rows for k in r if k not in ("seed", "fold"))
    numeric = [k for k in keys if any(_is_number(r.get(k)) for r in rows)]
    columns = [c for c in COLUMNS if c in numeric] or numeric[:6]
    header = ["run", "status", *columns]
    body = [[r["name"], r["status"], *(_fmt(r.get(c)) for c in columns)] for r in rows]
    lines = _align([header, *body])
    if columns:
        metric = columns[0]
        by_config: dict[str, list[float]] = {}
        for r in rows:
            if _is_number(r.get(metric)):
                by_config.setdefault(str(r.get("config") or r["name"]), []).append(float(r[metric]))
        summary = []
        for config, values in by_config.items():
            std = statistics.stdev(values) if len(values) > 1 else math.nan
            summary.append([Path(config).stem, f"{len(values)} run(s)",
                            f"{metric} {statistics.fmean(values):.4f} +- {std:.4f}"])  # fmt: skip
        if summary:
            lines += ["", *_align([["config", "runs", "mean +- std"], *summary])]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _align(table: list[list[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    return [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
