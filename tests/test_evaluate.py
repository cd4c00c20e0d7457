"""Metrics against hand values; save -> evaluate round trip; re-scoring on the training
cache and on another one; timelines of a clip-sequence head."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from aqa_pipeline.cli import main
from aqa_pipeline.errors import MismatchError
from aqa_pipeline.evaluate import evaluate_run
from aqa_pipeline.evaluate.rescore import rescore
from aqa_pipeline.features import read_features
from aqa_pipeline.results import metrics as M
from aqa_pipeline.results.predictions import Predictions
from aqa_pipeline.train import run_training
from tests.train_fixtures import config, make_cache, write_labels


def test_metric_values_by_hand():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 1.0, 3.5, 5.0])
    assert M.spearman(p, y) == pytest.approx(0.8)
    assert math.isnan(M.spearman(np.ones(4), y))  # constant predictions rank nothing: undefined
    assert M.mse(p, y) == pytest.approx((0.25 + 1 + 0.25 + 1) / 4)
    assert M.mae(p, y) == pytest.approx(0.75)
    assert M.rl2(p, y, (0.0, 10.0)) == pytest.approx((0.25 + 1 + 0.25 + 1) / 4 / 100 * 100)
    assert M.fisher_z_mean([0.5, 0.9]) == pytest.approx(
        math.tanh((math.atanh(0.5) + math.atanh(0.9)) / 2)
    )
    assert M.fisher_z_mean([1.0]) == 1.0
    sigma = np.array([1.0, 0.5, 1.0, 2.0])
    nll = np.mean(0.5 * np.log(2 * np.pi * sigma**2) + (p - y) ** 2 / (2 * sigma**2))
    assert M.gaussian_nll(p, sigma, y) == pytest.approx(nll)
    # |err| = .5, 1, .5, 1 vs z_.5 * sigma = .674, .337, .674, 1.349
    assert M.coverage(p, sigma, y, 0.5) == pytest.approx(0.75)
    assert M.coverage(p, sigma, y, 0.9) == pytest.approx(0.75)  # 1.645 * .5 < 1
    assert M.sigma_error_spearman(p, sigma, y) == pytest.approx(M.spearman(sigma, np.abs(p - y)))


def test_bootstrap_interval_brackets_the_estimate_and_repeats():
    rng = np.random.default_rng(0)
    true = rng.normal(size=60)
    pred = np.stack([true + rng.normal(scale=s, size=60) for s in (0.5, 0.7)])
    point = np.mean([M.spearman(p, true) for p in pred])
    lo, hi = M.bootstrap_spearman([(pred, true)], n_boot=500, seed=1)
    assert lo < point < hi and hi - lo < 0.3
    assert (lo, hi) == M.bootstrap_spearman([(pred, true)], n_boot=500, seed=1)


def test_paired_bootstrap_difference_of_two_models():
    rng = np.random.default_rng(0)
    true = rng.normal(size=80)
    good = np.stack([true + rng.normal(scale=0.5, size=80) for _ in range(3)])
    poor = true + rng.normal(scale=2.0, size=80)
    diff, lo, hi = M.bootstrap_spearman_difference(good, poor, true, n_boot=500)
    expected = np.mean([M.spearman(p, true) for p in good]) - M.spearman(poor, true)
    assert diff == pytest.approx(expected) and 0 < lo < diff < hi
    back, blo, bhi = M.bootstrap_spearman_difference(poor, good, true, n_boot=500)
    assert back == pytest.approx(-diff) and (blo, bhi) == pytest.approx((-hi, -lo))
    # a model against itself: every resample differs by exactly 0
    assert M.bootstrap_spearman_difference(poor, poor, true, n_boot=100) == (0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    cache, scores = make_cache(tmp / "f.h5", n=40)
    labels = write_labels(tmp / "l.csv", scores)
    cfg = config("dae", epochs=3, head={"loss": "likelihood"}, data={"standardize": True},
                 eval={"calibrate_sigma": False})  # raw sigma (the default calibrates it)  # fmt: skip
    metrics = run_training(cfg, cache, f"csv:{labels}", tmp / "run", seeds=2)
    return tmp, metrics


def test_save_then_evaluate_reproduces_metrics(trained):
    tmp, metrics = trained
    on_disk = json.loads((tmp / "run/metrics.json").read_text())
    again = evaluate_run(tmp / "run")
    assert again.pop("report").endswith("report.md")
    assert again == on_disk == json.loads(json.dumps(metrics))


def test_rescoring_the_training_cache_reproduces_predictions(trained):
    tmp, metrics = trained
    res = CliRunner().invoke(
        main, ["evaluate", "--run-dir", str(tmp / "run"), "--features", str(tmp / "f.h5")]
    )
    assert res.exit_code == 0, res.output
    out = tmp / "run/rescore/f"
    a = Predictions.read(tmp / "run/predictions.csv")
    b = Predictions.read(out / "predictions.csv")
    assert a.video_id == b.video_id and a.protocol == b.protocol and a.epoch == b.epoch
    np.testing.assert_allclose(b.pred, a.pred, rtol=1e-6)
    np.testing.assert_allclose(b.sigma, a.sigma, rtol=1e-6)
    rescored = json.loads((out / "metrics.json").read_text())
    for key in ("spearman", "spearman_val", "spearman_best_on_test", "rl2", "coverage_90"):
        assert rescored[key] == pytest.approx(metrics[key])


def test_rescoring_another_cache(trained, tmp_path):
    tmp, _ = trained
    other, _ = make_cache(
        tmp_path / "other.h5", n=40, seed=7, key_fields={"backbone": {"name": "other"}}
    )
    m = evaluate_run(tmp / "run", features=other, out=tmp_path / "out")
    assert (tmp_path / "out/predictions.csv").is_file() and m["features"] == str(other)
    wide, _ = make_cache(tmp_path / "wide.h5", n=40, dim=12)
    with pytest.raises(MismatchError, match=r"feature_dim: 12 != 8"):
        evaluate_run(tmp / "run", features=wide)
    res = CliRunner().invoke(
        main, ["evaluate", "--run-dir", str(tmp / "run"), "--features", str(wide)]
    )
    assert res.exit_code == 3


def test_timelines_for_a_clip_sequence_head(tmp_path):
    cache, scores = make_cache(tmp_path / "f.h5", n=24, clips=(2, 6))
    labels = write_labels(tmp_path / "l.csv", scores)
    cfg = config(
        "clip_attention_test",
        epochs=2,
        data={"clip_num": 3, "train_crop": "random", "test_crop": "full"},
    )
    run = tmp_path / "run"
    run_training(cfg, cache, f"csv:{labels}", run, seeds=2)
    fs = read_features(cache)
    with h5py.File(run / "clip_outputs.h5") as f:
        g = f["final/seed0"]
        ids = [v.decode() for v in g["video_ids"][()]]
        off = g["offsets"][()]
        i = ids.index("v004")
        frames = g["clip_frames"][off[i] : off[i + 1]]
        np.testing.assert_array_equal(frames, fs.frames(fs.index("v004")))  # whole video at test
        w = g["clip_weights"][off[i] : off[i + 1]]
        assert w.sum() == pytest.approx(1.0, abs=1e-5)
    res = CliRunner().invoke(
        main, ["evaluate", "--run-dir", str(run), "--timeline", "v004", "--seed", "1"]
    )
    assert res.exit_code == 0, res.output
    assert (run / "timelines/v004.png").stat().st_size > 1000
    assert "timelines/v004.png" in (run / "report.md").read_text()
    res = CliRunner().invoke(main, ["evaluate", "--run-dir", str(run), "--timeline", "v001"])
    assert res.exit_code == 1 and "no clip outputs for video 'v001'" in res.output
    m = evaluate_run(run, features=cache, timeline="all")
    assert len(list((run / "rescore/f/timelines").glob("*.png"))) == 6 and m["n_test"] == 6


def test_sigma_calibrated_on_validation(trained, tmp_path):
    from aqa_pipeline.errors import AqaError
    from aqa_pipeline.train.fold import sigma_scale_factor

    assert sigma_scale_factor(np.zeros(2), np.array([1.0, 2.0]), np.array([3.0, 2.0])) == (
        pytest.approx(math.sqrt((9 + 1) / 2))
    )
    tmp, raw_metrics = trained
    cfg = config("dae", epochs=3, head={"loss": "likelihood"}, data={"standardize": True},
                 eval={"calibrate_sigma": True})  # fmt: skip
    metrics = run_training(cfg, tmp / "f.h5", f"csv:{tmp / 'l.csv'}", tmp_path / "cal", seeds=2)
    raw = Predictions.read(tmp / "run/predictions.csv")
    cal = Predictions.read(tmp_path / "cal/predictions.csv")
    np.testing.assert_allclose(cal.pred, raw.pred, rtol=1e-6)  # the same training
    factors = metrics["sigma_scale"]["split"]  # protocol -> seed -> factor
    assert set(factors) == {"final", "val", "best_on_test"}
    assert all(set(f) == {"0", "1"} for f in factors.values())
    assert all(f > 0 and f != 1 for per in factors.values() for f in per.values())
    drift = metrics["sigma_drift"]["split"]  # full-run sigma / validation-run sigma
    assert set(drift) == set(factors) and all(d > 0 for p in drift.values() for d in p.values())
    fitted = {p: {s: f * drift[p][s] for s, f in per.items()} for p, per in factors.items()}
    assert fitted["val"] == pytest.approx(fitted["best_on_test"])  # both at the val epoch
    ratio = np.array(cal.sigma) / np.array(raw.sigma)
    expected = [factors[p][str(s)] for p, s in zip(cal.protocol, cal.seed, strict=True)]
    np.testing.assert_allclose(ratio, expected, rtol=1e-5)
    val_epochs = {s: e for p, s, e in zip(cal.protocol, cal.seed, cal.epoch, strict=True)
                  if p == "val"}  # fmt: skip
    for seed, epoch in val_epochs.items():  # final's factor is fitted at the last epoch
        same = fitted["final"][str(seed)] == pytest.approx(fitted["val"][str(seed)])
        assert same == (epoch == 2), (seed, epoch, factors)
    assert metrics["coverage_90"] != raw_metrics["coverage_90"]
    rescored, *_ = rescore(tmp_path / "cal", tmp / "f.h5")
    np.testing.assert_allclose(rescored.sigma, cal.sigma, rtol=1e-5)
    with pytest.raises(AqaError, match="calibrate_sigma needs a validation split"):
        run_training({**cfg, "eval": {"calibrate_sigma": True, "val_fraction": 0}}, tmp / "f.h5",
                     f"csv:{tmp / 'l.csv'}", tmp_path / "bad")  # fmt: skip


def test_sigma_calibration_on_a_head_without_sigma_says_so(trained, tmp_path, caplog):
    tmp, _ = trained
    cfg = config("mlp", epochs=1, eval={"calibrate_sigma": True})
    with caplog.at_level("WARNING"):
        metrics = run_training(cfg, tmp / "f.h5", f"csv:{tmp / 'l.csv'}", tmp_path / "m", seeds=1)
    assert "head mlp has no sigma; nothing to calibrate" in caplog.text
    assert "sigma_scale" not in metrics


def test_sigma_is_calibrated_by_default_when_a_validation_split_exists(trained, tmp_path, caplog):
    tmp, _ = trained
    cfg = config("dae", epochs=3, head={"loss": "likelihood"}, data={"standardize": True})
    auto = run_training(cfg, tmp / "f.h5", f"csv:{tmp / 'l.csv'}", tmp_path / "auto", seeds=1)
    assert all(set(per) == {"0"} for per in auto["sigma_scale"]["split"].values())
    no_val = {**cfg, "eval": {"val_fraction": 0, "bootstrap": 50}}
    raw = run_training(no_val, tmp / "f.h5", f"csv:{tmp / 'l.csv'}", tmp_path / "noval", seeds=1)
    assert "sigma_scale" not in raw  # no validation split: nothing to calibrate on
    caplog.clear()
    mlp = run_training(config("mlp", epochs=2), tmp / "f.h5", f"csv:{tmp / 'l.csv'}",
                       tmp_path / "mlp", seeds=1)  # fmt: skip
    assert "sigma_scale" not in mlp and "nothing to calibrate" not in caplog.text
