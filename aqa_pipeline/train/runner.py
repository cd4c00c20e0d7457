"""`run_training`: train a head on cached features for every fold and seed, write the run
directory and return the metrics.

Per fold (a train/test partition of the labels; see aqa_pipeline.datasets):
1. with eval.val_fraction > 0, a validation run: each seed trains on its train rows minus a
   seeded validation part and picks the epoch of best validation Spearman;
2. the full run: each seed trains on all train rows (same initialisation as in 1), the test
   set is predicted after every epoch; snapshots are kept at the final epoch, at the epoch
   chosen in 1 (`val`) and at the best test epoch (`best_on_test`, what papers report).
Seeds train together (vmapped) where the head allows, else one after the other.

Every run saves checkpoints under run_dir/checkpoints/ (train.checkpoint_minutes), removed
when training completes; `resume=True` continues a killed run from them, after checking
that the resolved config is the one the run directory was started with.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aqa_pipeline.config import diff_fields
from aqa_pipeline.datasets import Fold, LabelSet, load_labels
from aqa_pipeline.errors import AqaError, MismatchError
from aqa_pipeline.evaluate.predictions import Predictions
from aqa_pipeline.evaluate.protocols import select_epoch, summarize
from aqa_pipeline.features import FeatureSet, check_key, read_features
from aqa_pipeline.train import rundir
from aqa_pipeline.train.checkpoint import checkpoint_dir, partial_dir
from aqa_pipeline.train.config import TrainConfig, resolve_config
from aqa_pipeline.train.data import TrainData
from aqa_pipeline.train.group import build_group
from aqa_pipeline.train.heads import build_head, head_class, head_options
from aqa_pipeline.train.heads.base import Head, HeadOptions
from aqa_pipeline.train.heads.common import PATH_FIELDS
from aqa_pipeline.train.inputs import ClipInputs, FeatureNorm, PairInputs, VideoInputs
from aqa_pipeline.train.loop import RunOutput, predict_rows, run_epochs

log = logging.getLogger(__name__)


def eval_seed_of(fold_index: int) -> int:
    """The fixed RNG seed of every evaluation pass of a fold (also used when re-scoring)."""
    return 7919 * (fold_index + 1)


def load_feature_set(features: str | Path | FeatureSet, clips: bool) -> tuple[FeatureSet, str]:
    if isinstance(features, FeatureSet):
        return features, "<in-memory FeatureSet>"
    return read_features(features, clips=clips), str(features)


def resolve_head_options(cfg: TrainConfig, labels: LabelSet) -> HeadOptions:
    """The head's validated options; multi-path heads get num_paths from the labels."""
    opts = cfg.head_options()
    field = opts.get("paths")
    if field in PATH_FIELDS and opts.get("num_paths") is None:
        values = getattr(labels, field)
        if values is None:
            raise AqaError(f"head {cfg.head_name}: paths={field} but {labels.source} has no {field}")
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


def make_inputs(
    kind: str,
    data: TrainData,
    cfg: TrainConfig,
    pools: list[np.ndarray],
    norm: FeatureNorm | None,
) -> Any:
    d = cfg.data
    if kind == "video":
        return VideoInputs(data, norm)
    if kind == "clips":
        return ClipInputs(data, d.clip_num, d.train_crop, d.test_crop, norm)
    if kind == "pairs":
        return PairInputs(data, pools, d.exemplars, norm)
    raise AqaError(f"unknown head input kind {kind!r}")


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


