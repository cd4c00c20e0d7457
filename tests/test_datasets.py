"""Label adapters on the real label files (skipped without ../shared) and on bad labels;
the spec syntax; alignment with a cache; the restricted unpickler; the manifest helper."""

from __future__ import annotations

import csv
import pickle
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from aqa_pipeline.config import parse
from aqa_pipeline.datasets import (
    AdapterOptions,
    adapter,
    list_adapters,
    load_labels,
    load_pickle,
    parse_options,
    parse_spec,
)
from aqa_pipeline.datasets.manifest import mtl_aqa_manifest
from aqa_pipeline.errors import AqaError
from aqa_pipeline.features import FeatureSet, VideoRecord
from aqa_pipeline.train.data import align

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared(*parts: str) -> Path:
    path = SHARED.joinpath("data", *parts)
    if not path.exists():
        pytest.skip(f"{path} not present (the project's shared data folder is absent)")
    return path


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


# --- real label files -------------------------------------------------------------------


def test_mtl_aqa_real_split0():
    labels = load_labels(f"mtl_aqa:{shared('mtl_aqa')}")
    (fold,) = labels.folds
    assert (len(fold.train), len(fold.test)) == (1059, 353)
    assert not set(fold.train) & set(fold.test)
    assert labels.judges.shape == (1412, 7)
    assert len(labels.class_names) == 58  # dive numbers
    assert labels.score.min() == 0.0 and labels.score.max() == 104.5
    i = labels.index("01_01")
    assert labels.score[i] == 88.0 and labels.difficulty[i] == 3.2
    assert labels.judges[i].tolist() == [9.5, 9.0, 9.5, 9.0, 8.5, 9.5, 8.5]
    # final = DD x sum of the middle three judges for nearly all dives
    mid3 = np.sort(labels.judges, axis=1)[:, 2:5].sum(1) * labels.difficulty
    assert np.mean(np.abs(mid3 - labels.score) < 0.05) > 0.97


def test_aqa7_unlv_dive_names_the_unannotated_dive_then_drops_it():
    with pytest.raises(AqaError, match=r"01_64.*missing=drop"):
        load_labels(f"aqa7:{shared('unlv_dive')}")
    labels = load_labels(f"aqa7:{shared('unlv_dive')}?missing=drop")
    (fold,) = labels.folds
    assert fold.name == "diving"
    assert (len(fold.train), len(fold.test)) == (299, 70)
    assert "01_64" not in labels.video_ids
    with pytest.raises(AqaError, match="diving class only"):
        load_labels(f"aqa7:{shared('unlv_dive')}?class=gym_vault")


def test_jigsaws_four_fold_bookkeeping():
    labels = load_labels(f"jigsaws:{shared('jigsaws')}?task=Suturing")
    assert labels.n == 39 and len(labels.folds) == 4
    tests = [set(f.test.tolist()) for f in labels.folds]
    assert sum(len(t) for t in tests) == 39 and set().union(*tests) == set(range(39))
    for f, t in zip(labels.folds, tests, strict=True):
        assert set(f.train.tolist()) == set(range(39)) - t  # train = the other three folds
    assert labels.subscores.shape == (39, 6)
    np.testing.assert_array_equal(labels.score, labels.subscores.sum(1))
    assert labels.video_ids[0].endswith("_capture1")
    one = load_labels(f"jigsaws:{shared('jigsaws')}?task=Knot_Tying&fold=2&id_format={{trial}}")
    assert [f.name for f in one.folds] == ["Knot_Tying/fold2"] and one.n == 36
    every = load_labels(f"jigsaws:{shared('jigsaws')}?task=all")
    assert every.n == 103 and len(every.folds) == 12
    with pytest.raises(AqaError, match="fold must be 0..3"):
        load_labels(f"jigsaws:{shared('jigsaws')}?fold=4")


def test_fisv_real():
    labels = load_labels(f"fisv:{shared('fisv')}?target=PCS")
    (fold,) = labels.folds
    assert (len(fold.train), len(fold.test)) == (400, 100)
    assert 10 <= labels.score.min() and labels.score.max() <= 38.5


# --- generic CSV and bad labels ---------------------------------------------------------


