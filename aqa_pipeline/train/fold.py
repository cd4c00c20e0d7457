"""One fold of a training run: `train_fold(...) -> FoldResult`.

A fold is a train/test partition of the labels (see aqa_pipeline.datasets):
1. with eval.val_fraction > 0, a validation run: each seed trains on its train rows minus a
   seeded validation part and picks the epoch of best validation Spearman (and, with
   eval.calibrate_sigma, per protocol the factor that makes its validation errors
   unit-variance: at the last epoch for `final`, at the chosen epoch for `val` and
   `best_on_test`; see `calibrate`);
2. the full run: each seed trains on all train rows (same initialisation as in 1), the test
   set is predicted after every epoch; snapshots are kept at the final epoch, at the epoch
   chosen in 1 (`val`) and at the best test epoch (`best_on_test`, what papers report).
Seeds (cfg.train.seeds, the one place they live) train together (vmapped) where the head
allows, else one after the other. The fold returns everything it produced; the runner
gathers the folds and writes the run directory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aqa_pipeline.datasets import Fold
from aqa_pipeline.errors import AqaError
from aqa_pipeline.results.predictions import Predictions
from aqa_pipeline.results.protocols import SMALL_SPLIT, select_epoch
from aqa_pipeline.train.config import TrainConfig
from aqa_pipeline.train.data import TrainData
from aqa_pipeline.train.group import build_group
from aqa_pipeline.train.heads import build_head, head_class
from aqa_pipeline.train.heads.base import HeadOptions
from aqa_pipeline.train.inputs import FeatureNorm
from aqa_pipeline.train.loop import RunOutput, RunPlan, fit_closed_form, predict_rows, run_epochs
from aqa_pipeline.train.predict import (
    clip_record,
    eval_seed_of,
    make_inputs,
    predict_test,
    record,
    record_baseline,
)

log = logging.getLogger(__name__)


@dataclass
class FoldResult:
    """What one fold produced."""

    preds: Predictions = field(default_factory=Predictions)  # test predictions, 3 protocols
    epoch_rows: list[dict[str, Any]] = field(default_factory=list)  # epochs.csv rows
    states: dict[tuple[str, str, int], dict[str, torch.Tensor]] = field(default_factory=dict)
    selected: dict[str, dict[str, int]] = field(default_factory=dict)  # protocol -> seed -> epoch
    norm: tuple[torch.Tensor, torch.Tensor] | None = None  # data.standardize mean, std
    clip_records: list[dict[str, Any]] = field(default_factory=list)
    sigma_scale: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # protocol -> seed -> factor
    sigma_drift: dict[str, dict[str, float]] = field(default_factory=dict)  # likewise (`calibrate`)
    reference: np.ndarray | None = None  # (S, m) rows on which `calibrate` measures the drift
    baseline: dict[str, float] = field(default_factory=dict)  # lambda, cv_spearman
    baseline_preds: Predictions = field(default_factory=Predictions)  # eval.baseline's
    warnings: list[str] = field(default_factory=list)  # what makes its figures mean little


@dataclass(frozen=True)
class FoldSetup:
    """What every fold of a run shares."""

    cfg: TrainConfig
    data: TrainData
    head_opts: HeadOptions
    device: torch.device
    checkpoint_dir: Path | None = None
    init: Any = None  # a HeadInit (train.init_from): every head starts from its weights

    @property
    def seeds(self) -> list[int]:
        return list(self.cfg.train.seeds)

    @property
    def kind(self) -> str:
        return head_class(self.cfg.head_name).input_kind

    def make_head(self) -> Any:
        head = build_head(self.cfg.head_name, self.data.feature_dim, self.head_opts)
        return head if self.init is None else self.init.apply(head)


def validation_split(
    train: np.ndarray, seeds: Sequence[int], fold_index: int, fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per seed a seeded split of the train rows: (train part (S, n - v), val part (S, v))."""
    n_val = max(1, round(len(train) * fraction))
    if n_val >= len(train) - 1:
        raise AqaError(f"eval.val_fraction {fraction} leaves too few training rows ({len(train)})")
    tr, va = [], []
    for seed in seeds:
        perm = np.random.default_rng([seed, fold_index, 2]).permutation(train)
        va.append(np.sort(perm[:n_val]))
        tr.append(np.sort(perm[n_val:]))
    return np.stack(tr), np.stack(va)


REFERENCE_ROWS = 64  # training rows per seed on which calibration measures sigma's drift


def reference_rows(train_part: np.ndarray, fold_index: int) -> np.ndarray:
    """Per seed up to REFERENCE_ROWS seeded rows (S, m) of its validation run's training part:
    rows that both the validation run and the full run train on (see `calibrate`)."""
    m = min(REFERENCE_ROWS, train_part.shape[1])
    return np.stack([np.sort(np.random.default_rng([fold_index, s, 3]).choice(rows, m, False))
                     for s, rows in enumerate(train_part)])  # fmt: skip


