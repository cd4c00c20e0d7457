"""`run_training`: train a head on cached features for every fold and seed, write the run
directory and return the metrics.

1. the config is validated once (`TrainConfig`), the labels and features loaded once;
2. every fold is trained by `fold.train_fold`, which returns a `FoldResult` (validation run,
   full run, the three protocols' predictions and snapshots);
3. the results are gathered into the run directory (`aqa_pipeline.results`), written into
   `.RUN_DIR.partial/` and renamed to RUN_DIR when complete.

Every run saves checkpoints under .RUN_DIR.partial/checkpoints/ (train.checkpoint_minutes);
`resume=True` continues a killed run from them, after checking that the resolved config is
the one the run was started with.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aqa_pipeline.config import diff_fields
from aqa_pipeline.datasets import LabelSet, load_labels
from aqa_pipeline.errors import AqaError, MismatchError
from aqa_pipeline.features import FeatureSet, check_key
from aqa_pipeline.results import rundir
from aqa_pipeline.results.predictions import Predictions
from aqa_pipeline.results.protocols import RunInfo, summarize
from aqa_pipeline.results.report import fmt, write_report
from aqa_pipeline.train.checkpoint import checkpoint_dir, partial_dir
from aqa_pipeline.train.config import TrainConfig, resolve_config
from aqa_pipeline.train.data import TrainData
from aqa_pipeline.train.fold import FoldSetup, train_fold
from aqa_pipeline.train.heads import build_head, head_class, head_options
from aqa_pipeline.train.heads.authors import read_head_checkpoint
from aqa_pipeline.train.heads.base import Head, HeadOptions
from aqa_pipeline.train.heads.common import PATH_FIELDS
from aqa_pipeline.train.predict import eval_seed_of, load_feature_set

log = logging.getLogger(__name__)


def resolve_head_options(cfg: TrainConfig, labels: LabelSet) -> HeadOptions:
    """The head's validated options; multi-path heads get num_paths from the labels."""
    opts = cfg.head_options()
    field = opts.get("paths")
    if field in PATH_FIELDS and opts.get("num_paths") is None:
        values = getattr(labels, field)
        if values is None:
            raise AqaError(
                f"head {cfg.head_name}: paths={field} but {labels.source} has no {field}"
            )
        opts["num_paths"] = int(values.shape[1])
    return head_options(cfg.head_name, opts)


def resolve_scale(scale: Any, labels: LabelSet) -> float:
    """label.scale, or "auto": the largest |score| over the folds' training rows."""
    if scale != "auto":
        return float(scale)
    rows = np.unique(np.concatenate([f.train for f in labels.folds]))
    top = float(np.abs(labels.score[rows]).max())
    return top if top > 0 else 1.0


def check_requirements(head: Head, labels: LabelSet) -> None:
    missing = labels.has(head.requires)
    if missing:
        raise AqaError(
            f"head {type(head).__name__} needs label field(s) {missing}, which {labels.source} "
            "does not provide"
        )


def check_same_config(path: Path, cfg: TrainConfig) -> None:
    """The run directory's saved config equals `cfg`, else MismatchError naming the keys."""
    if not path.is_file():
        raise AqaError(f"{path}: not found; nothing to resume (train without --resume)")
    saved = rundir.read_yaml(path)
    diff = diff_fields(saved, cfg.plain())
    if diff:
        raise MismatchError(f"{path}: the run was started with another config", diff)