def test_csv_all_columns(tmp_path):
    path = write_csv(
        tmp_path / "l.csv",
        "video_id,score,split,difficulty,judge_2,judge_1,sub_a,sub_b,class",
        ["a,10,train,2.0,5,4,1,2,x", "b,20,test,3.0,6,5,2,3,y", "c,15,train,2.5,5.5,4.5,1,1,x"],
    )
    labels = load_labels(str(path))  # a bare .csv path means csv:
    assert labels.video_ids == ["a", "b", "c"]
    assert labels.judges.tolist()[0] == [4.0, 5.0]  # judge_1 first
    assert labels.subscore_names == ["a", "b"] and labels.subscores[1].tolist() == [2.0, 3.0]
    assert labels.class_names == ["x", "y"] and labels.class_id.tolist() == [0, 1, 0]
    assert labels.folds[0].test.tolist() == [1]


def test_csv_kfold_and_random_split(tmp_path):
    path = write_csv(
        tmp_path / "k.csv", "video_id,score,split", [f"v{i},{i},{i % 3}" for i in range(9)]
    )
    labels = load_labels(f"csv:{path}")
    assert [f.name for f in labels.folds] == ["fold0", "fold1", "fold2"]
    assert labels.folds[1].test.tolist() == [1, 4, 7]
    assert labels.folds[1].train.tolist() == [0, 2, 3, 5, 6, 8]
    plain = write_csv(tmp_path / "p.csv", "video_id,score", [f"v{i},{i}" for i in range(20)])
    with pytest.raises(AqaError, match="no split column"):
        load_labels(f"csv:{plain}")
    a = load_labels(f"csv:{plain}?test_fraction=0.25&split_seed=3")
    b = load_labels(f"csv:{plain}?test_fraction=0.25&split_seed=3")
    assert len(a.folds[0].test) == 5 and a.folds[0].test.tolist() == b.folds[0].test.tolist()


@pytest.mark.parametrize(
    "header,rows,match",
    [
        (
            "video_id,score,split",
            ["a,nan,train", "b,1,test"],
            r"score is NaN or inf for 1 video\(s\): a",
        ),
        ("video_id,score,split", ["a,x,train", "b,1,test"], r"l.csv:2: score 'x' is not a number"),
        ("video_id,split", ["a,train"], "no 'score' column"),
        ("video_id,score,split", ["a,1,train", "a,2,test"], "duplicate video ids"),
        ("video_id,score,split", ["a,1,train", "b,2,dev"], "split values must be train/test"),
        ("video_id,score,split", ["a,1,train", "b,2,train"], "both train and test"),
        (
            "video_id,score,split,difficulty",
            ["a,1,train,0", "b,2,test,1"],
            "difficulty is NaN/inf or not positive",
        ),
        (
            "video_id,score,split,judge_1",
            ["a,1,train,inf", "b,2,test,1"],
            "judge scores is NaN or inf",
        ),
    ],
)
def test_csv_bad_labels_are_named(tmp_path, header, rows, match):
    path = write_csv(tmp_path / "l.csv", header, rows)
    with pytest.raises(AqaError, match=match):
        load_labels(f"csv:{path}")


def test_mtl_aqa_bad_pickles(tmp_path):
    ann = {
        (1, 1): {"final_score": 50.0, "difficulty": 2.0},
        (1, 2): {"final_score": float("nan"), "difficulty": 2.0},
    }
    for name, obj in [
        ("final_annotations_dict.pkl", ann),
        ("train_split_0.pkl", [(1, 1)]),
        ("test_split_0.pkl", [(1, 2)]),
    ]:
        (tmp_path / name).write_bytes(pickle.dumps(obj))
    with pytest.raises(AqaError, match=r"final_score is NaN or inf for 1 video\(s\): 01_02"):
        load_labels(f"mtl_aqa:{tmp_path}")
    (tmp_path / "test_split_0.pkl").write_bytes(pickle.dumps([(1, 3)]))
    with pytest.raises(AqaError, match="have no annotation: 01_03"):
        load_labels(f"mtl_aqa:{tmp_path}")


def test_spec_parsing_and_errors(tmp_path):
    assert parse_spec("jigsaws:/d?task=Suturing&fold=0") == (
        "jigsaws",
        Path("/d"),
        {"task": "Suturing", "fold": "0"},
    )
    assert parse_spec("x.csv?test_fraction=0.2")[0] == "csv"
    with pytest.raises(AqaError, match="unknown dataset 'nope'"):
        parse_spec("nope:/d")
    with pytest.raises(AqaError, match="expected NAME:PATH"):
        parse_spec("/some/dir")
    with pytest.raises(AqaError, match="does not exist"):
        load_labels(f"mtl_aqa:{tmp_path / 'missing'}")
    with pytest.raises(AqaError, match=r"unknown key jigsaws\?taks \(did you mean task\?\)"):
        load_labels(f"jigsaws:{tmp_path}?taks=Suturing")


# --- typed adapter options --------------------------------------------------------------