def sigma_scale_factor(pred: np.ndarray, sigma: np.ndarray, true: np.ndarray) -> float:
    """sqrt(mean(((true - pred) / sigma)^2)): the factor c that maximises the Gaussian
    likelihood of the errors under sigma * c (so the scaled z-scores have unit variance)."""
    z = (true - pred) / np.maximum(sigma, 1e-12)
    return float(np.sqrt(np.mean(z**2)))


def train_fold(setup: FoldSetup, fold_index: int, fold: Fold) -> FoldResult:
    """Train and record one fold: the validation run (when enabled), then the full run."""
    cfg, seeds, result = setup.cfg, setup.seeds, FoldResult()
    norm = None
    if cfg.data.standardize:
        norm = FeatureNorm.fit(setup.data, fold.train, setup.kind == "clips")
        result.norm = (norm.mean, norm.std)
    epochs: dict[str, list[int]] = {}
    if cfg.eval.val_fraction > 0:
        val = _val_epochs(setup, fold_index, fold, norm, result)
        if val is not None:
            epochs["val"] = val
    log.info("fold %s: full run (%d train / %d test rows)", fold.name, len(fold.train),
             len(fold.test))  # fmt: skip
    out, group, inputs = _run(
        setup,
        fold_index,
        fold,
        "full",
        np.tile(fold.train, (len(seeds), 1)),
        {"test": np.tile(fold.test, (len(seeds), 1))},
        norm,
        result,
        snapshot_at={"val": epochs["val"]} if "val" in epochs else {},
        best_on="test",
    )
    epochs["final"] = out.snapshot_epoch["final"]
    epochs["best_on_test"] = out.snapshot_epoch["best_on_test"]
    calibrate(setup, fold_index, fold, out, group, inputs, result)
    sigma = out.preds["test"].get("sigma")
    for protocol in ("final", "val", "best_on_test"):
        if protocol not in epochs:
            continue
        at = epochs[protocol]
        pick = (at, np.arange(len(seeds)))
        record(result.preds, setup.data, fold, protocol, seeds, at, out.preds["test"]["score"][pick],
               None if sigma is None else sigma[pick], result.sigma_scale.get(protocol))  # fmt: skip
        result.selected[protocol] = {str(seed): int(at[s]) for s, seed in enumerate(seeds)}
        for s, seed in enumerate(seeds):
            result.states[protocol, fold.name, seed] = out.snapshots[protocol][s]
        if setup.kind == "clips":
            stored = out.preds["test"]["score"][pick]
            _clip_outputs(setup, fold_index, fold, protocol, out.snapshots[protocol], stored,
                          group, inputs, result)  # fmt: skip
    if cfg.eval.baseline == "ridge":
        result.baseline = record_baseline(
            result.baseline_preds, setup.data, fold, cfg.eval.baseline_folds
        )
    return result


def _run(
    setup: FoldSetup,
    fold_index: int,
    fold: Fold,
    run: str,
    train_rows: np.ndarray,
    eval_sets: dict[str, np.ndarray],
    norm: FeatureNorm | None,
    result: FoldResult,
    **plan: Any,
) -> tuple[RunOutput, Any, Any]:
    """Train one run (validation or full); returns its output, the group and its inputs."""
    cfg = setup.cfg
    steps = math.ceil(train_rows.shape[1] / cfg.train.batch_size)
    group = build_group(setup.make_head, setup.seeds, cfg, steps, setup.device)
    inputs = make_inputs(setup.kind, setup.data, cfg, list(train_rows), norm)
    checkpoint = (
        setup.checkpoint_dir / f"fold{fold_index}_{run}.pt" if setup.checkpoint_dir else None
    )
    run_plan = RunPlan.of(
        cfg,
        train_rows,
        eval_sets,
        order_key=(fold_index, 0 if run == "full" else 1),
        eval_seed=eval_seed_of(fold_index),
        label=run,
        checkpoint=checkpoint,
        **plan,
    )
    if getattr(head_class(cfg.head_name), "closed_form", False):
        out = fit_closed_form(group, setup.make_head, setup.data, inputs, run_plan)
    else:
        out = run_epochs(group, setup.data, inputs, run_plan)
    eval_name = next(iter(eval_sets))
    for e in range(len(out.lr)):
        for s, seed in enumerate(setup.seeds):
            result.epoch_rows.append({
                "fold": fold.name, "run": run, "seed": seed, "epoch": e, "lr": out.lr[e],
                "train_loss": out.train_loss[e, s], "spearman": out.spearman[eval_name][e, s],
                "seconds": out.seconds[e],
            })  # fmt: skip
    return out, group, inputs


