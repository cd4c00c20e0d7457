"""`aqa tune`: choose a head's settings by k-fold cross-validation on the training split
only, then (optionally) train the chosen config the usual way.

    plan_tune   the space expanded (a grid, or seeded random draws) and every setting
                validated as a TrainConfig; the CV labels (`cv_labels`); one `Trial` each
    run_trials  the unfinished trials: here in turn, in --jobs processes, or as one Slurm
                array (the launch engine); each is one `run_training` over the k CV folds
    summarize   per trial the CV Spearman (final protocol) per fold, mean and std; ridge on
                the same folds (`ridge_on_folds`); the choice (the best CV mean)
    run_tune    all of it, writing TUNE_DIR (and --then-train RUN_DIR)

The test split stays out: `cv_labels` keeps only the rows of the labels' first fold's TRAIN
split (N_train of them) and deals them into k seeded folds ("cv0".."cv<k-1>": each holds out
about N_train / k rows and trains on the rest). The original test rows are not in that
LabelSet at all, so no run can train on, select on or even look up a test video: a cache
that lacks the test videos works (only the train videos need features). Each CV run sets
eval.val_fraction=0, eval.calibrate_sigma=false, eval.baseline=none and eval.bootstrap=0
(only the per-fold final-epoch Spearman is used). Only --then-train reads the original labels.

A space is a list of grids, each {dotted key: [values]}; its settings are the grids'
products in turn (`--grid k=v1,v2` options make one grid; a `--space FILE` holds a mapping
or a list of them). Values are YAML scalars, like `--set`.

TUNE_DIR:
    trials/<id>/   one run directory per trial (written by run_training; complete once it
                   holds metrics.json). The id hashes the trial's full CV config, the CV
                   folds (ids, train scores) and the cache key, so a rerun skips finished
                   trials and a changed config, fold or cache never reuses one.
    table.csv      trial, status, setting keys, cv_spearman, cv_spearman_std, one column per
                   fold, chosen ("*"); a last row `ridge`
    chosen.yaml    the base config (--config + --set) with the chosen setting applied,
                   validated and complete: `aqa train --config TUNE_DIR/chosen.yaml`
    tune.json      the space, seed, folds and their held-out ids, every trial, ridge, the
                   choice and the --then-train run
    logs/          Slurm task logs

CV Spearman of a trial: `mean` is the run's own figure (Fisher-z over folds, then the mean over
seeds; with one seed the Fisher-z mean of the per-fold values), `std` the sample std over
folds of the per-fold Spearman (each the mean over seeds). Ridge's is aggregated the same way.
"""

from __future__ import annotations

import copy
import csv
import functools
import hashlib
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml
from submitit.helpers import Checkpointable, DelayedSubmission

from aqa_pipeline.config import (
    apply_overrides,
    config_hash,
    diff_fields,
    flatten,
    load_config,
    set_dotted,
)
from aqa_pipeline.datasets import Fold, LabelSet, load_labels
from aqa_pipeline.errors import AqaError
from aqa_pipeline.features import FeatureSet, check_key
from aqa_pipeline.launch import LaunchOptions, TaskOutcome, follow, make_executor, submit_array
from aqa_pipeline.launch.local import run_here_or_in_pool
from aqa_pipeline.results import rundir
from aqa_pipeline.results.metrics import fisher_z_mean, spearman
from aqa_pipeline.train.baseline import ridge_baseline
from aqa_pipeline.train.checkpoint import was_interrupted
from aqa_pipeline.train.config import TrainConfig, resolve_config
from aqa_pipeline.train.data import align
from aqa_pipeline.train.predict import load_feature_set

# Set in every CV run: only the per-fold final-epoch Spearman is used.
CV_OVERRIDES = {"eval.val_fraction": 0, "eval.calibrate_sigma": False, "eval.baseline": "none",
                "eval.bootstrap": 0}  # fmt: skip
# Keys a space may not set: tune fixes them, or they would select on something else.
FIXED = ("eval", "labels", "features", "name", "train.seed", "train.seeds")
CHOSEN_KEYS = ("trial", "setting", "cv_spearman", "cv_spearman_std")
# The run's config fields the runner fills in (compared out when a finished run is reused).
RUNTIME_FIELDS = ("labels", "label.scale", "features.path")

