"""Re-score a run's saved heads on a feature cache (the training cache or another one).

Each fold's heads (one per protocol and seed) predict that fold's test videos, with the
same evaluation RNG seed as in training: on the training cache this reproduces
predictions.csv. Another cache must have the same feature width; differing provenance
(backbone, weights, sampling) is reported, not refused, since that is the point of
re-scoring; the config's features.require still applies (exit 3).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from aqa_pipeline.config import diff_fields
from aqa_pipeline.datasets import LabelSet, load_labels
from aqa_pipeline.errors import AqaError, MismatchError
from aqa_pipeline.features import FeatureSet, check_key
from aqa_pipeline.results.predictions import Predictions
from aqa_pipeline.results.rundir import load_heads, read_yaml
from aqa_pipeline.train.config import resolve_config
from aqa_pipeline.train.data import TrainData
from aqa_pipeline.train.group import build_group
from aqa_pipeline.train.heads import build_head, head_class
from aqa_pipeline.train.inputs import FeatureNorm
from aqa_pipeline.train.predict import (
    clip_record,
    load_feature_set,
    make_inputs,
    predict_test,
    record,
    record_baseline,
)

log = logging.getLogger(__name__)


def rescore(
    run_dir: Path, features: str | Path | FeatureSet, labels: str | LabelSet | None = None
) -> tuple[Predictions, dict[str, Any], list[dict[str, Any]], FeatureSet]:
    """(predictions, info, clip records, feature set) of the saved heads on `features`.

    info has "score_ranges", "label_scale", "labels", "features" and "baseline" (the ridge
    baseline refitted on this cache's training rows, when the run's eval.baseline is ridge)."""
    sidecar, states, norms = load_heads(run_dir)
    cfg = resolve_config(read_yaml(run_dir / "config.yaml"), where=str(run_dir / "config.yaml"))
    labels = load_labels(labels if labels is not None else sidecar["labels"])
    name, kind = sidecar["head"], sidecar["input_kind"]
    head_class(name)
    fs, cache = load_feature_set(features, clips=kind == "clips")
    check_key(fs.key_fields, cfg.features.require, what=cache, subset=True)
    if fs.feature_dim != sidecar["in_dim"]:
        raise MismatchError(
            f"{cache}: the heads of {run_dir} read {sidecar['in_dim']}-d features",
            {"feature_dim": (fs.feature_dim, sidecar["in_dim"])},
        )
    changed = diff_fields(fs.key_fields, sidecar["cache"]["key_fields"])
    if changed:
        log.warning("%s differs from the training cache in: %s", cache, ", ".join(changed))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = TrainData.build(fs, labels, float(sidecar["label_scale"]), kind == "clips", cache).to(
        device
    )
    seeds = [int(s) for s in sidecar["seeds"]]
    preds, baseline = Predictions(), Predictions()
    records: list[dict[str, Any]] = []
    for fold in labels.folds:
        if fold.name not in sidecar["folds"]:
            raise AqaError(
                f"{labels.source}: fold {fold.name!r} has no saved heads in {run_dir} "
                f"(folds: {sidecar['folds']})"
            )
        norm = FeatureNorm(*norms[fold.name]) if sidecar["standardize"] else None
        group = build_group(
            lambda: build_head(name, data.feature_dim, **sidecar["head_options"]),
            seeds,
            cfg,
            1,
            device,
        )
        inputs = make_inputs(kind, data, cfg, [fold.train] * len(seeds), norm)
        for protocol, per_fold in sidecar["epochs"].items():
            group.load_state_dicts([states[protocol, fold.name, seed] for seed in seeds])
            eval_seed = int(sidecar["eval_seeds"][fold.name])
            p = predict_test(group, data, inputs, fold, eval_seed, len(seeds), cfg.test.batch_size,
                             clips=kind == "clips")  # fmt: skip
            epochs = [per_fold[fold.name][str(seed)] for seed in seeds]
            factors = sidecar.get("sigma_scale", {}).get(fold.name, {})
            if any(isinstance(f, dict) for f in factors.values()):  # per protocol (new runs)
                factors = factors.get(protocol, {})
            record(preds, data, fold, protocol, seeds, epochs, p["score"], p.get("sigma"), factors)
            if "clip_index" in p:
                records += [clip_record(data, fold, protocol, seed, p, s)
                            for s, seed in enumerate(seeds)]  # fmt: skip
        if cfg.eval.baseline == "ridge":  # refitted on this cache's training rows
            record_baseline(baseline, data, fold, cfg.eval.baseline_folds)
    info = {
        "baseline": baseline,
        "score_ranges": {f.name: labels.score_range(f) for f in labels.folds},
        "label_scale": float(sidecar["label_scale"]),
        "labels": labels.source,
        "features": cache,
    }
    return preds, info, records, fs
