"""Label adapters of the long-form datasets: Fis-V, Rhythmic Gymnastics, LOGO."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import aqa_pipeline.datasets.logo  # noqa: F401  (registers logo:)
import aqa_pipeline.datasets.rg  # noqa: F401  (registers rg:)
from aqa_pipeline.datasets import load_labels
from aqa_pipeline.datasets.fisv import read_fisv
from aqa_pipeline.datasets.logo import read_logo
from aqa_pipeline.datasets.rg import read_rg
from aqa_pipeline.errors import AqaError
from tests.conftest import needs_shared

# -- Fis-V -----------------------------------------------------------------------------


def test_fisv_real_labels_and_feature_ids():
    root = needs_shared("data", "fisv")
    tes = load_labels(f"fisv:{root}?target=TES")
    pcs = load_labels(f"fisv:{root}?target=pcs")
    (fold,) = tes.folds
    assert (tes.n, len(fold.train), len(fold.test)) == (500, 400, 100)
    assert set(fold.train).isdisjoint(fold.test)
    assert tes.video_ids == pcs.video_ids
    lo, hi = tes.score.min(), tes.score.max()
    assert 5 < lo < 10 and 40 < hi <= 43.5  # TES 6-43
    lo, hi = pcs.score.min(), pcs.score.max()
    assert 9 < lo < 12 and 35 < hi < 40  # PCS 10-38
    # the first training line is "1 28.71 29.36 1"
    i = tes.index("1")
    assert (tes.score[i], pcs.score[i]) == (28.71, 29.36)
    # every labelled video has its feature file, named by the id
    stems = {p.stem for p in (root / "swintx_avg_fps25_clip32").glob("*.npy")}
    assert set(tes.video_ids) == stems


def test_fisv_errors_name_the_problem(tmp_path: Path):
    (tmp_path / "train.txt").write_text("1 28.7 29.3 1\n3 28.7 x 1\n")
    (tmp_path / "test.txt").write_text("5 30.0 28.0 0\n")
    with pytest.raises(AqaError, match=r"train.txt:2: not a number"):
        read_fisv(tmp_path)
    (tmp_path / "train.txt").write_text("1 28.7 29.3 1\n5 28.7 29.0\n")
    with pytest.raises(AqaError, match="expected 'id TES PCS deductions'"):
        read_fisv(tmp_path)
    (tmp_path / "train.txt").write_text("1 28.7 29.3 1\n5 28.7 29.0 0\n")
    with pytest.raises(AqaError, match="in both train and test"):
        read_fisv(tmp_path)
    with pytest.raises(AqaError, match="TES or PCS"):
        read_fisv(tmp_path, "total")


def test_fisv_adapter_on_a_small_folder(tmp_path: Path):
    (tmp_path / "train.txt").write_text("\ufeff1 28.7 29.3 1\n2 20.0 25.0 0\n")  # a BOM
    (tmp_path / "test.txt").write_text("5 30.0 28.0 0\n")
    tes = load_labels(f"fisv:{tmp_path}")
    pcs = load_labels(f"fisv:{tmp_path}?target=pcs")
    assert tes.video_ids == pcs.video_ids == ["1", "2", "5"]
    assert tes.score.tolist() == [28.7, 20.0, 30.0] and pcs.score.tolist() == [29.3, 25.0, 28.0]
    (fold,) = tes.folds
    assert (fold.name, fold.train.tolist(), fold.test.tolist()) == ("split", [0, 1], [2])
    (tmp_path / "test.txt").write_text("5 nan 28.0 0\n")
    with pytest.raises(AqaError, match=r"TES is NaN or inf for 1 video\(s\): 5"):
        load_labels(f"fisv:{tmp_path}")


# -- Rhythmic Gymnastics ---------------------------------------------------------------


def test_rg_real_labels_per_apparatus():
    root = needs_shared("data", "rg")
    for apparatus in ("Ball", "Clubs", "Hoop", "Ribbon"):
        labels = load_labels(f"rg:{root}?apparatus={apparatus.lower()}")
        (fold,) = labels.folds
        assert (labels.n, len(fold.train), len(fold.test)) == (250, 200, 50)
        assert all(v.startswith(apparatus + "_") for v in labels.video_ids)
    ball = load_labels(f"rg:{root}?apparatus=Ball&target=total")
    assert ball.score[ball.index("Ball_001")] == 18.80


def test_rg_columns_are_read_right():
    """Total = difficulty + execution - penalty on every routine: the columns line up."""
    root = needs_shared("data", "rg")
    rows = read_rg(root, "Hoop", "total")
    for vid, total, _, extras in rows:
        expected = extras["Difficulty_Score"] + extras["Execution_Score"] - extras["Penalty"]
        assert total == pytest.approx(expected, abs=0.011), vid
    diff = {r[0]: r[1] for r in read_rg(root, "Hoop", "difficulty")}
    assert all(diff[vid] == extras["Difficulty_Score"] for vid, _, _, extras in rows)


def test_rg_all_apparatus_gives_one_fold_each():
    root = needs_shared("data", "rg")
    labels = load_labels(f"rg:{root}?target=execution")
    assert [f.name for f in labels.folds] == ["Ball", "Clubs", "Hoop", "Ribbon"]
    assert labels.n == 1000
    for k, fold in enumerate(labels.folds):
        rows = np.concatenate([fold.train, fold.test])
        assert np.all(labels.class_id[rows] == k)
        assert all(labels.video_ids[i].startswith(fold.name) for i in rows)


def test_rg_errors(tmp_path: Path):
    (tmp_path / "train.txt").write_text("Video_Name\tTotal_Score\nBall_001\t1.0\nBall_002\n")
    (tmp_path / "test.txt").write_text("Video_Name\tTotal_Score\nBall_003\t2.0\n")
    with pytest.raises(AqaError, match=r"train.txt:3: 1 fields, the header has 2"):
        read_rg(tmp_path, "Ball")
    with pytest.raises(AqaError, match="apparatus"):
        read_rg(tmp_path, "Beam")
    with pytest.raises(AqaError, match=r"unknown key rg\?scale; known: apparatus, target"):
        load_labels(f"rg:{tmp_path}?apparatus=Ball&scale=25")


# -- LOGO ------------------------------------------------------------------------------


def write_logo(folder: Path) -> None:
    """A LOGO-shaped label folder: records hold a numpy array like the real release."""
    folder.mkdir(parents=True, exist_ok=True)
    anno = {
        ("WorldChampionship2019", i): [f"team{i}", 80.0 + i, np.arange(3), np.float64(1.5)]
        for i in range(1, 7)
    }
    anno[("Olympics2020", 2)] = ("teamX", 92.5, np.zeros(2), 0)
    train = [("WorldChampionship2019", i) for i in (1, 2, 3, 4)] + [("Olympics2020", 2)]
    test = [["WorldChampionship2019", 5], ["WorldChampionship2019", 6]]
    for name, obj in (("anno_dict", anno), ("train_split3", train), ("test_split3", test)):
        (folder / f"{name}.pkl").write_bytes(pickle.dumps(obj))


def test_logo_labels(tmp_path: Path):
    write_logo(tmp_path)
    labels = load_labels(f"logo:{tmp_path}")
    (fold,) = labels.folds
    assert (labels.n, len(fold.train), len(fold.test)) == (7, 5, 2)
    assert labels.video_ids[:2] == ["WorldChampionship2019_1", "WorldChampionship2019_2"]
    assert labels.score[labels.index("Olympics2020_2")] == 92.5
    assert [labels.video_ids[i] for i in fold.test] == [
        "WorldChampionship2019_5",
        "WorldChampionship2019_6",
    ]
    assert read_logo(tmp_path)[4][3] == {"event": "Olympics2020", "idx": 2}


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_logo_refuses_code_in_pickles(tmp_path: Path):
    write_logo(tmp_path)
    (tmp_path / "train_split3.pkl").write_bytes(pickle.dumps([_Exploit()]))
    with pytest.raises(AqaError, match="not a readable label pickle"):
        load_labels(f"logo:{tmp_path}")


def test_logo_errors(tmp_path: Path):
    write_logo(tmp_path)
    (tmp_path / "test_split3.pkl").write_bytes(pickle.dumps([("Nowhere", 1)]))
    with pytest.raises(AqaError, match="not in anno_dict"):
        load_labels(f"logo:{tmp_path}")
    with pytest.raises(AqaError, match=r"train_split9.pkl: not found"):
        load_labels(f"logo:{tmp_path}?split=split9")