def run_training(
    config: dict[str, Any] | TrainConfig,
    features: str | Path | FeatureSet,
    labels: str | LabelSet | None,
    run_dir: str | Path,
    seeds: int | Sequence[int] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    allow_unsafe_pickle: bool = False,
) -> dict[str, Any]:
    """Train config's head on `features` with `labels` (spec or LabelSet; None = the
    config's `labels`), write `run_dir` and return the metrics (metrics.json).
    allow_unsafe_pickle: read a train.init_from file that needs full unpickling.

    The run is written into a temporary sibling (`checkpoint.partial_dir`) and renamed to
    `run_dir` when complete, so a failed or killed run never touches a finished one.
    An existing, non-empty `run_dir` is refused (AqaError, exit 1) unless `overwrite`
    (replaced when the new run completes) or `resume`.
    resume: continue a killed run from its checkpoints; the resolved config must equal the
    one it started with (else MismatchError, exit 3). Without it, an unfinished attempt's
    files are discarded."""
    t0 = time.perf_counter()
    cfg = resolve_config(config, seeds)
    run_dir = Path(run_dir)
    work = partial_dir(run_dir)
    if resume:
        if not checkpoint_dir(run_dir).is_dir():
            raise AqaError(f"{run_dir}: nothing to resume (no checkpoints in {work}); "
                           "train without --resume")  # fmt: skip
    elif run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise AqaError(f"{run_dir}: already holds a run; pass --overwrite to replace it (it is "
                       "replaced only when the new run completes) or choose another --run-dir")  # fmt: skip
    if not resume and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(work / "train.log", mode="a" if resume else "w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("aqa_pipeline")
    root.addHandler(handler)
    old_level = root.level
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        metrics = _train(cfg, features, labels, work, t0, resume, allow_unsafe_pickle)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    rundir.publish(work, run_dir)
    return metrics


def _train(
    cfg: TrainConfig,
    features: Any,
    labels: Any,
    work: Path,
    t0: float,
    resume: bool,
    allow_unsafe_pickle: bool = False,
) -> dict[str, Any]:
    """Train every fold and write the run into `work` (the partial dir)."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    spec = labels if labels is not None else cfg.labels
    if spec is None:
        raise AqaError("no labels: pass --labels SPEC or set labels: in the config")
    labels = load_labels(spec)
    cls = head_class(cfg.head_name)
    fs, cache = load_feature_set(features, clips=cls.input_kind == "clips")
    check_key(fs.key_fields, cfg.features.require, what=cache, subset=True)
    head_opts = resolve_head_options(cfg, labels)
    scale = resolve_scale(cfg.label.scale, labels)
    cfg.label.scale = scale
    cfg.labels = labels.source
    cfg.features.path = cache
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = TrainData.build(fs, labels, scale, clips=cls.input_kind == "clips", cache=cache)
    data = data.to(device)
    check_requirements(build_head(cfg.head_name, data.feature_dim, head_opts), labels)
    init = None
    if cfg.train.init_from:  # the head's authors' checkpoint, checked before any work
        init = read_head_checkpoint(cfg.train.init_from,
                                    build_head(cfg.head_name, data.feature_dim, head_opts),
                                    allow_unsafe_pickle)  # fmt: skip
    checkpoints = work / "checkpoints"
    if resume:
        check_same_config(work / "config.yaml", cfg)  # before anything is written
        found = sorted(p.name for p in checkpoints.glob("*.pt"))
        log.info("resuming %s: checkpoints %s", work, found or "none (starting over)")
    rundir.write_yaml(work / "config.yaml", cfg.plain())
    environment = rundir.environment(str(device))
    if init is not None:
        environment["init_from"] = init.provenance()
    rundir.write_json(work / "environment.json", environment)
    log.info(
        "head %s on %s (%d-d, %s) with %s: %d fold(s), seeds %s",
        cfg.head_name,
        cache,
        data.feature_dim,
        cls.input_kind,
        labels.source,
        len(labels.folds),
        cfg.train.seeds,
    )
    setup = FoldSetup(cfg, data, head_opts, device, checkpoints, init=init)
    folds = [train_fold(setup, i, fold) for i, fold in enumerate(labels.folds)]
    preds, baseline_preds = Predictions(), Predictions()
    for f in folds:
        preds.extend(f.preds)
        baseline_preds.extend(f.baseline_preds)
    rundir.write_epochs(work / "epochs.csv", [row for f in folds for row in f.epoch_rows])
    preds.write(work / "predictions.csv")
    if len(baseline_preds):
        baseline_preds.write(work / "baseline.csv")
    selected: dict[str, dict[str, dict[str, int]]] = {}
    for fold, f in zip(labels.folds, folds, strict=True):
        for protocol, per_seed in f.selected.items():
            selected.setdefault(protocol, {})[fold.name] = per_seed
    sigma_scale = {fold.name: f.sigma_scale for fold, f in zip(labels.folds, folds, strict=True)
                   if f.sigma_scale}  # fmt: skip
    sigma_drift = {fold.name: f.sigma_drift for fold, f in zip(labels.folds, folds, strict=True)
                   if f.sigma_drift}  # fmt: skip
    baseline = {fold.name: f.baseline for fold, f in zip(labels.folds, folds, strict=True)
                if f.baseline}  # fmt: skip
    train_warnings = [w for f in folds for w in f.warnings]
    sidecar = {
        "format": 1,
        "head": cfg.head_name,
        "head_options": head_opts.plain(),
        "input_kind": cls.input_kind,
        "in_dim": data.feature_dim,
        "label_scale": scale,
        "seeds": list(cfg.train.seeds),
        "folds": [f.name for f in labels.folds],
        "eval_seeds": {f.name: eval_seed_of(i) for i, f in enumerate(labels.folds)},
        "score_ranges": {f.name: list(labels.score_range(f)) for f in labels.folds},
        "epochs": selected,
        "standardize": cfg.data.standardize,
        "sigma_scale": sigma_scale,
        "baseline": baseline,
        "warnings": train_warnings,
        "labels": labels.source,
        "cache": {"path": cache, "cache_key": fs.cache_key, "key_fields": fs.key_fields},
    }
    states = {k: v for f in folds for k, v in f.states.items()}
    norms = {fold.name: f.norm for fold, f in zip(labels.folds, folds, strict=True) if f.norm}
    rundir.save_heads(work, states, norms, sidecar)
    clip_records = [r for f in folds for r in f.clip_records]
    if clip_records:
        rundir.write_clip_outputs(work / "clip_outputs.h5", clip_records)
    ranges = {f.name: labels.score_range(f) for f in labels.folds}
    metrics = summarize(preds, ranges, scale, cfg.eval.bootstrap, baseline_preds)
    info = RunInfo(
        head=cfg.head_name,
        name=cfg.name,
        labels=labels.source,
        features=cache,
        label_scale=scale,
        train_epochs=cfg.train.epochs,
        train_seconds=round(time.perf_counter() - t0, 2),
    )
    metrics.update(info.as_dict())
    if sigma_scale:
        metrics["sigma_scale"] = sigma_scale
        metrics["sigma_drift"] = sigma_drift  # fold.calibrate: already in sigma_scale
    if baseline:
        metrics["baseline"]["per_fold_fit"] = baseline
    metrics["warnings"] = train_warnings + metrics["warnings"]
    for warning in metrics["warnings"]:
        log.warning(warning)
    rundir.write_json(work / "metrics.json", metrics)
    shutil.rmtree(checkpoints, ignore_errors=True)
    write_report(work, metrics)
    log.info(
        "done: spearman %s (final), %s (val), %s (best on test) in %.1fs",
        fmt(metrics["spearman"]),
        fmt(metrics["spearman_val"]),
        fmt(metrics["spearman_best_on_test"]),
        time.perf_counter() - t0,
    )
    return metrics
