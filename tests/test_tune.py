"""`aqa tune`: k-fold CV on the training split only, the choice, reruns, --then-train."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import aqa_pipeline.train as train_pkg
from aqa_pipeline.cli import main
from aqa_pipeline.errors import AqaError
from aqa_pipeline.features import FeatureSet, read_features, write_features
from aqa_pipeline.results.predictions import Predictions
from aqa_pipeline.train.config import load_train_config
from aqa_pipeline.train.tune import (
    cv_labels,
    expand,
    make_space,
    parse_grid,
    plan_tune,
    read_space,
    run_tune,
)

from .train_fixtures import config, make_cache, write_labels

GRID = ["optim.lr=1e-3,1e-2", "train.epochs=2,3"]


def tune(tmp, cfg, cache, labels, out, grid=GRID, then_train=None, **kw):
    space = make_space(parse_grid(grid))
    plan = plan_tune(cfg, cache, labels, out, space, folds=3, **kw)
    return run_tune(plan, then_train=then_train)


def read_table(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A cache of 40 videos (every 4th a test video) and its labels; also labels whose test
    scores are nonsense and a cache without the test videos."""
    tmp = tmp_path_factory.mktemp("tune")
    cache, scores = make_cache(tmp / "c.h5", n=40)
    split = ["test" if i % 4 == 0 else "train" for i in range(40)]
    labels = write_labels(tmp / "labels.csv", scores, split)
    poisoned = scores.copy()
    test = [i for i, s in enumerate(split) if s == "test"]
    poisoned[test] = np.random.default_rng(5).uniform(-1e6, 1e6, size=len(test))
    poisoned_labels = write_labels(tmp / "poisoned.csv", poisoned, split)
    fs = read_features(cache)
    test_ids = {f"v{i:03d}" for i in test}
    train_only = FeatureSet.from_records(
        [r for r in fs.records() if r.video_id not in test_ids], fs.feature_dim,
        key_fields=fs.key_fields,
    )  # fmt: skip
    write_features(tmp / "train_only.h5", train_only)
    cfg = tmp / "mlp.yaml"
    cfg.write_text(yaml.safe_dump(config("mlp", epochs=3)))
    return {"tmp": tmp, "cache": cache, "labels": f"csv:{labels}", "cfg": cfg,
            "poisoned": f"csv:{poisoned_labels}", "train_only": tmp / "train_only.h5",
            "test_ids": test_ids}  # fmt: skip


@pytest.fixture(scope="module")
def clean(data):
    out = data["tmp"] / "clean"
    return tune(data["tmp"], data["cfg"], data["cache"], data["labels"], out), out


def test_grid_is_expanded_in_order_and_drawn_seeded(tmp_path):
    grid = parse_grid(["optim.lr=1e-4,3e-4", "train.epochs=50,100,200", "head.hidden=[8,4]"])
    assert grid == {"optim.lr": ["1e-4", "3e-4"], "train.epochs": [50, 100, 200],
                    "head.hidden": [[8, 4]]}  # fmt: skip
    settings = expand(make_space(grid))
    assert len(settings) == 6
    assert settings[:2] == [{"optim.lr": "1e-4", "train.epochs": 50, "head.hidden": [8, 4]},
                            {"optim.lr": "1e-4", "train.epochs": 100, "head.hidden": [8, 4]}]  # fmt: skip
    drawn = expand(make_space(grid), trials=3, seed=1)
    assert len(drawn) == 3 and drawn == expand(make_space(grid), trials=3, seed=1)
    assert all(s in settings for s in drawn) and len({str(s) for s in drawn}) == 3
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump([{"head": {"loss": ["stable"]}, "optim.weight_decay": [0.1]},
                                     {"head.loss": "v1", "optim.weight_decay": [1e-4, 1e-3]}]))  # fmt: skip
    both = expand(make_space(parse_grid(["optim.lr=1e-3"]), read_space(space)))
    assert len(both) == 3 and all(s["optim.lr"] == "1e-3" for s in both)  # as YAML reads it
    assert both[0]["head.loss"] == "stable" and both[2] == {
        "head.loss": "v1", "optim.weight_decay": 1e-3, "optim.lr": "1e-3"}  # fmt: skip
    with pytest.raises(AqaError, match="eval.val_fraction cannot be tuned"):
        make_space(parse_grid(["eval.val_fraction=0.1,0.2"]))
    with pytest.raises(AqaError, match="nothing to tune"):
        make_space({})


