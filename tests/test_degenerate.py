"""No number that means nothing: undefined figures are NaN (null in JSON) with a warning
naming the split and the reason; small splits, collapsed predictions and skipped bootstrap
resamples are said, in metrics.json, the report and the console."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from aqa_pipeline.cli import main
from aqa_pipeline.results import metrics as M
from aqa_pipeline.results.predictions import Predictions
from aqa_pipeline.results.protocols import summarize
from aqa_pipeline.results.rundir import write_json
from aqa_pipeline.train import run_training
from tests.train_fixtures import config, make_cache, write_labels


def predictions(pred: np.ndarray, true: np.ndarray, seeds=(0,)) -> Predictions:
    preds = Predictions()
    ids = [f"v{i:03d}" for i in range(len(true))]
    for seed in seeds:
        for protocol in ("final", "best_on_test"):
            preds.add(video_ids=ids, true=true, pred=pred, sigma=None, seed=seed,
                      protocol=protocol, fold="split", epoch=0)  # fmt: skip
    return preds


@pytest.mark.parametrize(
    "pred, true, reason",
    [
        ([1.0], [2.0], "1 video(s)"),
        ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], "constant predictions"),
        ([1.0, 2.0, 3.0], [5.0, 5.0, 5.0], "constant labels"),
        ([1.0, float("nan"), 3.0], [1.0, 2.0, 3.0], "non-finite predictions"),
    ],
)
def test_an_undefined_spearman_is_nan_with_its_reason(pred, true, reason):
    assert math.isnan(M.spearman(pred, true))
    assert reason in M.spearman_undefined(pred, true)
    assert M.spearman_undefined([1.0, 2.0], [2.0, 1.0]) is None
    assert math.isnan(M.fisher_z_mean([0.5, float("nan")]))


def test_undefined_figures_are_null_in_json_and_warned(tmp_path):
    true = np.linspace(10, 20, 12)
    m = summarize(predictions(np.full(12, 15.0), true), {"split": (10.0, 20.0)}, None, 100)
    assert math.isnan(m["spearman"])
    assert any("final, fold split, seed 0: Spearman undefined (constant predictions)" in w
               for w in m["warnings"])  # fmt: skip
    write_json(tmp_path / "m.json", m)
    saved = json.loads((tmp_path / "m.json").read_text())  # strict JSON: no NaN token
    assert saved["spearman"] is None and saved["protocols"]["final"]["spearman"] is None


def test_collapsed_predictions_are_flagged_even_with_a_perfect_spearman():
    true = np.linspace(0, 100, 20)
    pred = 50 + 1e-5 * np.arange(20)  # a range of 2e-4: collapsed, but perfectly ordered
    m = summarize(predictions(pred, true), {"split": (0.0, 100.0)}, None, 50)
    assert m["spearman"] == pytest.approx(1.0)
    assert any("collapsed predictions" in w for w in m["warnings"])
    ok = summarize(predictions(true * 0.9, true), {"split": (0.0, 100.0)}, None, 50)
    assert not any("collapsed" in w for w in ok["warnings"])


def test_small_test_splits_and_skipped_resamples_are_said():
    true = np.array([1.0, 1.0, 1.0, 2.0, 2.0])
    pred = np.array([0.1, 0.3, 0.2, 0.9, 0.8])
    m = summarize(predictions(pred, true), {"split": (1.0, 2.0)}, None, 500)
    assert any("the test split has 5 videos (< 10)" in w for w in m["warnings"])
    skipped = m["protocols"]["final"]["spearman_ci95_skipped"]
    assert 0 < skipped < 500  # resamples that drew one label value only
    assert any(f"{skipped} of 500 bootstrap resamples" in w for w in m["warnings"])
    lo, hi = m["spearman_ci95"]
    assert np.isfinite(lo) and np.isfinite(hi)


def test_a_one_video_validation_split_reports_no_val_figure(tmp_path):
    """The validation Spearman of one video is undefined at every epoch: instead of silently
    choosing epoch 0, the run says so and reports val as null."""
    cache, scores = make_cache(tmp_path / "f.h5")
    labels = f"csv:{write_labels(tmp_path / 'l.csv', scores)}"
    cfg = config("mlp", epochs=3, eval={"val_fraction": 0.02})  # 30 train rows -> 1 video
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(main, ["train", "--config", str(cfg_file), "--features", str(cache),
                                    "--labels", labels, "--run-dir", str(tmp_path / "run")])  # fmt: skip
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "run/metrics.json").read_text())
    assert saved["spearman_val"] is None and "val" not in saved["protocols"]
    warnings = "\n".join(saved["warnings"])
    assert "the validation split has 1 videos (< 10)" in warnings
    assert "validation Spearman is undefined at every epoch" in warnings
    assert "warning: fold split: the validation Spearman is undefined" in res.output
    assert "## Warnings" in (tmp_path / "run/report.md").read_text()
    again = run_training(cfg, cache, labels, tmp_path / "run2", seeds=1)
    assert again["spearman_val"] is None
