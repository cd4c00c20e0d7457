"""`aqa train` end to end on tiny caches: run directory, protocols, folds, every head, clip
sequences, exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from aqa_pipeline.cli import main
from aqa_pipeline.datasets import load_labels
from aqa_pipeline.features import read_features
from aqa_pipeline.results.metrics import fisher_z_mean, spearman
from aqa_pipeline.results.predictions import Predictions
from aqa_pipeline.results.protocols import select_epoch, summarize
from aqa_pipeline.train import run_training
from aqa_pipeline.train.data import TrainData, take_rows
from aqa_pipeline.train.inputs import ClipInputs
from tests.train_fixtures import config, make_cache, write_labels


def read_rows(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_cli_train_writes_a_complete_run_dir(tmp_path):
    cache, scores = make_cache(tmp_path / "f.h5")
    labels = write_labels(tmp_path / "l.csv", scores)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config("dae", head={"loss": "likelihood"})))
    run = tmp_path / "run"
    res = CliRunner().invoke(
        main,
        [
            "train",
            "--config",
            str(cfg),
            "--features",
            str(cache),
            "--labels",
            f"csv:{labels}",
            "--run-dir",
            str(run),
            "--seeds",
            "2",
            "--set",
            "train.epochs=3",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "best_on_test" in res.output and "report" in res.output
    for name in (
        "config.yaml",
        "environment.json",
        "train.log",
        "epochs.csv",
        "predictions.csv",
        "metrics.json",
        "heads.safetensors",
        "heads.json",
        "report.md",
        "plots/curves.png",
    ):
        assert (run / name).is_file(), name
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["train"]["seeds"] == [0, 1] and resolved["train"]["epochs"] == 3
    env = json.loads((run / "environment.json").read_text())
    assert "git_commit" in env and {"torch", "numpy", "python"} <= set(env["versions"])
    cpu = env["cpu"]  # speed figures depend on it: the model, cores and bf16-relevant flags
    assert cpu["model"] and cpu["cores"] >= 1 and set(cpu["flags"]) <= {
        "avx2", "avx512f", "avx512_bf16", "amx_bf16"}  # fmt: skip
    if Path("/proc/cpuinfo").is_file():
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("flags")).split()  # fmt: skip
        assert ("amx_bf16" in cpu["flags"]) == ("amx_bf16" in flags)
        assert ("avx2" in cpu["flags"]) == ("avx2" in flags)
    rows = read_rows(run / "predictions.csv")
    assert list(rows[0]) == [
        "video_id",
        "true",
        "pred",
        "sigma",
        "split",
        "seed",
        "protocol",
        "fold",
        "epoch",
    ]
    assert len(rows) == 10 * 2 * 3  # 10 test videos x 2 seeds x 3 protocols
    assert all(float(r["sigma"]) > 0 for r in rows)
    metrics = json.loads((run / "metrics.json").read_text())
    for key in (
        "spearman",
        "spearman_std",
        "spearman_val",
        "spearman_best_on_test",
        "rl2",
        "mse",
        "n_test",
        "seeds",
        "spearman_per_seed",
        "coverage_90",
        "nll",
    ):
        assert key in metrics, key
    assert metrics["n_test"] == 10 and metrics["seeds"] == [0, 1]
    weights = load_file(str(run / "heads.safetensors"))
    assert (
        "final::split::1::gauss.mu.weight" in weights and "val::split::0::trunk.0.weight" in weights
    )
    epochs = read_rows(run / "epochs.csv")
    assert {r["run"] for r in epochs} == {"full", "val"} and len(epochs) == 2 * 2 * 3


def test_protocol_selection_and_summary_known_values():
    assert select_epoch(np.array([0.1, np.nan, 0.5, 0.5, 0.2])) == 2
    preds = Predictions()
    true = np.arange(6.0)
    preds.add(
        video_ids=[f"v{i}" for i in range(6)],
        true=true,
        pred=true * 2,
        sigma=None,
        seed=0,
        protocol="final",
        fold="f",
        epoch=9,
    )
    preds.add(
        video_ids=[f"v{i}" for i in range(6)],
        true=true,
        pred=-true,
        sigma=None,
        seed=1,
        protocol="final",
        fold="f",
        epoch=9,
    )
    m = summarize(preds, {"f": (0.0, 5.0)}, scale=5.0, n_boot=0)
    assert m["spearman_per_seed"] == [1.0, -1.0]
    assert m["spearman"] == 0.0 and m["spearman_std"] == pytest.approx(np.sqrt(2))
    # R-l2 of seed 0: mean((true / 5)^2) x 100; seed 1: mean((2 true / 5)^2) x 100
    r0 = np.mean((true / 5) ** 2) * 100
    assert m["rl2"] == pytest.approx((r0 + 4 * r0) / 2)
    assert m["spearman_val"] is None and m["spearman_best_on_test"] is None
    assert m["mse_norm"] == pytest.approx(m["mse"] / 25)


def test_three_protocols_on_a_run_with_a_known_answer(tmp_path):
    """A linear head on a 1-d feature equal to the score ranks the test set perfectly as
    soon as its weight is positive: every protocol must report exactly 1, and the selected
    epochs must agree with the curves in epochs.csv."""
    cache, scores = make_cache(tmp_path / "f.h5", n=48, dim=1)
    fs = read_features(cache)
    scores = fs.video_features[:, 0].astype(np.float64) * 10 + 50  # exact function of x
    labels = write_labels(tmp_path / "l.csv", scores)
    cfg = config("mlp", epochs=12, head={"hidden": []}, optim={"lr": 0.05})
    run = tmp_path / "run"
    m = run_training(cfg, cache, f"csv:{labels}", run, seeds=[3, 4])
    assert m["spearman"] == 1.0 and m["spearman_val"] == 1.0 and m["spearman_best_on_test"] == 1.0
    assert m["spearman_ci95"] == [1.0, 1.0]
    epochs = read_rows(run / "epochs.csv")
    for seed in ("3", "4"):
        full = [float(r["spearman"]) for r in epochs if r["run"] == "full" and r["seed"] == seed]
        val = [float(r["spearman"]) for r in epochs if r["run"] == "val" and r["seed"] == seed]
        chosen = m["protocols"]
        assert chosen["final"]["epochs"]["split"][seed] == 11
        assert chosen["best_on_test"]["epochs"]["split"][seed] == select_epoch(np.array(full))
        e_val = chosen["val"]["epochs"]["split"][seed]
        assert e_val == select_epoch(np.array(val))
        assert chosen["val"]["per_seed"][seed]["spearman"] == pytest.approx(full[e_val])


def test_four_fold_cross_validation_bookkeeping(tmp_path):
    cache, scores = make_cache(tmp_path / "f.h5", n=40)
    split = [str(i % 4) for i in range(40)]
    labels = write_labels(tmp_path / "l.csv", scores, split=split)
    run = tmp_path / "run"
    m = run_training(
        config("mlp", epochs=3, eval={"val_fraction": 0.0}), cache, f"csv:{labels}", run, seeds=2
    )
    assert m["n_folds"] == 4 and m["folds"] == ["fold0", "fold1", "fold2", "fold3"]
    assert m["n_test"] == 40 and m["spearman_val"] is None
    preds = Predictions.read(run / "predictions.csv")
    for seed in (0, 1):
        ids = [
            v
            for v, p, s in zip(preds.video_id, preds.protocol, preds.seed, strict=True)
            if p == "final" and s == seed
        ]
        assert sorted(ids) == [f"v{i:03d}" for i in range(40)]  # every video tested once
        per_fold = []
        for k in range(4):
            sel = preds.select("final", f"fold{k}", seed)
            assert all(int(v[1:]) % 4 == k for v in sel["video_id"])
            per_fold.append(spearman(sel["pred"], sel["true"]))
        assert m["protocols"]["final"]["per_seed"][str(seed)]["spearman"] == pytest.approx(
            fisher_z_mean(per_fold)
        )


@pytest.mark.parametrize(
    "head,opts,extra",
    [
        ("dae_mt", {"paths": "judges", "combine": "middle3"}, {}),
        ("dae_mt", {"difficulty": True}, {}),
        ("musdl", {"score_range": [0, 10], "num_bins": 11, "std": 1.0}, {"label": {"scale": 1}}),
        (
            "usdl",
            {"score_range": [0, 100], "num_bins": 21, "std": 2.0, "readout": "mean"},
            {"label": {"scale": 1}},
        ),
        ("core", {"difficulty": True}, {"data": {"exemplars": 3}}),
        ("dae_core", {"loss": "likelihood"}, {"data": {"exemplars": 3}}),
        ("dae", {"loss": "v1", "predict": "sample"}, {"data": {"standardize": True}}),
        ("dae", {"loss": "likelihood"}, {"train": {"amp": "bf16"}}),
    ],
)
def test_every_head_trains_in_the_loop(tmp_path, head, opts, extra):
    cache, scores = make_cache(tmp_path / "f.h5", n=32)
    rng = np.random.default_rng(1)
    dd = rng.choice([2.0, 3.0], size=32)
    judges = {
        f"judge_{j + 1}": np.round(np.clip(scores / 10 + rng.normal(size=32), 0, 10), 1)
        for j in range(5)
    }
    labels = write_labels(
        tmp_path / "l.csv",
        scores * 1.0,
        difficulty=dd,
        **judges,
        **{"class": [f"c{i % 3}" for i in range(32)]},
    )
    m = run_training(
        config(head, epochs=2, head=opts, **extra),
        cache,
        f"csv:{labels}",
        tmp_path / "run",
        seeds=2,
    )
    assert np.isfinite(m["spearman"]) and m["n_test"] == 8
    assert ("coverage_90" in m) == (head != "core")


def test_missing_label_fields_and_provenance_mismatch(tmp_path):
    cache, scores = make_cache(
        tmp_path / "f.h5", key_fields={"backbone": {"name": "toy", "dim": 8}}
    )
    labels = write_labels(tmp_path / "l.csv", scores)
    with pytest.raises(Exception, match=r"needs label field\(s\) \['difficulty'\]"):
        run_training(
            config("dae_mt", head={"difficulty": True}), cache, f"csv:{labels}", tmp_path / "r1"
        )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(config("mlp", features={"require": {"backbone": {"name": "i3d"}}}))
    )
    res = CliRunner().invoke(
        main,
        [
            "train",
            "--config",
            str(cfg),
            "--features",
            str(cache),
            "--labels",
            str(labels),
            "--run-dir",
            str(tmp_path / "r2"),
        ],
    )
    assert res.exit_code == 3
    assert "backbone.name: 'toy' != 'i3d'" in res.output
    res = CliRunner().invoke(
        main,
        [
            "train",
            "--config",
            str(cfg),
            "--features",
            str(cache),
            "--run-dir",
            str(tmp_path / "r3"),
            "--set",
            "optim.learning_rate=1",
        ],
    )
    assert res.exit_code == 1 and "unknown key optim.learning_rate" in res.output


def test_seeded_runs_repeat_exactly(tmp_path):
    cache, scores = make_cache(tmp_path / "f.h5")
    labels = write_labels(tmp_path / "l.csv", scores)
    cfg = config("dae", epochs=2, head={"predict": "sample"})
    a = run_training(cfg, cache, f"csv:{labels}", tmp_path / "a", seeds=[5, 6])
    b = run_training(cfg, cache, f"csv:{labels}", tmp_path / "b", seeds=[5, 6])
    assert (tmp_path / "a/predictions.csv").read_text() == (
        tmp_path / "b/predictions.csv"
    ).read_text()
    assert a["spearman_per_seed"] == b["spearman_per_seed"]


def test_take_rows_equals_advanced_indexing():
    table = torch.arange(24.0).view(6, 4)
    rows = torch.tensor([[5, 0, 3], [2, 2, 1]])
    for r in (rows, rows.t(), rows[:, None, :], torch.tensor([4])):  # incl. non-contiguous
        assert torch.equal(take_rows(table, r), table[r])
    scores = torch.arange(6.0) * 10
    assert torch.equal(take_rows(scores, rows), scores[rows])
    with pytest.raises(IndexError):
        take_rows(table, torch.tensor([[6]]))


def test_clip_batches_crop_pad_and_mask(tmp_path):
    cache, scores = make_cache(tmp_path / "f.h5", n=4, dim=3, clips=(2, 6))
    fs = read_features(cache)
    labels = load_labels(f"csv:{write_labels(tmp_path / 'l.csv', scores)}")
    data = TrainData.build(fs, labels, 1.0, clips=True, cache="c")
    counts = data.clip_count.tolist()
    rows = torch.tensor([[0, 1, 2, 3]])
    rngs = [np.random.default_rng(0)]
    crop = ClipInputs(data, 3, "random", "full").make(rows, True, rngs)
    assert crop["x"].shape == (1, 4, 3, 3)
    assert crop["mask"][0].sum(1).tolist() == [min(c, 3) for c in counts]
    full = ClipInputs(data, 3, "random", "full").make(rows, False, rngs)
    assert full["x"].shape[2] == max(counts) and full["mask"][0].sum(1).tolist() == counts
    for b, c in enumerate(counts):
        np.testing.assert_allclose(full["x"][0, b, :c].numpy(), fs.clips(fs.index(f"v{b:03d}")))
        assert (full["x"][0, b, c:] == 0).all() and full["clip_index"][0, b, :c].tolist() == list(
            range(c)
        )
    cropped = crop["clip_index"][0]
    for b, c in enumerate(counts):  # a crop is a contiguous window of the video's clips
        idx = cropped[b][cropped[b] >= 0].tolist()
        assert idx == list(range(idx[0], idx[0] + min(c, 3)))
    nocrop = ClipInputs(data, None, "none", "full").make(rows, True, rngs)
    assert nocrop["x"].shape[2] == max(counts)


def test_crop_starts_all_or_as_the_authors(tmp_path):
    """data.crop_starts: "all" draws every start 0..T - clip_num; "authors" never the last,
    like GDLT's and InterAQA's np.random.randint(0, T - clip_num)."""
    cache, scores = make_cache(tmp_path / "f.h5", n=4, dim=3, clips=(2, 6))
    labels = load_labels(f"csv:{write_labels(tmp_path / 'l.csv', scores)}")
    data = TrainData.build(read_features(cache), labels, 1.0, clips=True, cache="c")
    longest = int(data.clip_count.argmax())
    t = int(data.clip_count[longest])
    rows = torch.full((1, 400), longest)
    for mode, starts in (("all", set(range(t - 2))), ("authors", set(range(t - 3)))):
        x = ClipInputs(data, 3, "random", "full", None, mode).make(
            rows, True, [np.random.default_rng(0)])  # fmt: skip
        assert set(x["clip_index"][0, :, 0].tolist()) == starts, mode