@pytest.mark.parametrize(
    "grid, message",
    [
        ("optim.lr=1e-3,abc", "optim.lr = 'abc': input should be a valid number"),
        ("optim.lrr=1e-3", "unknown key optim.lrr (did you mean lr?)"),
        ("train.epochs=3,0", "train.epochs = 0"),
    ],
)
def test_a_bad_value_exits_1_naming_the_key_before_any_training(data, tmp_path, grid, message):
    out = tmp_path / "out"
    args = ["tune", "--config", data["cfg"], "--features", data["cache"], "--labels",
            data["labels"], "--out", out, "--grid", grid, "--folds", "3"]  # fmt: skip
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 1, res.output
    assert message in res.output
    assert not out.exists()


@pytest.mark.parametrize(
    "space, features, message",
    [
        (None, "missing.h5", "no such feature cache"),
        ("absent.yaml", None, "absent.yaml: not found"),
        ("broken.yaml", None, "invalid YAML"),
    ],
)
def test_a_missing_or_corrupt_input_exits_1_naming_it(data, tmp_path, space, features, message):
    (tmp_path / "broken.yaml").write_text("optim.lr: [1e-4\n")
    out = tmp_path / "out"
    args = ["tune", "--config", data["cfg"], "--labels", data["labels"], "--out", out,
            "--folds", "3", "--features", tmp_path / features if features else data["cache"]]  # fmt: skip
    args += ["--space", tmp_path / space] if space else ["--grid", "optim.lr=1e-3"]
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 1, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_cv_folds_hold_only_training_rows(data):
    from aqa_pipeline.datasets import load_labels

    full = load_labels(data["labels"])
    cv = cv_labels(full, 3, seed=0)
    train_ids = {full.video_ids[r] for r in full.folds[0].train}
    assert set(cv.video_ids) == train_ids and not set(cv.video_ids) & data["test_ids"]
    assert cv.n == 30 and [f.name for f in cv.folds] == ["cv0", "cv1", "cv2"]
    held = np.concatenate([f.test for f in cv.folds])
    assert sorted(held.tolist()) == list(range(30))  # every row held out exactly once
    for f in cv.folds:
        assert not set(f.train) & set(f.test) and len(f.train) + len(f.test) == 30
    with pytest.raises(AqaError, match="--folds 16"):
        cv_labels(full, 16, seed=0)


def test_the_choice_is_the_best_cv_mean(clean):
    result, out = clean
    assert not result.failed and len(result.rows) == 4
    best = max(r["cv_spearman"] for r in result.rows)
    assert result.chosen["cv_spearman"] == best
    table = read_table(out / "table.csv")
    assert [r["trial"] for r in table][-1] == "ridge"
    starred = [r for r in table if r["chosen"] == "*"]
    assert len(starred) == 1 and starred[0]["trial"] == result.chosen["trial"]
    assert float(starred[0]["cv_spearman"]) == pytest.approx(best)
    for row in result.rows:  # mean: Fisher-z over folds (one seed); std over the folds
        values = list(row["per_fold"].values())
        z = np.tanh(np.mean(np.arctanh(values)))
        assert row["cv_spearman"] == pytest.approx(z, abs=1e-9)
        assert row["cv_spearman_std"] == pytest.approx(np.std(values, ddof=1))
    chosen = load_train_config(out / "chosen.yaml")  # a full, valid train config
    setting = result.chosen["setting"]
    assert chosen.optim.lr == setting["optim.lr"] and chosen.train.epochs == setting["train.epochs"]
    assert chosen.eval.val_fraction == 0.25 and chosen.eval.baseline == "ridge"  # not the CV's
    info = yaml.safe_load((out / "tune.json").read_text())
    assert info["chosen"]["trial"] == result.chosen["trial"] and info["seed"] == 0
    assert set(info["folds"]) == {"cv0", "cv1", "cv2"}
    assert math.isfinite(info["ridge"]["cv_spearman"]) and set(info["ridge"]["per_fold"]) == {
        "cv0", "cv1", "cv2"}  # fmt: skip
    trial_cfg = yaml.safe_load(
        (out / "trials" / result.chosen["trial"] / "config.yaml").read_text()
    )
    assert trial_cfg["eval"]["val_fraction"] == 0 and trial_cfg["eval"]["baseline"] == "none"


def test_poisoned_test_labels_and_a_cache_without_test_videos_change_nothing(data, clean):
    result, out = clean
    out2 = data["tmp"] / "poisoned_out"
    poisoned = tune(data["tmp"], data["cfg"], data["train_only"], data["poisoned"], out2)
    assert (out2 / "table.csv").read_text() == (out / "table.csv").read_text()
    assert poisoned.chosen["trial"] == result.chosen["trial"]
    assert (out2 / "chosen.yaml").read_text().split("\n", 2)[2] == (
        out / "chosen.yaml").read_text().split("\n", 2)[2]  # fmt: skip
    for row in poisoned.rows:  # no test video was ever predicted (or trained on)
        preds = Predictions.read(out2 / "trials" / row["trial"] / "predictions.csv")
        ids = {v for p in ("final",) for f in ("cv0", "cv1", "cv2")
               for v in preds.select(p, f, 0)["video_id"]}  # fmt: skip
        assert len(ids) == 30 and not ids & data["test_ids"]


