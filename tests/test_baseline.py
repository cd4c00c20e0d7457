"""The ridge baseline beside every run: closed form, lambda by CV on the training rows only,
reported with the head's paired difference, reproduced by evaluate and re-scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from aqa_pipeline.cli import main
from aqa_pipeline.evaluate import evaluate_run
from aqa_pipeline.results.metrics import paired_spearman_difference, spearman
from aqa_pipeline.results.predictions import Predictions
from aqa_pipeline.train import run_training
from aqa_pipeline.train.baseline import LAMBDAS, ridge_baseline, ridge_cv, ridge_fit
from tests.train_fixtures import config, make_cache, write_labels


def test_ridge_fit_is_the_closed_form_solution():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=30)
    w, mx, my = ridge_fit(x, y, np.array([0.5, 3.0]))
    xc, yc = x - x.mean(0), y - y.mean()
    for lam, wl in zip((0.5, 3.0), w, strict=True):
        np.testing.assert_allclose(wl, np.linalg.solve(xc.T @ xc + lam * np.eye(5), xc.T @ yc))
    assert my == pytest.approx(y.mean()) and np.allclose(mx, x.mean(0))


def test_lambda_comes_from_cv_on_train_and_test_labels_are_never_read():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 12))
    y = x[:, 0] + 0.5 * rng.normal(size=80)
    train, test = np.arange(60), np.arange(60, 80)
    fit = ridge_baseline(x, y, train, test)
    poisoned = y.copy()
    poisoned[test] = rng.normal(size=20) * 1e6  # nonsense test labels
    again = ridge_baseline(x, poisoned, train, test)
    assert again.lam == fit.lam and np.array_equal(again.pred, fit.pred)
    assert fit.lam == ridge_cv(x[train], y[train])[0] and fit.lam in LAMBDAS
    assert spearman(fit.pred, y[test]) > 0.5  # it learned the signal


def test_a_model_against_itself_differs_by_zero():
    rng = np.random.default_rng(2)
    pred, true = rng.normal(size=(3, 25)), rng.normal(size=25)
    diff, lo, hi = paired_spearman_difference([(pred, pred, true)], 200)
    assert diff == 0 and lo == 0 and hi == 0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("baseline")
    cache, scores = make_cache(tmp / "f.h5")
    labels = f"csv:{write_labels(tmp / 'l.csv', scores)}"
    metrics = run_training(config("mlp", epochs=3), cache, labels, tmp / "run", seeds=2)
    return tmp, cache, labels, metrics


def test_every_run_reports_the_baseline_and_the_paired_difference(run):
    tmp, _, _, metrics = run
    saved = json.loads((tmp / "run/metrics.json").read_text())
    base, vs = saved["baseline"], saved["vs_baseline"]
    assert base["name"] == "ridge" and -1 <= base["spearman"] <= 1
    assert base["per_fold_fit"]["split"]["lambda"] in LAMBDAS
    lo, hi = vs["ci95"]
    assert lo <= vs["difference"] <= hi
    assert vs["difference"] == pytest.approx(metrics["spearman"] - base["spearman"], abs=1e-9)
    for protocol in ("final", "val", "best_on_test"):
        assert "difference" in saved["protocols"][protocol]["vs_baseline"]
    rows = Predictions.read(tmp / "run/baseline.csv")
    head = Predictions.read(tmp / "run/predictions.csv")
    assert sorted(rows.video_id) == sorted(head.select("final", "split", 0)["video_id"])
    assert "ridge baseline" in (tmp / "run/report.md").read_text()


def test_evaluate_and_rescoring_reproduce_the_baseline(run):
    tmp, cache, _, metrics = run
    again = evaluate_run(tmp / "run")
    assert again["baseline"]["spearman"] == metrics["baseline"]["spearman"]
    assert again["vs_baseline"] == metrics["vs_baseline"]
    rescored = evaluate_run(tmp / "run", features=cache, out=tmp / "rescored")
    a = Predictions.read(tmp / "run/baseline.csv")
    b = Predictions.read(tmp / "rescored/baseline.csv")
    np.testing.assert_allclose(b.pred, a.pred, rtol=1e-9)
    assert rescored["baseline"]["spearman"] == pytest.approx(metrics["baseline"]["spearman"])


def test_the_baseline_can_be_turned_off_and_the_console_shows_it(run, tmp_path):
    tmp, cache, labels, _ = run
    cfg_file = tmp_path / "mlp.yaml"
    cfg_file.write_text(yaml.safe_dump(config("mlp", epochs=2)))
    args = ["train", "--config", str(cfg_file), "--features", str(cache), "--labels", labels]
    res = CliRunner().invoke(main, [*args, "--run-dir", str(tmp_path / "on")])
    assert res.exit_code == 0, res.output
    assert "ridge baseline: Spearman" in res.output and "minus ridge" in res.output
    res = CliRunner().invoke(
        main, [*args, "--run-dir", str(tmp_path / "off"), "--set", "eval.baseline=none"]
    )
    assert res.exit_code == 0, res.output
    off = json.loads((tmp_path / "off/metrics.json").read_text())
    assert "baseline" not in off and "vs_baseline" not in off
    assert not (tmp_path / "off/baseline.csv").exists() and "ridge" not in res.output


def test_ridge_is_a_head_of_its_own(run, tmp_path):
    """Fitted in closed form, saved and re-scored like any other head; on the same rows it
    is the baseline's model."""
    tmp, cache, labels, metrics = run
    cfg = config("ridge", epochs=1)
    cfg["eval"] = {"val_fraction": 0.2, "bootstrap": 50}
    ridge = run_training(cfg, cache, labels, tmp_path / "ridge", seeds=2)
    assert ridge["spearman"] == pytest.approx(metrics["baseline"]["spearman"])
    assert ridge["spearman_std"] == 0  # deterministic: every seed is the same model
    head = Predictions.read(tmp_path / "ridge/predictions.csv").select("final", "split", 0)
    base = Predictions.read(tmp / "run/baseline.csv").select("baseline", "split", -1)
    np.testing.assert_allclose(head["pred"], base["pred"], rtol=1e-4)
    again = evaluate_run(tmp_path / "ridge", features=cache, out=tmp_path / "re")
    a = Predictions.read(tmp_path / "ridge/predictions.csv")
    b = Predictions.read(tmp_path / "re/predictions.csv")
    np.testing.assert_allclose(b.pred, a.pred, rtol=1e-6)
    assert again["spearman"] == pytest.approx(ridge["spearman"])