def test_every_adapter_declares_its_options():
    assert {"aqa7", "csv", "fisv", "jigsaws", "logo", "mtl_aqa", "rg"} <= set(list_adapters())
    for name in list_adapters():
        fn = adapter(name)
        assert isinstance(fn.Options, type) and issubclass(fn.Options, AdapterOptions), name
        defaults = parse_options(name, {}, "test")  # every option has a default
        assert isinstance(defaults, fn.Options)
        assert fn.__doc__ and "Options" in fn.__doc__, f"{name}: document the options"
    assert set(adapter("aqa7").Options.model_fields) == {"class", "id_format", "missing"}
    assert parse_options("aqa7", {"class": "Gym_Vault"}, "test").sport == "gym_vault"


@pytest.mark.parametrize(
    "spec,typo,meant",
    [
        ("fisv:{d}?targt=TES", "fisv?targt", "target"),
        ("jigsaws:{d}?folds=0", "jigsaws?folds", "fold"),
        ("aqa7:{d}?clas=diving", "aqa7?clas", "class"),
        ("mtl_aqa:{d}?mising=drop", "mtl_aqa?mising", "missing"),
        ("csv:{d}/l.csv?test_fration=0.2", "csv?test_fration", "test_fraction"),
        ("rg:{d}?aparatus=Ball", "rg?aparatus", "apparatus"),
        ("logo:{d}?splt=split3", "logo?splt", "split"),
    ],
)
def test_a_typo_in_an_option_says_did_you_mean(tmp_path, spec, typo, meant):
    spec = spec.format(d=tmp_path)  # options are checked before any file is read
    with pytest.raises(AqaError, match=re.escape(f"unknown key {typo} (did you mean {meant}?)")):
        load_labels(spec)


@pytest.mark.parametrize(
    "spec,match",
    [
        ("jigsaws:{d}?fold=x", r"jigsaws\?fold = 'x': .*valid integer.* or input should be 'all'"),
        ("jigsaws:{d}?task=Sewing", r"jigsaws\?task = 'Sewing': input should be 'Suturing'"),
        ("fisv:{d}?target=total", r"fisv\?target = 'total': input should be 'TES' or 'PCS'"),
        ("mtl_aqa:{d}?split=first", r"mtl_aqa\?split = 'first': .*valid integer"),
        ("mtl_aqa:{d}?missing=keep", r"mtl_aqa\?missing = 'keep': input should be 'error' or"),
        ("aqa7:{d}?class=ski", r"aqa7\?class = 'ski': input should be 'diving'"),
        ("csv:{d}/l.csv?test_fraction=1.5", r"csv\?test_fraction = '1.5': .*less than 1"),
        ("csv:{d}/l.csv?test_fraction=0.2&split_seed=s", r"csv\?split_seed = 's': .*integer"),
        ("rg:{d}?target=score", r"rg\?target = 'score': input should be 'total'"),
    ],
)
def test_a_wrong_option_value_names_the_key_and_what_it_expects(tmp_path, spec, match):
    spec = spec.format(d=tmp_path)
    with pytest.raises(AqaError, match=rf"labels spec .*: {match}"):
        load_labels(spec)


def test_query_values_are_converted_by_the_field_types():
    class Q(AdapterOptions):
        flag: bool = False
        n: int = 0
        mode: Literal["Fast", "slow"] = "slow"
        items: list[int] = []
        names: list[Literal["Ball", "Hoop"]] | None = None

    def q(**query: str) -> Q:
        return parse(Q, query, "test", prefix="q?")

    assert [q(flag=v).flag for v in ("true", "1", "yes", "on", "TRUE")] == [True] * 5
    assert [q(flag=v).flag for v in ("false", "0", "no", "off")] == [False] * 4
    assert q(n="3").n == 3 and q(mode="FAST").mode == "Fast"
    assert q(items="1, 2,3").items == [1, 2, 3] and q(items="7").items == [7]
    assert q(names="ball,HOOP").names == ["Ball", "Hoop"]
    with pytest.raises(AqaError, match=r"q\?flag = 'maybe': input should be a valid boolean"):
        q(flag="maybe")
    with pytest.raises(AqaError, match=r"q\?items\.1 = 'x': .*valid integer"):
        q(items="1,x")
    # the real adapters: ints, choices in any case, a union of int and "all"
    assert parse_options("jigsaws", {"fold": "2", "task": "knot_tying"}, "t").fold == 2
    assert parse_options("jigsaws", {"fold": "ALL"}, "t").fold == "all"
    assert parse_options("fisv", {"target": "pcs"}, "t").target == "PCS"
    csv_opts = parse_options("csv", {"test_fraction": "0.25", "split_seed": "3"}, "t")
    assert (csv_opts.test_fraction, csv_opts.split_seed) == (0.25, 3)