class Trainer:
    """Holds what every fold shares: config, data, head factory, and the outputs so far."""

    def __init__(
        self,
        cfg: TrainConfig,
        data: TrainData,
        head_opts: HeadOptions,
        device: torch.device,
        checkpoint_dir: Path | None = None,
    ):
        self.cfg, self.data, self.device = cfg, data, device
        self.checkpoint_dir = checkpoint_dir
        self.seeds: list[int] = list(cfg.train.seeds)
        self.name = cfg.head_name
        self.head_opts = head_opts
        self.kind = head_class(self.name).input_kind
        self.preds = Predictions()
        self.epoch_rows: list[dict[str, Any]] = []
        self.states: dict[tuple[str, str, int], dict[str, torch.Tensor]] = {}
        self.selected: dict[str, dict[str, dict[str, int]]] = {}
        self.norms: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.clip_records: list[dict[str, Any]] = []
        self.sigma_scale: dict[str, dict[str, float]] = {}  # fold -> seed -> factor

    def make_head(self) -> Head:
        return build_head(self.name, self.data.feature_dim, self.head_opts)

    def _run(
        self,
        fold_index: int,
        train_rows: np.ndarray,
        eval_sets: dict[str, np.ndarray],
        run: str,
        norm: FeatureNorm | None,
        **kw: Any,
    ) -> tuple[RunOutput, Any, Any]:
        """Train one run; returns its output, the trained group and its inputs."""
        steps = math.ceil(train_rows.shape[1] / self.cfg.train.batch_size)
        group = build_group(self.make_head, self.seeds, self.cfg, steps, self.device)
        inputs = make_inputs(self.kind, self.data, self.cfg, list(train_rows), norm)
        out = run_epochs(
            group,
            self.data,
            inputs,
            train_rows,
            eval_sets,
            self.cfg,
            self.seeds,
            order_key=(fold_index, 0 if run == "full" else 1),
            eval_seed=eval_seed_of(fold_index),
            label=run,
            checkpoint=self.checkpoint_dir / f"fold{fold_index}_{run}.pt"
            if self.checkpoint_dir
            else None,
            checkpoint_seconds=60 * self.cfg.train.checkpoint_minutes,
            **kw,
        )
        self._epoch_log(self.data.labels.folds[fold_index].name, run, out, next(iter(eval_sets)))
        return out, group, inputs

    def _epoch_log(self, fold: str, run: str, out: RunOutput, eval_name: str) -> None:
        for e in range(len(out.lr)):
            for s, seed in enumerate(self.seeds):
                self.epoch_rows.append(
                    {
                        "fold": fold,
                        "run": run,
                        "seed": seed,
                        "epoch": e,
                        "lr": out.lr[e],
                        "train_loss": out.train_loss[e, s],
                        "spearman": out.spearman[eval_name][e, s],
                        "seconds": out.seconds[e],
                    }
                )

    def fold(self, fold_index: int, fold: Fold) -> None:
        """Train and record one fold: the validation run (when enabled), then the full run."""
        s_n = len(self.seeds)
        norm = None
        if self.cfg.data.standardize:
            norm = FeatureNorm.fit(self.data, fold.train, self.kind == "clips")
            self.norms[fold.name] = (norm.mean, norm.std)
        epochs: dict[str, list[int]] = {}
        if self.cfg.eval.val_fraction > 0:
            epochs["val"] = self._val_epochs(fold_index, fold, norm)
        log.info("fold %s: full run (%d train / %d test rows)", fold.name, len(fold.train),
                 len(fold.test))  # fmt: skip
        out, group, inputs = self._run(
            fold_index,
            np.tile(fold.train, (s_n, 1)),
            {"test": np.tile(fold.test, (s_n, 1))},
            "full",
            norm,
            snapshot_at={"val": epochs["val"]} if "val" in epochs else {},
            best_on="test",
        )
        epochs["final"] = out.snapshot_epoch["final"]
        epochs["best_on_test"] = out.snapshot_epoch["best_on_test"]
        for protocol in ("final", "val", "best_on_test"):
            if protocol in epochs:
                self._record(fold, protocol, epochs[protocol], out)
                if self.kind == "clips":
                    stored = out.preds["test"]["score"][epochs[protocol], np.arange(s_n)]
                    states = out.snapshots[protocol]
                    self._clip_outputs(fold_index, fold, protocol, states, stored, group, inputs)

    def _val_epochs(self, fold_index: int, fold: Fold, norm: FeatureNorm | None) -> list[int]:
        """Per seed, the epoch of best validation Spearman of a run on train minus val."""
        tr, va = validation_split(
            fold.train, self.seeds, fold_index, self.cfg.eval.val_fraction
        )
        log.info("fold %s: validation run (%d train / %d val rows per seed)", fold.name,
                 tr.shape[1], va.shape[1])  # fmt: skip
        out = self._run(fold_index, tr, {"val": va}, "val", norm)[0]
        epochs = [select_epoch(out.spearman["val"][:, s]) for s in range(len(self.seeds))]
        if self.cfg.eval.calibrate_sigma and "sigma" not in out.preds["val"]:
            log.warning("eval.calibrate_sigma: head %s has no sigma; nothing to calibrate",
                        self.name)  # fmt: skip
        elif self.cfg.eval.calibrate_sigma:
            p = out.preds["val"]
            self.sigma_scale[fold.name] = {
                str(seed): sigma_scale_factor(
                    p["score"][e, s], p["sigma"][e, s], self.data.labels.score[va[s]]
                )
                for s, (seed, e) in enumerate(zip(self.seeds, epochs, strict=True))
            }
            log.info("fold %s: sigma scaled by %s (fitted on validation)", fold.name,
                     self.sigma_scale[fold.name])  # fmt: skip
        return epochs

    def _record(self, fold: Fold, protocol: str, epochs: list[int], out: RunOutput) -> None:
        """Test predictions and weights of every seed at its selected epoch."""
        ids = [self.data.labels.video_ids[r] for r in fold.test]
        sigma = out.preds["test"].get("sigma")
        self.selected.setdefault(protocol, {})[fold.name] = {
            str(seed): int(epochs[s]) for s, seed in enumerate(self.seeds)
        }
        factors = self.sigma_scale.get(fold.name, {})
        for s, seed in enumerate(self.seeds):
            e = epochs[s]
            self.preds.add(
                video_ids=ids,
                true=self.data.labels.score[fold.test],
                pred=out.preds["test"]["score"][e, s],
                sigma=None if sigma is None else sigma[e, s] * factors.get(str(seed), 1.0),
                seed=seed,
                protocol=protocol,
                fold=fold.name,
                epoch=e,
            )
            self.states[protocol, fold.name, seed] = out.snapshots[protocol][s]

    def _clip_outputs(
        self,
        fold_index: int,
        fold: Fold,
        protocol: str,
        states: list,
        stored: np.ndarray,
        group: Any,
        inputs: Any,
    ) -> None:
        """Re-predict the test set from a snapshot, keeping clip scores and weights;
        `stored` (S, n) are the scores predicted at the selected epochs."""
        group.load_state_dicts(states)
        rows = np.tile(fold.test, (len(self.seeds), 1))
        p = predict_rows(
            group,
            self.data,
            inputs,
            rows,
            self.cfg.test.batch_size,
            eval_seed_of(fold_index),
            clips=True,
        )
        if "clip_index" not in p:
            return
        for s, seed in enumerate(self.seeds):
            if not np.allclose(p["score"][s], stored[s], rtol=1e-4, atol=1e-5 * self.data.scale):
                log.warning(
                    "fold %s %s seed %d: re-predicted scores differ from the epoch's",
                    fold.name,
                    protocol,
                    seed,
                )
            self.clip_records.append(clip_record(self.data, fold, protocol, seed, p, s))


