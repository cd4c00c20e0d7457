"""The built-in demo is the main job end to end: videos -> cache -> DAE -> evaluation."""

from __future__ import annotations

import json

from aqa_pipeline.cli.demo import run_demo
from aqa_pipeline.features import read_features


def test_demo_runs_end_to_end_and_ranks_the_motion(tmp_path):
    result = run_demo(tmp_path / "demo", workers=0)
    metrics = json.loads((tmp_path / "demo" / "run" / "metrics.json").read_text())
    assert metrics["spearman"] == result["metrics"]["spearman"]
    assert metrics["spearman"] >= 0.5, metrics["spearman"]  # a working pipeline, not noise
    assert metrics["n_test"] == 16 and len(metrics["seeds"]) == 3
    fs = read_features(tmp_path / "demo" / "features.h5")
    assert fs.n_videos == 64 and fs.ok_mask.all()
    assert fs.key_fields["weights"]["random_init"] is True
    assert (tmp_path / "demo" / "run" / "report.md").exists()
    assert (tmp_path / "demo" / "run" / "predictions.csv").read_text().startswith("video_id")
