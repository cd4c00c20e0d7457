"""A killed `aqa train` continues from its checkpoints and ends exactly where an
uninterrupted run ends (`run_training(..., resume=True)`, `aqa train --resume`)."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from aqa_pipeline.cli import main
from aqa_pipeline.errors import AqaError, MismatchError
from aqa_pipeline.train import loop, run_training
from aqa_pipeline.train.checkpoint import checkpoint_dir, partial_dir
from aqa_pipeline.train.sweep import SweepRun, TrainRun
from tests.train_fixtures import config, make_cache, write_labels


class Killed(Exception):
    pass


def kill_after(monkeypatch, calls: int) -> None:
    """Make the epoch loop die at its `calls`-th Spearman (one per seed per epoch and
    evaluation set: a head with sigma's validation run has two, val and the calibration's
    reference rows)."""
    real = loop.spearman
    count = {"n": 0}

    def dying(*args, **kwargs):
        count["n"] += 1
        if count["n"] == calls:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "spearman", dying)


@pytest.mark.parametrize("seeds", [[5], [5, 6]], ids=["one seed", "stacked seeds"])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, seeds):
    cache, scores = make_cache(tmp_path / "f.h5")
    labels = f"csv:{write_labels(tmp_path / 'l.csv', scores)}"
    cfg = config(
        "dae",
        epochs=6,
        head={"predict": "sample"},
        schedule={"name": "cosine"},
        train={"checkpoint_minutes": 0},
    )
    whole = run_training(cfg, cache, labels, tmp_path / "whole", seeds=seeds)
    assert not checkpoint_dir(tmp_path / "whole").exists()
    assert not partial_dir(tmp_path / "whole").exists()

    run = tmp_path / "killed"
    s = len(seeds)
    kill_after(monkeypatch, 2 * 6 * s + 3 * s + 1)  # validation run done, full run in epoch 4
    with pytest.raises(Killed):
        run_training(cfg, cache, labels, run, seeds=seeds)
    saved = sorted(p.name for p in checkpoint_dir(run).glob("*.pt"))
    assert not run.exists()  # a killed run leaves only its partial dir
    assert saved == ["fold0_full.pt", "fold0_val.pt"]
    monkeypatch.undo()

    resumed = run_training(cfg, cache, labels, run, seeds=seeds, resume=True)
    assert "continuing after epoch 3" in (run / "train.log").read_text()
    assert (run / "predictions.csv").read_text() == (tmp_path / "whole/predictions.csv").read_text()
    for key in ("spearman_per_seed", "spearman_val", "spearman_best_on_test", "rl2"):
        assert resumed[key] == whole[key]
    assert not checkpoint_dir(run).exists()


def test_resume_refuses_another_config_and_a_fresh_run_drops_old_checkpoints(tmp_path, monkeypatch):
    cache, scores = make_cache(tmp_path / "f.h5")
    labels = f"csv:{write_labels(tmp_path / 'l.csv', scores)}"
    cfg = config("mlp", epochs=4, train={"checkpoint_minutes": 0})
    run = tmp_path / "run"
    kill_after(monkeypatch, 4 + 2)
    with pytest.raises(Killed):
        run_training(cfg, cache, labels, run, seeds=1)
    monkeypatch.undo()
    other = config("mlp", epochs=4, optim={"lr": 1e-3}, train={"checkpoint_minutes": 0})
    with pytest.raises(MismatchError, match=r"optim\.lr"):
        run_training(other, cache, labels, run, seeds=1, resume=True)
    assert (checkpoint_dir(run) / "fold0_full.pt").is_file()  # the refusal lost nothing

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    args = ["train", "--config", str(cfg_file), "--features", str(cache), "--labels", labels]
    res = CliRunner().invoke(main, [*args, "--run-dir", str(tmp_path / "new"), "--resume"])
    assert res.exit_code == 1 and "nothing to resume" in res.output
    res = CliRunner().invoke(main, [*args, "--run-dir", str(run), "--seeds", "1", "--resume"])
    assert res.exit_code == 0, res.output
    assert "continuing after epoch" in (run / "train.log").read_text()
    assert json.loads((run / "metrics.json").read_text())["seeds"] == [0]

    finished = (run / "predictions.csv").read_text()
    with pytest.raises(AqaError, match="already holds a run"):  # refused, nothing touched
        run_training(cfg, cache, labels, run, seeds=1)
    kill_after(monkeypatch, 4 + 2)
    with pytest.raises(Killed):
        run_training(cfg, cache, labels, run, seeds=1, overwrite=True)
    monkeypatch.undo()
    assert (run / "predictions.csv").read_text() == finished  # a killed overwrite loses nothing
    run_training(cfg, cache, labels, run, seeds=1, overwrite=True)  # no resume: starts over
    assert "continuing" not in (run / "train.log").read_text()


def test_a_requeued_sweep_run_continues_from_its_checkpoints(tmp_path, monkeypatch):
    cache, scores = make_cache(tmp_path / "f.h5")
    labels = f"csv:{write_labels(tmp_path / 'l.csv', scores)}"
    cfg = config("mlp", epochs=4, train={"checkpoint_minutes": 0})
    run = SweepRun("mlp-seed3", "c.yaml", cfg, 3, None, tmp_path / "sweep/runs/mlp-seed3")
    whole = run_training(cfg, cache, labels, tmp_path / "whole", seeds=[3])
    kill_after(monkeypatch, 4 + 2)
    with pytest.raises(Killed):
        TrainRun()(run, cache, labels)
    monkeypatch.undo()
    again = TrainRun()(run, cache, labels)  # what submitit's requeue calls
    assert "continuing after epoch 1" in (run.run_dir / "train.log").read_text()
    assert again["spearman_per_seed"] == whole["spearman_per_seed"]


def test_a_corrupt_checkpoint_is_named_and_nothing_else_is_lost(tmp_path, monkeypatch):
    cache, scores = make_cache(tmp_path / "f.h5")
    labels = f"csv:{write_labels(tmp_path / 'l.csv', scores)}"
    cfg = config("mlp", epochs=4, train={"checkpoint_minutes": 0})
    run = tmp_path / "run"
    kill_after(monkeypatch, 4 + 2)
    with pytest.raises(Killed):
        run_training(cfg, cache, labels, run, seeds=1)
    monkeypatch.undo()
    full, val = checkpoint_dir(run) / "fold0_full.pt", checkpoint_dir(run) / "fold0_val.pt"
    full.write_bytes(full.read_bytes()[:100])  # truncated, as by a full disk
    val_bytes = val.read_bytes()
    with pytest.raises(AqaError, match=r"fold0_full\.pt: not a readable training checkpoint"):
        run_training(cfg, cache, labels, run, seeds=1, resume=True)
    assert val.read_bytes() == val_bytes and full.is_file()
    full.unlink()  # what the message says to do
    run_training(cfg, cache, labels, run, seeds=1, resume=True)
    log = (run / "train.log").read_text()
    assert "val run: continuing after epoch 4" in log and (run / "metrics.json").is_file()