def _val_epochs(
    setup: FoldSetup, fold_index: int, fold: Fold, norm: FeatureNorm | None, result: FoldResult
) -> list[int] | None:
    """Per seed, the epoch of best validation Spearman of a run on train minus val; None
    when that Spearman is undefined at every epoch (a warning says so)."""
    cfg, seeds = setup.cfg, setup.seeds
    tr, va = validation_split(fold.train, seeds, fold_index, cfg.eval.val_fraction)
    log.info("fold %s: validation run (%d train / %d val rows per seed)", fold.name,
             tr.shape[1], va.shape[1])  # fmt: skip
    if va.shape[1] < SMALL_SPLIT:
        result.warnings.append(f"fold {fold.name}: the validation split has {va.shape[1]} "
                               f"videos (< {SMALL_SPLIT}); the val protocol's epoch choice is "
                               "very uncertain")  # fmt: skip
    eval_sets = {"val": va}
    has_sigma = setup.make_head().has_sigma
    if cfg.eval.calibrate_sigma and has_sigma:  # true, or "auto"
        eval_sets["ref"] = reference_rows(tr, fold_index)
    out = _run(setup, fold_index, fold, "val", tr, eval_sets, norm, result)[0]
    undefined = [seed for s, seed in enumerate(seeds) if np.isnan(out.spearman["val"][:, s]).all()]
    if undefined:
        result.warnings.append(f"fold {fold.name}: the validation Spearman is undefined at every "
                               f"epoch for seed(s) {undefined}; the val protocol is not "
                               "reported")  # fmt: skip
        return None
    epochs = [select_epoch(out.spearman["val"][:, s]) for s in range(len(seeds))]
    calibrate = cfg.eval.calibrate_sigma
    if calibrate is True and not has_sigma:
        log.warning("eval.calibrate_sigma: head %s has no sigma; nothing to calibrate",
                    cfg.head_name)  # fmt: skip
    elif calibrate and has_sigma:  # true, or "auto" with a sigma
        p, ref, last = out.preds["val"], out.preds["ref"]["sigma"], len(out.lr) - 1
        fitted_at = {"final": [last] * len(seeds), "val": epochs, "best_on_test": epochs}
        for protocol, at in fitted_at.items():
            result.sigma_scale[protocol] = {
                str(seed): sigma_scale_factor(
                    p["score"][e, s], p["sigma"][e, s], setup.data.labels.score[va[s]]
                )
                for s, (seed, e) in enumerate(zip(seeds, at, strict=True))
            }
            result.sigma_drift[protocol] = {
                str(seed): float(ref[e, s].mean())
                for s, (seed, e) in enumerate(zip(seeds, at, strict=True))
            }
        result.reference = eval_sets["ref"]
    return epochs


def calibrate(
    setup: FoldSetup,
    fold_index: int,
    fold: Fold,
    out: RunOutput,
    group: Any,
    inputs: Any,
    result: FoldResult,
) -> None:
    """Finish the calibration factors once the full run is trained.

    The validation run fits, per protocol and seed, c = sqrt(mean(z^2)) of its validation
    errors z = (true - pred) / sigma at the epoch the protocol reports. A factor fitted on
    one model only carries over to another if both state sigma on the same scale, and they
    need not: the full run trains on more rows, so more steps per epoch, and a sigma trained
    towards the training residuals (the DAE's `stable` loss, any loss late in training)
    keeps shrinking with steps. So both runs also predict the same reference rows (training
    rows of both, `reference_rows`), and the factor applied to the full run's test sigma is
    c * (mean sigma of the validation run / mean sigma of the full run) on those rows.
    """
    if not result.sigma_scale:
        return
    for protocol, states in out.snapshots.items():
        group.load_state_dicts(states)
        p = predict_rows(group, setup.data, inputs, result.reference, setup.cfg.test.batch_size,
                         eval_seed_of(fold_index))  # fmt: skip
        for s, seed in enumerate(setup.seeds):
            before = result.sigma_drift[protocol][str(seed)]
            drift = float(p["sigma"][s].mean()) / max(before, 1e-12)
            result.sigma_drift[protocol][str(seed)] = drift
            result.sigma_scale[protocol][str(seed)] /= max(drift, 1e-12)
    log.info("fold %s: sigma scaled by %s (fitted on validation; drift of sigma on shared "
             "training rows %s)", fold.name, result.sigma_scale, result.sigma_drift)  # fmt: skip


def _clip_outputs(
    setup: FoldSetup,
    fold_index: int,
    fold: Fold,
    protocol: str,
    states: list,
    stored: np.ndarray,
    group: Any,
    inputs: Any,
    result: FoldResult,
) -> None:
    """Re-predict the test set from a snapshot, keeping clip scores and weights;
    `stored` (S, n) are the scores predicted at the selected epochs."""
    group.load_state_dicts(states)
    seeds, data = setup.seeds, setup.data
    p = predict_test(group, data, inputs, fold, eval_seed_of(fold_index), len(seeds),
                     setup.cfg.test.batch_size, clips=True)  # fmt: skip
    if "clip_index" not in p:
        return
    for s, seed in enumerate(seeds):
        if not np.allclose(p["score"][s], stored[s], rtol=1e-4, atol=1e-5 * data.scale):
            log.warning("fold %s %s seed %d: re-predicted scores differ from the epoch's",
                        fold.name, protocol, seed)  # fmt: skip
        result.clip_records.append(clip_record(data, fold, protocol, seed, p, s))