def test_a_rerun_skips_finished_trials(data, clean, monkeypatch):
    result, out = clean
    rerun_dir = data["tmp"] / "rerun"
    first = tune(data["tmp"], data["cfg"], data["cache"], data["labels"], rerun_dir)
    calls = []
    real = train_pkg.run_training
    monkeypatch.setattr(train_pkg, "run_training",
                        lambda *a, **k: calls.append(a[3]) or real(*a, **k))  # fmt: skip
    again = tune(data["tmp"], data["cfg"], data["cache"], data["labels"], rerun_dir)
    assert calls == [] and again.chosen == first.chosen
    victim = rerun_dir / "trials" / first.rows[1]["trial"]
    stamp = {r["trial"]: (rerun_dir / "trials" / r["trial"] / "metrics.json").stat().st_mtime_ns
             for r in first.rows}  # fmt: skip
    import shutil

    shutil.rmtree(victim)
    third = tune(data["tmp"], data["cfg"], data["cache"], data["labels"], rerun_dir)
    assert [p.name for p in calls] == [victim.name]
    for r in first.rows:
        if r["trial"] != victim.name:
            assert (rerun_dir / "trials" / r["trial"] / "metrics.json").stat().st_mtime_ns == stamp[
                r["trial"]]  # fmt: skip
    figures = ("trial", "setting", "cv_spearman", "cv_spearman_std", "per_fold")
    assert [{k: r[k] for k in figures} for r in third.rows] == [
        {k: r[k] for k in figures} for r in first.rows]  # fmt: skip
    # another fold seed is another set of trials: nothing is reused
    other = plan_tune(data["cfg"], data["cache"], data["labels"], rerun_dir,
                      make_space(parse_grid(GRID)), folds=3, seed=1)  # fmt: skip
    assert not {t.id for t in other.trials} & {r["trial"] for r in first.rows}


def test_then_train_writes_a_finished_run_with_a_baseline(data, clean):
    result, out = clean
    run = data["tmp"] / "then"
    res = tune(data["tmp"], data["cfg"], data["cache"], data["labels"], out, then_train=run)
    assert res.chosen == result.chosen and res.then_train["run_dir"] == str(run)
    metrics = yaml.safe_load((run / "metrics.json").read_text())
    assert metrics["folds"] == ["split"] and metrics["n_test"] == 10
    assert "baseline" in metrics and "val" in metrics["protocols"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["optim"]["lr"] == result.chosen["setting"]["optim.lr"]
    again = tune(data["tmp"], data["cfg"], data["cache"], data["labels"], out, then_train=run)
    assert again.then_train == res.then_train  # the finished run is reused


@pytest.mark.slow  # two spawned worker processes import torch
def test_cli_prints_the_table_and_jobs_give_the_same_table(data, clean):
    result, out = clean
    out2 = data["tmp"] / "cli"
    args = ["tune", "--config", data["cfg"], "--features", data["cache"], "--labels",
            data["labels"], "--out", out2, "--folds", "3", "--jobs", "2"]  # fmt: skip
    for g in GRID:
        args += ["--grid", g]
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "CV Spearman" in res.output and "ridge" in res.output
    assert f"chosen: trial {result.chosen['trial']}" in res.output
    assert (out2 / "table.csv").read_text() == (out / "table.csv").read_text()


@pytest.mark.slurm
def test_trials_as_one_slurm_array_give_the_local_table(data, clean, capsys):
    """Each trial is one task of one array; --then-train is one more task."""
    from .test_slurm import REASON

    if REASON is not None:
        pytest.skip(REASON)
    from aqa_pipeline.launch import LaunchOptions

    result, out = clean
    out2 = data["tmp"] / "slurm"
    plan = plan_tune(data["cfg"], data["cache"], data["labels"], out2,
                     make_space(parse_grid(GRID)), folds=3)  # fmt: skip
    opts = LaunchOptions(launcher="slurm", wait=True, time_min=10)
    res = run_tune(plan, opts, then_train=data["tmp"] / "slurm_then")
    assert "(4 task(s))" in capsys.readouterr().out and not res.failed
    assert (out2 / "table.csv").read_text() == (out / "table.csv").read_text()
    assert (data["tmp"] / "slurm_then" / "metrics.json").exists()
