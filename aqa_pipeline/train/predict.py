"""The one predict-and-record path, shared by training and by re-scoring saved heads
(`aqa evaluate --features`): inputs for a head's kind, the fixed evaluation seed of a fold,
and turning predicted scores into rows of predictions.csv and clip-output records.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from aqa_pipeline.datasets import Fold
from aqa_pipeline.errors import AqaError
from aqa_pipeline.features import FeatureSet, read_features
from aqa_pipeline.results.predictions import BASELINE, BASELINE_SEED, Predictions
from aqa_pipeline.train.baseline import ridge_baseline
from aqa_pipeline.train.config import TrainConfig
from aqa_pipeline.train.data import TrainData
from aqa_pipeline.train.inputs import ClipInputs, FeatureNorm, PairInputs, VideoInputs
from aqa_pipeline.train.loop import predict_rows

log = logging.getLogger(__name__)


def eval_seed_of(fold_index: int) -> int:
    """The fixed RNG seed of every evaluation pass of a fold (also used when re-scoring)."""
    return 7919 * (fold_index + 1)


def load_feature_set(features: str | Path | FeatureSet, clips: bool) -> tuple[FeatureSet, str]:
    """(feature set, its name): a cache path is read, an in-memory set is used as it is."""
    if isinstance(features, FeatureSet):
        return features, "<in-memory FeatureSet>"
    return read_features(features, clips=clips), str(features)


def make_inputs(
    kind: str,
    data: TrainData,
    cfg: TrainConfig,
    pools: list[np.ndarray],
    norm: FeatureNorm | None,
) -> Any:
    """The batch maker of a head's input kind ("video", "clips" or "pairs"); `pools` are
    each seed's training rows (the exemplars of the contrastive heads)."""
    d = cfg.data
    if kind == "video":
        return VideoInputs(data, norm)
    if kind == "clips":
        return ClipInputs(data, d.clip_num, d.train_crop, d.test_crop, norm, d.crop_starts)
    if kind == "pairs":
        return PairInputs(data, pools, d.exemplars, norm)
    raise AqaError(f"unknown head input kind {kind!r}")


def record(
    preds: Predictions,
    data: TrainData,
    fold: Fold,
    protocol: str,
    seeds: list[int],
    epochs: list[int],
    score: np.ndarray,
    sigma: np.ndarray | None,
    sigma_scale: dict[str, float] | None = None,
) -> None:
    """Add the test predictions of every seed to `preds`: score / sigma (S, n) in dataset
    units, made at epochs[s]; sigma is multiplied by the seed's calibration factor."""
    ids = [data.labels.video_ids[r] for r in fold.test]
    factors = sigma_scale or {}
    for s, seed in enumerate(seeds):
        preds.add(
            video_ids=ids,
            true=data.labels.score[fold.test],
            pred=score[s],
            sigma=None if sigma is None else sigma[s] * factors.get(str(seed), 1.0),
            seed=seed,
            protocol=protocol,
            fold=fold.name,
            epoch=int(epochs[s]),
        )


def record_baseline(preds: Predictions, data: TrainData, fold: Fold, cv_folds: int) -> dict:
    """Fit the ridge baseline on the fold's training rows (lambda by CV on them only) and add
    its test predictions to `preds` as protocol `baseline`; returns its lambda and CV score."""
    fit = ridge_baseline(data.video.cpu().numpy(), data.labels.score, fold.train, fold.test,
                         cv_folds)  # fmt: skip
    record(preds, data, fold, BASELINE, [BASELINE_SEED], [-1], fit.pred[None], None)
    log.info("fold %s: ridge baseline, lambda %.3g (CV Spearman %.4f on train)", fold.name,
             fit.lam, fit.cv_spearman)  # fmt: skip
    return {"lambda": fit.lam, "cv_spearman": fit.cv_spearman}


def predict_test(
    group: Any,
    data: TrainData,
    inputs: Any,
    fold: Fold,
    eval_seed: int,
    n_seeds: int,
    batch_size: int,
    clips: bool,
) -> dict[str, Any]:
    """The loaded group's predictions of the fold's test videos under the fold's fixed
    evaluation seed (`eval_seed_of`; see loop.predict_rows)."""
    rows = np.tile(fold.test, (n_seeds, 1))
    return predict_rows(group, data, inputs, rows, batch_size, eval_seed, clips)


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
