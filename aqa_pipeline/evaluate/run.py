"""`evaluate_run`: recompute a run's metrics and report, or re-score its heads on a cache.

- evaluate_run(run_dir): metrics.json and report.md from predictions.csv (no features
  needed); on an untouched run this reproduces the metrics written by `aqa train`.
- evaluate_run(run_dir, features=CACHE[, labels=SPEC]): the saved heads predict again on
  CACHE (the training cache or another); results go to `out` (default
  run_dir/rescore/<cache name>/): predictions.csv, metrics.json, report.md, plots.
- timeline=VIDEO_ID|"all": timeline PNGs for heads with per-clip outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aqa_pipeline.datasets import LabelSet
from aqa_pipeline.errors import AqaError
from aqa_pipeline.evaluate.rescore import rescore
from aqa_pipeline.evaluate.timeline import write_timelines
from aqa_pipeline.features import FeatureSet
from aqa_pipeline.results import rundir
from aqa_pipeline.results.predictions import Predictions
from aqa_pipeline.results.protocols import RunInfo, summarize
from aqa_pipeline.results.report import write_report


def evaluate_run(
    run_dir: str | Path,
    features: str | Path | FeatureSet | None = None,
    labels: str | LabelSet | None = None,
    timeline: str | None = None,
    protocol: str = "final",
    seed: int | None = None,
    out: str | Path | None = None,
    n_boot: int | None = None,
) -> dict[str, Any]:
    """Evaluate a run directory; returns the metrics (also written as metrics.json)."""
    run_dir = Path(run_dir)
    sidecar = rundir.read_json(run_dir / "heads.json")
    cfg = rundir.read_yaml(run_dir / "config.yaml")
    n_boot = int(cfg.get("eval", {}).get("bootstrap", 1000)) if n_boot is None else n_boot
    fs = None
    if features is None:
        if labels is not None:
            raise AqaError(
                "--labels needs --features (re-scoring); without both the run's "
                "predictions are evaluated"
            )
        target = run_dir
        preds = Predictions.read(run_dir / "predictions.csv")
        baseline_file = run_dir / "baseline.csv"
        baseline = Predictions.read(baseline_file) if baseline_file.is_file() else None
        ranges = {k: tuple(v) for k, v in sidecar["score_ranges"].items()}
        old = (
            rundir.read_json(run_dir / "metrics.json")
            if (run_dir / "metrics.json").is_file()
            else {}
        )
        info = RunInfo.from_metrics(old).as_dict()
        scale = float(sidecar["label_scale"])
    else:
        preds, res, records, fs = rescore(run_dir, features, labels)
        name = Path(str(res["features"])).stem or "cache"
        target = Path(out) if out else run_dir / "rescore" / name
        target.mkdir(parents=True, exist_ok=True)
        preds.write(target / "predictions.csv")
        baseline = res["baseline"]
        if len(baseline):
            baseline.write(target / "baseline.csv")
        if records:
            rundir.write_clip_outputs(target / "clip_outputs.h5", records)
        ranges, scale = res["score_ranges"], res["label_scale"]
        info = {
            "head": sidecar["head"],
            "name": cfg.get("name"),
            "labels": res["labels"],
            "features": res["features"],
            "label_scale": scale,
            "rescored_from": str(run_dir),
        }
    metrics = summarize(preds, ranges, scale, n_boot, baseline)
    metrics.update(info)
    if sidecar.get("sigma_scale"):
        metrics["sigma_scale"] = sidecar["sigma_scale"]
    metrics["warnings"] = list(sidecar.get("warnings", [])) + metrics["warnings"]
    if "baseline" in metrics and sidecar.get("baseline"):
        metrics["baseline"]["per_fold_fit"] = sidecar["baseline"]
    rundir.write_json(target / "metrics.json", metrics)
    if timeline:
        write_timelines(target, timeline, protocol, seed, fs)
    metrics["report"] = str(write_report(target, metrics, preds))
    return metrics