def sigma_scale_factor(pred: np.ndarray, sigma: np.ndarray, true: np.ndarray) -> float:
    """sqrt(mean(((true - pred) / sigma)^2)): the factor c that maximises the Gaussian
    likelihood of the errors under sigma * c (so the scaled z-scores have unit variance)."""
    z = (true - pred) / np.maximum(sigma, 1e-12)
    return float(np.sqrt(np.mean(z**2)))


def clip_record(
    data: TrainData, fold: Fold, protocol: str, seed: int, p: dict, s: int
) -> dict[str, Any]:
    """Per-video clip outputs of seed s, with the source frame range of every clip."""
    assert data.clip_start is not None and data.clip_frames is not None
    frames = []
    for r, idx in zip(fold.test, p["clip_index"][s], strict=True):
        frames.append(data.clip_frames[int(data.clip_start[r]) + np.asarray(idx, dtype=np.int64)])
    rec = {
        "protocol": protocol,
        "seed": seed,
        "fold": fold.name,
        "video_ids": [data.labels.video_ids[r] for r in fold.test],
        "clip_index": p["clip_index"][s],
        "clip_frames": frames,
    }
    for key in ("clip_scores", "clip_weights"):
        if key in p:
            rec[key] = p[key][s]
    return rec


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
) -> dict[str, Any]:
    """Train config's head on `features` with `labels` (spec or LabelSet; None = the
    config's `labels`), write `run_dir` and return the metrics (metrics.json).

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
        metrics = _train(cfg, features, labels, work, t0, resume)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    rundir.publish(work, run_dir)
    return metrics


def _train(
    cfg: TrainConfig, features: Any, labels: Any, run_dir: Path, t0: float, resume: bool
) -> dict[str, Any]:
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
    checkpoints = run_dir / "checkpoints"
    if resume:
        check_same_config(run_dir / "config.yaml", cfg)  # before anything is written
        found = sorted(p.name for p in checkpoints.glob("*.pt"))
        log.info("resuming %s: checkpoints %s", run_dir, found or "none (starting over)")
    rundir.write_yaml(run_dir / "config.yaml", cfg.plain())
    rundir.write_json(run_dir / "environment.json", rundir.environment(str(device)))
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
    trainer = Trainer(cfg, data, head_opts, device, checkpoints)
    for i, fold in enumerate(labels.folds):
        trainer.fold(i, fold)
    rundir.write_epochs(run_dir / "epochs.csv", trainer.epoch_rows)
    trainer.preds.write(run_dir / "predictions.csv")
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
        "epochs": trainer.selected,
        "standardize": cfg.data.standardize,
        "sigma_scale": trainer.sigma_scale,
        "labels": labels.source,
        "cache": {"path": cache, "cache_key": fs.cache_key, "key_fields": fs.key_fields},
    }
    rundir.save_heads(run_dir, trainer.states, trainer.norms, sidecar)
    if trainer.clip_records:
        rundir.write_clip_outputs(run_dir / "clip_outputs.h5", trainer.clip_records)
    ranges = {f.name: labels.score_range(f) for f in labels.folds}
    metrics = summarize(trainer.preds, ranges, scale, cfg.eval.bootstrap)
    metrics.update(run_info(cfg, cache, labels, time.perf_counter() - t0))
    if trainer.sigma_scale:
        metrics["sigma_scale"] = trainer.sigma_scale
    rundir.write_json(run_dir / "metrics.json", metrics)
    shutil.rmtree(checkpoints, ignore_errors=True)
    from aqa_pipeline.evaluate.report import write_report

    write_report(run_dir, metrics)
    log.info(
        "done: spearman %.4f (final), %s (val), %.4f (best on test) in %.1fs",
        metrics["spearman"],
        _fmt(metrics["spearman_val"]),
        metrics["spearman_best_on_test"],
        time.perf_counter() - t0,
    )
    return metrics


def run_info(cfg: TrainConfig, cache: str, labels: LabelSet, seconds: float) -> dict[str, Any]:
    return {
        "head": cfg.head_name,
        "name": cfg.name,
        "labels": labels.source,
        "features": cache,
        "label_scale": cfg.label.scale,
        "train_epochs": cfg.train.epochs,
        "train_seconds": round(seconds, 2),
    }


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
