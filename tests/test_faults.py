"""Faults fixed together: vanished inputs on a rerun, UTF-8 BOMs in user files, the --shard
message, Ctrl-C during extraction, end_frame past the end, the imported feature dimension,
and the launcher options' help per command."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from aqa_pipeline.cli import main
from aqa_pipeline.datasets import load_labels
from aqa_pipeline.datasets.fisv import read_fisv
from aqa_pipeline.datasets.rg import read_rg
from aqa_pipeline.errors import EXIT_INTERRUPTED, AqaError, Interrupted
from aqa_pipeline.extract.decode import probe
from aqa_pipeline.extract.parts import PartStore, parts_dir
from aqa_pipeline.extract.runner import ExtractJob, run_extraction
from aqa_pipeline.extract.sources import discover_sources, parse_shard, select_shard
from aqa_pipeline.features import read_features


def aqa(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def extract(config: Path, inp: Path, out: Path, *extra):
    return aqa("extract", "--config", config, "--input", inp, "--output", out, "--random-init",
               "--workers", "0", "--batch-size", "4", *extra)  # fmt: skip


def job_for(config: Path, inp: Path, out: Path, **more) -> ExtractJob:
    from aqa_pipeline.extract.recipe import load_recipe

    return ExtractJob(recipe=load_recipe(str(config)), input=str(inp), output=out,
                      random_init=True, workers=0, batch_size=4, **more)  # fmt: skip


def interrupt_after_puts(monkeypatch, n: int) -> list[str]:
    """Make PartStore.put raise KeyboardInterrupt (as Ctrl-C would) once `n` videos are in
    the part store; returns the ids put so far."""
    put = PartStore.put
    seen: list[str] = []

    def put_then_interrupt(self, record):
        put(self, record)
        seen.append(record.video_id)
        if len(seen) == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(PartStore, "put", put_then_interrupt)
    return seen


# ---------------------------------------------------------------- 1. vanished inputs


def test_rerun_drops_the_failure_of_a_deleted_input_and_keeps_finished_ones(
    tmp_path, make_video, tiny_recipe, caplog
):
    config = tiny_recipe()
    make_video("v/good.mp4", 24)
    make_video("v/gone.mp4", 16, seed=1)
    (tmp_path / "v" / "zero.mp4").write_bytes(b"")
    out = tmp_path / "c.h5"
    assert extract(config, tmp_path / "v", out).exit_code == 4
    assert [f["video_id"] for f in read_features(out).failed()] == ["zero"]
    gone = read_features(out)
    gone_feats = gone.clips(gone.index("gone")).copy()

    (tmp_path / "v" / "zero.mp4").unlink()
    (tmp_path / "v" / "gone.mp4").unlink()
    caplog.set_level(logging.INFO, logger="aqa_pipeline")
    res = extract(config, tmp_path / "v", out)
    assert res.exit_code == 0, res.output
    fs = read_features(out)
    assert fs.video_ids == ["gone", "good"] and fs.ok_mask.all() and fs.failed() == []
    np.testing.assert_array_equal(fs.clips(fs.index("gone")), gone_feats)  # kept as it was
    messages = [r.getMessage() for r in caplog.records]
    assert "video zero: no longer in the input set; its failure record is dropped" in messages
    assert any(m.startswith("video gone: no longer in the input set") for m in messages)


def test_rerun_drops_a_vanished_failure_left_in_the_part_store(
    tmp_path, make_video, tiny_recipe, monkeypatch, caplog
):
    config = tiny_recipe()
    make_video("v/a.mp4", 24)
    (tmp_path / "v" / "b.mp4").write_bytes(b"")  # fails
    make_video("v/c.mp4", 24, seed=2)
    out = tmp_path / "c.h5"
    seen = interrupt_after_puts(monkeypatch, 2)
    with pytest.raises(Interrupted):
        run_extraction(job_for(config, tmp_path / "v", out))
    assert sorted(seen) == ["a", "b"] and not out.exists()  # b fails first: no clips
    monkeypatch.undo()

    (tmp_path / "v" / "b.mp4").unlink()
    caplog.set_level(logging.INFO, logger="aqa_pipeline")
    summary = run_extraction(job_for(config, tmp_path / "v", out))
    assert (summary.n_skipped, summary.n_extracted, summary.n_failed) == (1, 1, 0)
    fs = read_features(out)
    assert fs.video_ids == ["a", "c"] and fs.ok_mask.all()
    assert any("video b: no longer in the input set; its failure record is dropped" in r.message
               for r in caplog.records)  # fmt: skip


def test_a_failure_outside_this_shard_but_in_the_input_set_is_kept(
    tmp_path, make_video, tiny_recipe
):
    """'The input set' is every source, not only the shard's: a shard's rerun never drops
    a record because the video belongs to another shard."""
    config = tiny_recipe()
    make_video("v/a.mp4", 24)
    (tmp_path / "v" / "b.mp4").write_bytes(b"")
    out = tmp_path / "c.h5"
    assert extract(config, tmp_path / "v", out).exit_code == 4
    # the same cache, rerun as if it were shard 0 of 2 (holding only "a"): "b" is still an input
    summary = run_extraction(job_for(config, tmp_path / "v", out, shard=(0, 2)))
    assert summary.n_skipped == 1
    assert [f["video_id"] for f in read_features(out).failed()] == ["b"]


# ---------------------------------------------------------------- 2. UTF-8 BOM


def test_manifest_with_a_bom(tmp_path, make_video):
    make_video("v/a.mp4", 24)
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "video_id,path,start_frame,end_frame\na,v/a.mp4,2,9\n", encoding="utf-8-sig"
    )
    assert manifest.read_bytes().startswith(b"\xef\xbb\xbf")
    (source,) = discover_sources(manifest)
    assert (source.video_id, source.path, source.start_frame, source.end_frame) == (
        "a", tmp_path / "v" / "a.mp4", 2, 9)  # fmt: skip


def test_csv_labels_with_a_bom(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("video_id,score,split\na,1,train\nb,2,test\nc,3,train\n", encoding="utf-8-sig")
    labels = load_labels(f"csv:{path}")
    assert labels.video_ids == ["a", "b", "c"]
    assert labels.score.tolist() == [1.0, 2.0, 3.0] and labels.folds[0].test.tolist() == [1]


def test_fisv_and_rg_label_files_with_a_bom(tmp_path):
    fisv = tmp_path / "fisv"
    fisv.mkdir()
    (fisv / "train.txt").write_text("1 30.5 25.0 0\n2 31.0 26.0 1\n", encoding="utf-8-sig")
    (fisv / "test.txt").write_text("3 29.0 24.0 0\n", encoding="utf-8-sig")
    assert [r[0] for r in read_fisv(fisv)] == ["1", "2", "3"]

    rg = tmp_path / "rg"
    rg.mkdir()
    header = "Video_Name\tDifficulty_Score\tExecution_Score\tTotal_Score\n"
    (rg / "train.txt").write_text(header + "Ball_001\t5.0\t6.0\t11.0\n", encoding="utf-8-sig")
    (rg / "test.txt").write_text(header + "Ball_002\t4.0\t7.0\t11.0\n", encoding="utf-8-sig")
    rows = read_rg(rg, "Ball", "difficulty")
    assert [(r[0], r[1], r[2]) for r in rows] == [("Ball_001", 5.0, "train"),
                                                  ("Ball_002", 4.0, "test")]  # fmt: skip


# ---------------------------------------------------------------- 3. --shard


@pytest.mark.parametrize("value", ["5/2", "x", "2/2", "-1/2", "0/0", "1/2/3", ""])
def test_bad_shard_names_the_option_without_a_traceback(tmp_path, tiny_recipe, make_video, value):
    make_video("v/a.mp4", 24)
    res = extract(tiny_recipe(), tmp_path / "v", tmp_path / "c.h5", "--shard", value)
    assert res.exit_code == 2, res.output
    assert f"--shard: expected K/N with 0 <= K < N (e.g. 0/4), got {value!r}" in res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)
    assert not (tmp_path / "c.h5").exists()


def test_one_shard_check_for_the_cli_and_select_shard():
    assert parse_shard("1/4") == (1, 4) and parse_shard(" 0 / 1 ") == (0, 1)
    assert parse_shard(None) is None
    with pytest.raises(Exception, match=r"--shard: expected K/N .* got '3/3'"):
        select_shard([], 3, 3)


# ---------------------------------------------------------------- 4. Ctrl-C


def test_ctrl_c_exits_130_keeps_finished_videos_and_a_rerun_resumes(
    tmp_path, make_video, tiny_recipe, monkeypatch
):
    config = tiny_recipe()
    for i in range(3):
        make_video(f"v/{i}.mp4", 16, seed=i)
    out = tmp_path / "c.h5"
    seen = interrupt_after_puts(monkeypatch, 1)
    with pytest.raises(Interrupted) as info:
        run_extraction(job_for(config, tmp_path / "v", out))
    err = info.value
    assert isinstance(err, AqaError) and err.exit_code == EXIT_INTERRUPTED == 130
    message = err.format_message()
    assert "interrupted" in message and "finished videos are kept" in message
    assert "a rerun of the same command resumes" in message and "1 in" in message
    assert seen == ["0"] and not out.exists()
    assert len(list(parts_dir(out).glob("v-*.npz"))) == 1  # the part store was not removed
    monkeypatch.undo()

    summary = run_extraction(job_for(config, tmp_path / "v", out))
    assert (summary.n_skipped, summary.n_extracted, summary.n_failed) == (1, 2, 0)
    assert read_features(out).video_ids == ["0", "1", "2"]
    assert not parts_dir(out).exists()


def test_ctrl_c_through_the_command_line_exits_130(tmp_path, make_video, tiny_recipe, monkeypatch):
    make_video("v/a.mp4", 16)
    make_video("v/b.mp4", 16, seed=1)
    interrupt_after_puts(monkeypatch, 1)
    res = extract(tiny_recipe(), tmp_path / "v", tmp_path / "c.h5")
    assert res.exit_code == 130, res.output
    assert "finished videos are kept" in res.output and "rerun of the same command" in res.output
    assert "Traceback" not in res.output


# ---------------------------------------------------------------- 5. end_frame past the end


def test_end_frame_past_the_end_warns(tmp_path, make_video, caplog):
    make_video("v/a.mp4", 24)
    make_video("v/b.mp4", 24, seed=1)
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path,start_frame,end_frame\nclip_a,v/a.mp4,4,100\n"
                        "clip_b,v/b.mp4,4,23\n")  # fmt: skip
    a, b = discover_sources(manifest)
    with caplog.at_level(logging.WARNING):
        info = probe(a)
    assert (info.start, info.num_frames) == (4, 20)  # clamped to the last frame, 23
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = record.getMessage()
    assert "clip_a" in text and "end_frame 100" in text and "24 frames" in text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert probe(b).num_frames == 20  # the last frame exactly: no warning
    assert not caplog.records


def test_end_frame_past_the_end_of_a_frame_folder_warns(tmp_path, caplog):
    from PIL import Image

    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (16, 16)).save(folder / f"{i:03d}.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path,end_frame\nfr,f,9\n")
    (source,) = discover_sources(manifest)
    with caplog.at_level(logging.WARNING):
        assert probe(source).num_frames == 6
    assert any("fr" in r.getMessage() and "end_frame 9" in r.getMessage()
               and "6 frames" in r.getMessage() for r in caplog.records)  # fmt: skip


# ---------------------------------------------------------------- 6. imported feature dim


def _npy_dir(folder: Path, dim: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        np.save(folder / f"{i}.npy", rng.normal(size=(4, dim)).astype(np.float32))
    return folder


def test_import_warns_when_the_dimension_contradicts_the_backbone(tmp_path, caplog):
    folder = _npy_dir(tmp_path / "feats", 1024)
    with caplog.at_level(logging.WARNING):
        res = aqa("features", "import", "--format", "npy-dir", folder, "-o", tmp_path / "a.h5",
                  "--backbone", "i3d_r50")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "1024-d" in res.stderr and "--backbone i3d_r50" in res.stderr and "2048-d" in res.stderr
    assert any("2048-d" in r.getMessage() for r in caplog.records)
    assert read_features(tmp_path / "a.h5").feature_dim == 1024  # imported all the same


@pytest.mark.parametrize("backbone", ["i3d", "swin3d_b", "swin3d", "somebody_elses_net"])
def test_import_is_quiet_when_the_dimension_fits_or_is_unknown(tmp_path, backbone):
    folder = _npy_dir(tmp_path / "feats", 1024)
    res = aqa("features", "import", folder, "-o", tmp_path / "a.h5", "--backbone", backbone)
    assert res.exit_code == 0, res.output
    assert "warning" not in res.stderr.lower()


# ---------------------------------------------------------------- 7. launcher help


def test_train_help_speaks_of_sweep_runs_and_extract_help_of_shards():
    train = aqa("train", "--help")
    assert train.exit_code == 0
    text = " ".join(train.output.split()).lower()
    assert "decode workers" not in text and "shard" not in text and "--gpus " not in text
    assert "--cpus-per-task" in text and "sweep run" in text
    extract_help = aqa("extract", "--help")
    text = " ".join(extract_help.output.split()).lower()
    assert "decode workers" in text and "--shards" in text and "shard" in text


def test_train_refuses_extraction_only_launcher_options(tmp_path):
    res = aqa("train", "--config", tmp_path / "a.yaml", "--features", tmp_path / "c.h5",
              "--run-dir", tmp_path / "r", "--shards", "2")  # fmt: skip
    assert res.exit_code == 2 and "--shards" in res.output