def test_train_command_with_a_typo_in_the_labels_exits_1_without_traceback(tmp_path):
    from aqa_pipeline.cli import main
    from tests.train_fixtures import config, make_cache

    cache, _ = make_cache(tmp_path / "f.h5")
    (tmp_path / "fisv").mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config("mlp")))
    res = CliRunner().invoke(
        main,
        [
            "train",
            "--config",
            str(cfg),
            "--features",
            str(cache),
            "--labels",
            f"fisv:{tmp_path / 'fisv'}?targt=TES",
            "--run-dir",
            str(tmp_path / "run"),
        ],
    )
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit)  # a handled error, not a crash
    assert "Traceback" not in res.output
    assert "unknown key fisv?targt (did you mean target?)" in res.output


def test_restricted_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"a": Evil()}))
    with pytest.raises(AqaError, match="refusing to load builtins.print"):
        load_pickle(path)
    ok = tmp_path / "ok.pkl"
    ok.write_bytes(pickle.dumps({(1, 2): {"x": np.arange(3), "y": np.float64(2.5), "z": [1, "a"]}}))
    data = load_pickle(ok)
    assert data[(1, 2)]["x"].tolist() == [0, 1, 2] and data[(1, 2)]["y"] == 2.5


# --- alignment with a cache -------------------------------------------------------------


def _cache(ids: list[str], failed: tuple[str, ...] = ()) -> FeatureSet:
    recs = []
    for v in ids:
        if v in failed:
            recs.append(
                VideoRecord(video_id=v, status=1, error="decode error: moov atom not found")
            )
        else:
            recs.append(
                VideoRecord(
                    video_id=v,
                    clip_features=np.ones((2, 4)),
                    clip_frames=np.array([[0, 8], [8, 16]]),
                )
            )
    return FeatureSet.from_records(recs, 4)


def test_align_names_missing_and_failed_videos(tmp_path):
    labels = load_labels(
        str(
            write_csv(
                tmp_path / "l.csv", "video_id,score,split", ["a,1,train", "b,2,test", "c,3,train"]
            )
        )
    )
    rows = align(labels, _cache(["c", "b", "a", "extra"]), "cache.h5")
    assert rows.tolist() == [2, 1, 0]
    with pytest.raises(AqaError, match=r"cache.h5: 1 labelled video\(s\) .* no features .*: b"):
        align(labels, _cache(["a", "c"]), "cache.h5")
    with pytest.raises(
        AqaError, match=r"extraction failed .*: b \(decode error: moov atom not found\)"
    ):
        align(labels, _cache(["a", "b", "c"], failed=("b",)), "cache.h5")


# --- manifest helper --------------------------------------------------------------------


def test_mtl_aqa_manifest_both_layouts(tmp_path):
    folder = shared("mtl_aqa")
    n = mtl_aqa_manifest(folder, "/data/frames", tmp_path / "dives.csv")
    rows = list(csv.DictReader((tmp_path / "dives.csv").open()))
    assert n == 1412 == len(rows)
    assert rows[0] == {
        "video_id": "01_01",
        "path": "/data/frames/01_01",
        "start_frame": "",
        "end_frame": "",
    }
    mtl_aqa_manifest(
        folder, "/data/videos", tmp_path / "events.csv", layout="events", ext=".mp4", split="0"
    )
    rows = list(csv.DictReader((tmp_path / "events.csv").open()))
    assert rows[0] == {
        "video_id": "01_01",
        "path": "/data/videos/01.mp4",
        "start_frame": "7377",
        "end_frame": "7462",
    }
    labels = load_labels(f"mtl_aqa:{folder}")
    assert {r["video_id"] for r in rows} == set(labels.video_ids)


def test_manifest_command_line(tmp_path):
    from click.testing import CliRunner

    from aqa_pipeline.cli import main

    folder = shared("mtl_aqa")
    out = tmp_path / "m.csv"
    res = CliRunner().invoke(
        main, ["manifest", "mtl-aqa", "--annotations", str(folder), "--root", "/f", "-o", str(out)]
    )
    assert res.exit_code == 0 and "wrote 1412 dives" in res.output
    assert out.read_text().splitlines()[1] == "01_01,/f/01_01,,"
    res = CliRunner().invoke(
        main,
        ["manifest", "mtl-aqa", "--annotations", str(tmp_path), "--root", "/f", "-o", str(out)],
    )
    assert res.exit_code == 1 and str(tmp_path) in res.output
