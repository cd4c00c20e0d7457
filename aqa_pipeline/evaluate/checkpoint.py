"""Score a head checkpoint released by its authors on a feature cache (`aqa evaluate
--checkpoint FILE --config CFG --features CACHE`).

The train config names the head and its options (they must be the ones the checkpoint was
trained with), the label scale, the clip handling (data.*) and the test batch size; the
file is read through the head's `authors_layout` (aqa_pipeline.train.heads.authors: safe
loading, `module.` prefixes, their pickle containers, every key and shape checked). Each
fold's test videos are predicted with the fold's fixed evaluation seed, as `aqa train`
does, and written like a run: predictions.csv (protocol `final`, seed = train.seed, epoch
-1: not trained here), baseline.csv (the config's ridge baseline, fitted on each fold's
training rows), clip_outputs.h5 for clip heads, metrics.json (with the checkpoint's path,
sha256 and layout) and report.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aqa_pipeline.datasets import LabelSet, load_labels
from aqa_pipeline.errors import AqaError
from aqa_pipeline.features import FeatureSet, check_key
from aqa_pipeline.results import rundir
from aqa_pipeline.results.predictions import Predictions
from aqa_pipeline.results.protocols import summarize
from aqa_pipeline.results.report import write_report
from aqa_pipeline.train.config import TrainConfig
from aqa_pipeline.train.data import TrainData
from aqa_pipeline.train.group import build_group
from aqa_pipeline.train.heads import build_head, head_class
from aqa_pipeline.train.heads.authors import read_head_checkpoint
from aqa_pipeline.train.predict import (
    clip_record,
    eval_seed_of,
    load_feature_set,
    make_inputs,
    predict_test,
    record,
    record_baseline,
)
from aqa_pipeline.train.runner import resolve_head_options, resolve_scale


def score_checkpoint(
    checkpoint: str | Path,
    cfg: TrainConfig,
    features: str | Path | FeatureSet,
    labels: str | LabelSet | None,
    out: str | Path,
    allow_unsafe_pickle: bool = False,
) -> dict[str, Any]:
    """Predict every fold's test videos with the checkpoint's head and write the results
    into `out`; returns the metrics (also out/metrics.json). AqaError (exit 1) for a file
    that does not fit the config's head, naming the file and the key."""
    spec = labels if labels is not None else cfg.labels
    if spec is None:
        raise AqaError("no labels: pass --labels SPEC or set labels: in the config")
    if cfg.data.standardize:
        raise AqaError("data.standardize: a released checkpoint was trained on the features "
                       "as they are; set data.standardize=false")  # fmt: skip
    labels = load_labels(spec)
    kind = head_class(cfg.head_name).input_kind
    fs, cache = load_feature_set(features, clips=kind == "clips")
    check_key(fs.key_fields, cfg.features.require, what=cache, subset=True)
    opts = resolve_head_options(cfg, labels)
    scale = resolve_scale(cfg.label.scale, labels)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = TrainData.build(fs, labels, scale, clips=kind == "clips", cache=cache).to(device)
    init = read_head_checkpoint(
        checkpoint, build_head(cfg.head_name, data.feature_dim, opts), allow_unsafe_pickle
    )
    seed = int(cfg.train.seed)
    group = build_group(
        lambda: init.apply(build_head(cfg.head_name, data.feature_dim, opts)), [seed], cfg, 1,
        device,
    )  # fmt: skip
    preds, baseline = Predictions(), Predictions()
    records: list[dict[str, Any]] = []
    for i, fold in enumerate(labels.folds):
        inputs = make_inputs(kind, data, cfg, [fold.train], None)
        p = predict_test(group, data, inputs, fold, eval_seed_of(i), 1, cfg.test.batch_size,
                         clips=kind == "clips")  # fmt: skip
        record(preds, data, fold, "final", [seed], [-1], p["score"], p.get("sigma"))
        if "clip_index" in p:
            records.append(clip_record(data, fold, "final", seed, p, 0))
        if cfg.eval.baseline == "ridge":
            record_baseline(baseline, data, fold, cfg.eval.baseline_folds)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    preds.write(out / "predictions.csv")
    if len(baseline):
        baseline.write(out / "baseline.csv")
    if records:
        rundir.write_clip_outputs(out / "clip_outputs.h5", records)
    ranges = {f.name: labels.score_range(f) for f in labels.folds}
    metrics = summarize(preds, ranges, scale, cfg.eval.bootstrap, baseline)
    metrics.update({
        "head": cfg.head_name,
        "name": cfg.name,
        "labels": labels.source,
        "features": cache,
        "label_scale": scale,
        "checkpoint": init.provenance(),
    })  # fmt: skip
    rundir.write_json(out / "metrics.json", metrics)
    metrics["report"] = str(write_report(out, metrics, preds))
    return metrics