Grid = dict[str, list[Any]]


# ---------------------------------------------------------------------------- the space


def parse_grid(items: Iterable[str]) -> Grid:
    """`--grid key=v1,v2,...` options -> {key: [v1, v2, ...]}; values are YAML scalars (a
    flow list `[1,2]` is one value)."""
    grid: Grid = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise AqaError(f"--grid expects key=v1,v2,..., got {item!r}")
        if key in grid:
            raise AqaError(f"--grid {key} is given twice; list its values once: {key}=a,b")
        try:
            values = yaml.safe_load(f"[{raw}]")
        except yaml.YAMLError:
            values = [yaml.safe_load(v) if v.strip() else "" for v in raw.split(",")]
        grid[key] = list(values)
    return grid


def read_space(path: str | Path) -> list[Grid]:
    """A YAML space file: a mapping {key: [values]} (nested mappings give dotted keys, a
    scalar is one value) or a list of such mappings (their settings one after the other)."""
    path = Path(path)
    if not path.is_file():
        raise AqaError(f"--space {path}: not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as exc:
        raise AqaError(f"--space {path}: invalid YAML: {exc}") from exc
    grids = data if isinstance(data, list) else [data]
    if not grids or not all(isinstance(g, Mapping) for g in grids):
        raise AqaError(f"--space {path}: expected {{key: [values]}} or a list of such mappings")
    return [{k: list(v) if isinstance(v, list) else [v] for k, v in _dotted(g).items()}
            for g in grids]  # fmt: skip


def _dotted(grid: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in grid.items():
        if isinstance(value, Mapping) and value:
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def make_space(grid: Grid | None = None, grids: Sequence[Grid] = ()) -> list[Grid]:
    """The space: the `--space` grids, each extended by the `--grid` keys (a key in both is
    an error); checked: at least one key, no empty value list, no fixed key."""
    grid = dict(grid or {})
    space = [{**g, **grid} for g in grids] if grids else [grid]
    for original in grids:
        both = sorted(set(original) & set(grid))
        if both:
            raise AqaError(f"{', '.join(both)}: given by --grid and in --space; give it once")
    if not any(space):
        raise AqaError("nothing to tune: give --grid KEY=V1,V2,... or --space FILE")
    for g in space:
        for key, values in g.items():
            if not values:
                raise AqaError(f"tune space: {key} has no values")
            if any(key == f or key.startswith(f"{f}.") for f in FIXED):
                raise AqaError(f"tune space: {key} cannot be tuned (fixed: {', '.join(FIXED)}; "
                               "CV runs set eval.*; seeds: --seeds)")  # fmt: skip
    return space


def expand(space: Sequence[Grid], trials: int | None = None, seed: int = 0) -> list[dict]:
    """The settings ({key: value}) of the space: every one, in grid order (the last key
    varies fastest), or `trials` of them drawn without replacement (seeded), in grid order."""
    sizes = [math.prod(len(v) for v in g.values()) for g in space]
    total = sum(sizes)
    if trials is None or trials >= total:
        picks: Iterable[int] = range(total)
    else:
        rng = np.random.default_rng([seed, 1])
        if total <= 10**6:
            picks = sorted(int(i) for i in rng.choice(total, size=trials, replace=False))
        else:  # too many to permute: draw until enough distinct ones
            found: set[int] = set()
            while len(found) < trials:
                found.add(int(rng.integers(total)))
            picks = sorted(found)
    out = []
    for i in picks:
        g = 0
        while i >= sizes[g]:
            i, g = i - sizes[g], g + 1
        setting = {}
        for key in reversed(list(space[g])):
            i, r = divmod(i, len(space[g][key]))
            setting[key] = space[g][key][r]
        out.append(dict(reversed(setting.items())))
    return out


def apply_setting(base: Mapping[str, Any], setting: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the config dict `base` with each dotted key of `setting` set."""
    out = copy.deepcopy(dict(base))
    for key, value in setting.items():
        try:
            set_dotted(out, key, copy.deepcopy(value))
        except AqaError as exc:
            raise AqaError(f"tune space: {exc.format_message()}") from None
    return out


def describe(setting: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in setting.items()) or "(the config as it is)"


# ---------------------------------------------------------------------------- CV labels


def subset_labels(labels: LabelSet, rows: np.ndarray, folds: list[Fold], source: str) -> LabelSet:
    """A LabelSet of only `rows` of `labels` (in that order; every per-row array and the
    ids are cut), with `folds` indexing the new rows. The other rows are not in it."""
    rows = np.asarray(rows, dtype=np.int64)
    cut: dict[str, Any] = {"video_ids": [labels.video_ids[r] for r in rows], "folds": folds,
                           "source": source}  # fmt: skip
    for f in fields(labels):
        value = getattr(labels, f.name)
        if f.name not in cut and isinstance(value, np.ndarray) and len(value) == labels.n:
            cut[f.name] = value[rows]
    return replace(labels, **cut)


def cv_labels(labels: LabelSet, k: int, seed: int) -> LabelSet:
    """The first fold's training rows only, dealt into k seeded CV folds "cv0".."cv<k-1>"
    (fold i holds out positions perm[i::k], sorted, and trains on the rest)."""
    fold = labels.folds[0]
    rows = np.sort(np.asarray(fold.train, dtype=np.int64))
    n = len(rows)
    if k < 2 or n < 2 * k:
        raise AqaError(f"--folds {k}: needs 2 <= k <= {n // 2} ({n} training rows in fold "
                       f"{fold.name!r} of {labels.source})")  # fmt: skip
    perm = np.random.default_rng([seed, 2]).permutation(n)
    held = [np.sort(perm[i::k]) for i in range(k)]
    folds = [Fold(f"cv{i}", np.setdiff1d(np.arange(n), h), h) for i, h in enumerate(held)]
    source = f"{labels.source} [fold {fold.name} train rows, {k}-fold CV, seed {seed}]"
    return subset_labels(labels, rows, folds, source)


# ---------------------------------------------------------------------------- the plan


@dataclass
class Trial:
    """One setting: its id, the setting as given and as resolved (for the table), the CV
    run's full config and its run directory."""

    id: str
    setting: dict[str, Any]
    shown: dict[str, Any]
    config: dict[str, Any]
    run_dir: Path

    @property
    def done(self) -> bool:
        return (self.run_dir / "metrics.json").is_file()


@dataclass
class TunePlan:
    """Everything validated before any training: base config, space, CV labels and trials."""

    base: dict[str, Any]  # --config + --set, as a plain dict
    base_cfg: TrainConfig
    space: list[Grid]
    trials: list[Trial]
    cv: LabelSet  # the first fold's training rows only, k CV folds
    features: Any  # a cache path (absolute) or an in-memory FeatureSet
    cache: str
    x: np.ndarray  # (N_train, D) float64 per-video mean features of cv's rows (for ridge)
    labels: Any  # the original labels (spec or LabelSet): read by --then-train only
    tune_dir: Path
    seed: int
    seeds: int
    n_trials: int | None = None
    notes: list[str] = field(default_factory=list)


def base_config(config: str | Path | Mapping[str, Any], overrides: Sequence[str]) -> dict:
    """--config (a shipped name, a YAML path or a dict) with the --set overrides."""
    if isinstance(config, Mapping):
        return apply_overrides(config, overrides)
    return load_config(config, overrides, kind="train")


def plan_tune(
    config: str | Path | Mapping[str, Any],
    features: str | Path | FeatureSet,
    labels: str | LabelSet | None,
    tune_dir: str | Path,
    space: Sequence[Grid],
    *,
    overrides: Sequence[str] = (),
    trials: int | None = None,
    seed: int = 0,
    folds: int = 5,
    seeds: int = 1,
) -> TunePlan:
    """Validate the config and every setting (AqaError naming the key), then load the labels
    (keeping the first fold's training rows) and the per-video features they need."""
    where = "train config" if isinstance(config, Mapping) else f"config {config}"
    base = base_config(config, overrides)
    base_cfg = resolve_config(base, where=where)
    space = make_space(grids=space)
    cv_settings = []
    for setting in expand(space, trials, seed):
        name = f"tune setting {describe(setting)}"
        resolved = resolve_config(apply_setting(base, setting), where=name)
        flat = flatten(resolved.plain())
        shown = {k: flat.get(k, v) for k, v in setting.items()}
        cv = resolve_config(apply_setting(base, {**setting, **CV_OVERRIDES}), seeds, name)
        cv_settings.append((setting, shown, cv.plain()))
    spec = labels if labels is not None else base_cfg.labels
    if spec is None:
        raise AqaError("no labels: pass --labels SPEC or set labels: in the config")
    full = load_labels(spec)
    notes = []
    if len(full.folds) > 1:
        notes.append(f"{full.source} has {len(full.folds)} folds; tuning on the training rows "
                     f"of the first, {full.folds[0].name!r}")  # fmt: skip
    cv = cv_labels(full, folds, seed)
    del full  # from here on only the training rows exist
    fs, cache = load_feature_set(_absolute(features), clips=False)
    check_key(fs.key_fields, base_cfg.features.require, what=cache, subset=True)
    x = fs.video_features[align(cv, fs, cache)].astype(np.float64)
    key = _cv_key(cv, fs.cache_key)
    tune_dir = Path(tune_dir).resolve()
    plan, seen = [], set()
    for setting, shown, cfg in cv_settings:
        tid = config_hash({"config": cfg, "cv": key}, 10)
        if tid not in seen:  # two settings that resolve to one config run once
            seen.add(tid)
            plan.append(Trial(tid, setting, shown, cfg, tune_dir / "trials" / tid))
    return TunePlan(base, base_cfg, list(space), plan, cv, _absolute(features), cache, x,
                    _absolute(labels), tune_dir, seed, seeds, trials, notes)  # fmt: skip


def _cv_key(cv: LabelSet, cache_key: str) -> str:
    """A hash of what the CV runs see besides their config: ids, every per-row label array
    (scores, difficulty, judges...), the folds and the cache key."""
    arrays = {f.name: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
              for f in fields(cv) if isinstance(v := getattr(cv, f.name), np.ndarray)}  # fmt: skip
    held = [[cv.video_ids[r] for r in f.test] for f in cv.folds]
    return config_hash({"ids": cv.video_ids, "labels": arrays, "held": held, "cache": cache_key})


def _absolute(value: Any) -> Any:
    """Paths that exist here become absolute (tasks may start in another directory)."""
    if isinstance(value, str | Path) and Path(value).exists():
        return str(Path(value).resolve())
    return value


# ---------------------------------------------------------------------------- running


class TrialRun(Checkpointable):
    """Trains one trial: `run_training` of its config on the CV labels (its k folds), into
    its run directory; a finished one is skipped, an interrupted one resumed."""

    def __call__(self, trial: Trial, features: Any, labels: Any) -> float | None:
        from aqa_pipeline.train import run_training

        if trial.done:
            return None
        resume = was_interrupted(trial.run_dir)
        metrics = run_training(trial.config, features, labels, trial.run_dir, resume=resume)
        return metrics.get("train_seconds")

    def checkpoint(self, trial: Trial, features: Any, labels: Any) -> DelayedSubmission:
        """On preemption or time-out submitit requeues the same trial (it resumes)."""
        return DelayedSubmission(TrialRun(), trial, features, labels)


def _steps(trial: Trial) -> float:
    """A trial's relative cost (epochs / batch size: the rows are the same for all): the
    longest start first, so parallel workers end together."""
    return trial.config["train"]["epochs"] / trial.config["train"]["batch_size"]


def run_trials(
    plan: TunePlan, launch: LaunchOptions, jobs: int = 1, progress: bool | None = None
) -> tuple[list[Trial], list[TaskOutcome] | None]:
    """Train the unfinished trials, longest first, here or as one Slurm array (one task
    each): (those trials, their outcomes), the outcomes None after a Slurm submission
    without --wait."""
    todo = sorted((t for t in plan.trials if not t.done), key=_steps, reverse=True)
    click.echo(f"tune: {len(plan.trials)} trial(s) x {len(plan.cv.folds)} folds x "
               f"{plan.seeds} seed(s) in {plan.tune_dir}; {len(plan.trials) - len(todo)} "
               "finished before")  # fmt: skip
    if not todo:
        return todo, []
    if launch.launcher == "slurm":
        executor = make_executor(Path(launch.log_dir or plan.tune_dir / "logs"), launch, "aqa-tune")
        n = len(todo)
        jobs_ = submit_array(executor, TrialRun(), todo, [plan.features] * n, [plan.cv] * n)
        if not launch.wait:
            return todo, None
        return todo, follow(jobs_, progress)

    folds = [f.name for f in plan.cv.folds]

    def notify(k: int, o: TaskOutcome) -> None:
        t = todo[k]
        if o.ok:
            r = trial_row(t, folds)
            state = (f"CV Spearman {r['cv_spearman']:.4f} +- {r['cv_spearman_std']:.4f} "
                     f"({r['train_seconds']} s)")  # fmt: skip
        else:
            state = f"FAILED: {o.error}"
        click.echo(f"trial {t.id} ({describe(t.shown)}): {state}")

    calls = [functools.partial(TrialRun(), t, plan.features, plan.cv) for t in todo]
    return todo, run_here_or_in_pool(calls, jobs, notify)


# ---------------------------------------------------------------------------- results


def _num(value: Any) -> float:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    )


def _std(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def ridge_on_folds(x: np.ndarray, cv: LabelSet, inner_folds: int) -> dict[str, Any]:
    """Ridge on the same CV folds: per fold fitted on its training rows (lambda by
    `inner_folds`-fold CV on them), Spearman on its held-out rows; x (N_train, D)."""
    per, lams = {}, {}
    for f in cv.folds:
        fit = ridge_baseline(x, cv.score, f.train, f.test, inner_folds)
        per[f.name], lams[f.name] = spearman(fit.pred, cv.score[f.test]), fit.lam
    values = list(per.values())
    return {"name": "ridge", "cv_spearman": fisher_z_mean(values),
            "cv_spearman_std": _std(values), "per_fold": per, "lambda": lams}  # fmt: skip


def trial_row(trial: Trial, folds: Sequence[str]) -> dict[str, Any]:
    """A trial's figures from its metrics.json (status "done"), or status "missing"."""
    row: dict[str, Any] = {"trial": trial.id, "status": "missing", "setting": trial.shown,
                           "cv_spearman": math.nan, "cv_spearman_std": math.nan,
                           "per_fold": dict.fromkeys(folds, math.nan), "train_seconds": None}  # fmt: skip
    if not trial.done:
        return row
    metrics = rundir.read_json(trial.run_dir / "metrics.json")
    per = metrics["protocols"]["final"]["per_fold"]
    values = [_num(per.get(f, {}).get("spearman")) for f in folds]
    row.update(status="done", cv_spearman=_num(metrics.get("spearman")),
               cv_spearman_std=_std(values), per_fold=dict(zip(folds, values, strict=True)),
               train_seconds=metrics.get("train_seconds"))  # fmt: skip
    return row


def choose(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The row of the best defined CV mean (the first of equal ones); None if there is none."""
    ok = [r for r in rows if r["status"] == "done" and math.isfinite(r["cv_spearman"])]
    return max(ok, key=lambda r: r["cv_spearman"]) if ok else None


def format_table(
    rows: Sequence[dict], ridge: dict, chosen: dict | None, folds: Sequence[str]
) -> str:
    """The trials (chosen one marked *), then ridge on the same folds."""
    keys = list(dict.fromkeys(k for r in rows for k in r["setting"]))
    header = ["", "trial", "status", *keys, "CV Spearman", "std", *folds]

    def f(v: Any) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else (
            f"{v:.4f}" if isinstance(v, float) else str(v))  # fmt: skip

    body = [["*" if r is chosen else "", r["trial"], r["status"],
             *(str(r["setting"].get(k, "")) for k in keys), f(r["cv_spearman"]),
             f(r["cv_spearman_std"]), *(f(r["per_fold"][n]) for n in folds)] for r in rows]  # fmt: skip
    body.append(["", "ridge", "baseline", *([""] * len(keys)), f(ridge["cv_spearman"]),
                 f(ridge["cv_spearman_std"]), *(f(ridge["per_fold"][n]) for n in folds)])  # fmt: skip
    table = [header, *body]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in table)  # fmt: skip


def write_table(path: Path, rows: Sequence[dict], ridge: dict, chosen: dict | None,
                folds: Sequence[str]) -> None:  # fmt: skip
    keys = list(dict.fromkeys(k for r in rows for k in r["setting"]))
    columns = ["trial", "status", *keys, "cv_spearman", "cv_spearman_std", *folds, "chosen"]

    def cell(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return ""
        return json.dumps(v) if isinstance(v, list | dict) else v

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for r in [*rows, {**ridge, "trial": "ridge", "status": "baseline", "setting": {}}]:
            w.writerow([cell(v) for v in [r["trial"], r["status"],
                        *(r["setting"].get(k, "") for k in keys), r["cv_spearman"],
                        r["cv_spearman_std"], *(r["per_fold"][n] for n in folds),
                        "*" if r is chosen else ""]])  # fmt: skip


def chosen_config(plan: TunePlan, trial: Trial) -> TrainConfig:
    """The base config with the chosen setting applied (not the CV overrides), validated."""
    return resolve_config(apply_setting(plan.base, trial.setting), where="chosen config")


# ---------------------------------------------------------------------------- the whole


@dataclass
class TuneResult:
    plan: TunePlan
    rows: list[dict[str, Any]]
    ridge: dict[str, Any]
    chosen: dict[str, Any] | None
    failed: list[tuple[str, TaskOutcome]]
    then_train: dict[str, Any] | None = None
    submitted: bool = False  # a Slurm array left running (--no-wait)

    @property
    def table(self) -> str:
        return format_table(
            self.rows, self.ridge, self.chosen, [f.name for f in self.plan.cv.folds]
        )


def run_tune(
    plan: TunePlan,
    launch: LaunchOptions | None = None,
    jobs: int = 1,
    then_train: str | Path | None = None,
    progress: bool | None = None,
) -> TuneResult:
    """Run the plan's unfinished trials, tabulate every trial beside ridge, write TUNE_DIR
    and, with a choice and `then_train`, train the chosen config on the original labels."""
    launch = launch or LaunchOptions()
    then_dir = Path(then_train).resolve() if then_train else None
    if then_dir is not None:
        _check_then_train(then_dir)
    for note in plan.notes:
        click.echo(f"note: {note}")
    t0 = time.perf_counter()
    plan.tune_dir.mkdir(parents=True, exist_ok=True)
    ridge = ridge_on_folds(plan.x, plan.cv, plan.base_cfg.eval.baseline_folds)
    todo, outcomes = run_trials(plan, launch, jobs, progress)
    pairs = zip(todo, outcomes, strict=True) if outcomes is not None else []
    failed = [(t.id, o) for t, o in pairs if not o.ok]
    folds = [f.name for f in plan.cv.folds]
    rows = [trial_row(t, folds) for t in plan.trials]
    chosen = choose(rows) if all(r["status"] == "done" for r in rows) else None
    result = TuneResult(plan, rows, ridge, chosen, failed, submitted=outcomes is None)
    _write(result, time.perf_counter() - t0)
    if chosen is not None and then_dir is not None:
        trial = next(t for t in plan.trials if t.id == chosen["trial"])
        result.then_train = _train_chosen(plan, chosen_config(plan, trial), then_dir, launch,
                                          progress)  # fmt: skip
        _write(result, time.perf_counter() - t0)
    return result


def _write(result: TuneResult, seconds: float) -> None:
    """table.csv, tune.json and (with a choice) chosen.yaml."""
    plan, chosen = result.plan, result.chosen
    folds = [f.name for f in plan.cv.folds]
    write_table(plan.tune_dir / "table.csv", result.rows, result.ridge, chosen, folds)
    if chosen is not None:
        trial = next(t for t in plan.trials if t.id == chosen["trial"])
        text = yaml.safe_dump(chosen_config(plan, trial).plain(), sort_keys=False)
        head = (f"# chosen by aqa tune ({plan.tune_dir}): trial {trial.id}, "
                f"{describe(trial.shown)}\n# CV Spearman {chosen['cv_spearman']:.4f} +- "
                f"{chosen['cv_spearman_std']:.4f} over {len(folds)} folds of the training rows; "
                f"ridge {result.ridge['cv_spearman']:.4f}\n")  # fmt: skip
        (plan.tune_dir / "chosen.yaml").write_text(head + text)
    trials = [{**r, "id": r["trial"], "setting": t.setting, "shown": t.shown,
               "run_dir": str(t.run_dir)} for r, t in zip(result.rows, plan.trials, strict=True)]  # fmt: skip
    info = {
        "format": 1,
        "labels": str(plan.cv.source),
        "features": plan.cache,
        "space": plan.space,
        "trials_drawn": plan.n_trials,
        "seed": plan.seed,
        "seeds": plan.seeds,
        "folds": {f.name: [plan.cv.video_ids[r] for r in f.test] for f in plan.cv.folds},
        "n_train": plan.cv.n,
        "cv_overrides": CV_OVERRIDES,
        "trials": trials,
        "failed": {tid: {"error": o.error, "logs": o.logs} for tid, o in result.failed},
        "ridge": result.ridge,
        "chosen": chosen and {k: chosen[k] for k in CHOSEN_KEYS},
        "then_train": result.then_train,
        "seconds": round(seconds, 2),
    }
    rundir.write_json(plan.tune_dir / "tune.json", info)


def _check_then_train(run_dir: Path) -> None:
    """Before any work: RUN_DIR is new, finished (reused if its config is the chosen one),
    or interrupted (resumed)."""
    if not run_dir.exists() or not any(run_dir.iterdir()) or (run_dir / "metrics.json").exists():
        return
    raise AqaError(f"--then-train {run_dir}: holds something that is not a finished run; "
                   "choose another directory")  # fmt: skip


def _train_chosen(
    plan: TunePlan, cfg: TrainConfig, run_dir: Path, launch: LaunchOptions, progress: bool | None
) -> dict[str, Any]:
    """`run_training` of the chosen config on the original labels (every protocol and the
    baseline), here or as a one-task Slurm array; a finished run of that config is reused.
    Returns {run_dir, spearman, ...} from its metrics.json."""
    if (run_dir / "metrics.json").exists():
        # resolved again, both: a default seed count only becomes a list when validated
        saved = resolve_config(rundir.read_yaml(run_dir / "config.yaml")).plain()
        ignore = lambda k: any(k == f or k.startswith(f"{f}.") for f in RUNTIME_FIELDS)  # noqa: E731
        diff = diff_fields(saved, resolve_config(cfg).plain())
        diff = {k: v for k, v in diff.items() if not ignore(k)}
        if diff:
            raise AqaError(f"--then-train {run_dir}: holds a run of another config "
                           f"({', '.join(diff)} differ); choose another directory")  # fmt: skip
        click.echo(f"then-train: {run_dir} already holds the chosen config's finished run")
    else:
        click.echo(
            f"then-train: the chosen config on {_spec(plan.labels, plan.base_cfg)} -> {run_dir}"
        )
        task = Trial("then-train", {}, {}, cfg.plain(), run_dir)
        if launch.launcher == "slurm":
            executor = make_executor(Path(launch.log_dir or plan.tune_dir / "logs"), launch,
                                     "aqa-train")  # fmt: skip
            job = submit_array(executor, TrialRun(), [task], [plan.features], [plan.labels])
            (outcome,) = follow(job, progress)
            if not outcome.ok:
                raise AqaError(f"--then-train: the run failed: {outcome.error} (logs: "
                               f"{', '.join(outcome.logs)})")  # fmt: skip
        else:
            TrialRun()(task, plan.features, plan.labels)
    metrics = rundir.read_json(run_dir / "metrics.json")
    keep = ("spearman", "spearman_std", "spearman_val", "spearman_best_on_test", "train_seconds")
    out = {"run_dir": str(run_dir), **{k: metrics.get(k) for k in keep}}
    if "baseline" in metrics:
        out["baseline_spearman"] = metrics["baseline"]["spearman"]
    return out


def _spec(labels: Any, cfg: TrainConfig) -> str:
    return str(labels.source if isinstance(labels, LabelSet) else labels or cfg.labels)
