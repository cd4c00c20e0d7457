"""Decoding: the shared swscale context, seeking for sparse recipes, TorchCodec as an
optional decoder (skipped, saying why, where it is not installed), `--decode-only`."""

from __future__ import annotations

import builtins
import dataclasses
import json
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from aqa_pipeline.cli import main
from aqa_pipeline.errors import AqaError
from aqa_pipeline.extract.decode import (
    DecodeStats,
    _seek_table,
    check_decoder,
    iter_frames,
    probe,
)
from aqa_pipeline.extract.sampling import plan_clips
from aqa_pipeline.extract.sources import VideoSource
from aqa_pipeline.synthetic import moving_square, write_video

from .conftest import needs_shared


def torchcodec_or_skip() -> None:
    try:
        check_decoder("torchcodec")
    except AqaError as exc:
        pytest.skip(f"torchcodec not usable here: {exc.format_message()[:200]}")


@pytest.fixture(scope="module")
def synthetic_videos(tmp_path_factory) -> dict[str, Path]:
    """240 frames of 96x128 in the codecs the tests compare (mpeg4: a keyframe every 12)."""
    folder = tmp_path_factory.mktemp("decode")
    out = {}
    for codec, name in (("mpeg4", "mpeg4.avi"), ("libx264", "h264.mp4"), ("mjpeg", "mjpeg.mkv")):
        out[codec] = write_video(
            folder / name, moving_square(240, (96, 128), 3.0, seed=1), 25, codec
        )
    return out


def source(path: Path) -> VideoSource:
    return VideoSource(path.stem, path, "video")


def frames_of(path: Path, wanted, decoder="pyav", seekable: bool | None = None, stats=None):
    src = source(path)
    info = probe(src)
    if seekable is not None:
        info = dataclasses.replace(info, seekable=seekable and info.seekable)
    return dict(iter_frames(src, info, np.asarray(wanted), None, decoder, stats))


def sparse(n_frames: int) -> np.ndarray:
    """A JIGSAWS-like sparse plan: 8 frames by linspace (34 apart in 240), clips of 4."""
    return np.unique(plan_clips({"method": "linspace", "num_frames": 8, "clip_len": 4}, n_frames))


def to_image_frames(path: Path) -> list[np.ndarray]:
    """The previous conversion: PIL images from PyAV, every frame in order."""
    with av.open(str(path)) as container:
        return [np.asarray(f.to_image()) for f in container.decode(video=0)]


# ------------------------------------------------------------------ conversion and seeking


def test_shared_swscale_context_gives_the_frames_of_to_image(synthetic_videos):
    for path in synthetic_videos.values():
        ref = to_image_frames(path)
        got = frames_of(path, range(len(ref)), seekable=False)
        assert len(got) == len(ref)
        for i, frame in got.items():
            assert frame.shape == (96, 128, 3) and frame.dtype == np.uint8
            np.testing.assert_array_equal(frame, ref[i])


def test_frames_are_views_of_padded_rows(tmp_path):
    """A width whose rgb24 rows FFmpeg pads (100 px: 300 bytes in a longer line) reads right."""
    path = write_video(tmp_path / "odd.mp4", moving_square(12, (50, 100), 3.0), 25, "libx264")
    ref = to_image_frames(path)
    got = frames_of(path, range(len(ref)), seekable=False)
    assert any(frame.strides[0] > 300 for frame in got.values())  # padded rows, no copy
    for i, frame in got.items():
        np.testing.assert_array_equal(frame, ref[i])


def test_seeking_returns_the_frames_decoding_in_order_returns(synthetic_videos):
    path = synthetic_videos["mpeg4"]
    info = probe(source(path))
    assert info.seekable and info.keyframes[:3] == (0, 12, 24)
    wanted = sparse(info.num_frames)
    stats = DecodeStats()
    seeking = frames_of(path, wanted, stats=stats)
    in_order = frames_of(path, wanted, seekable=False)
    assert stats.seeks > 0 and stats.fallbacks == 0
    assert stats.frames_decoded < info.num_frames * 0.9  # frames between clips were skipped
    assert sorted(seeking) == sorted(in_order) == wanted.tolist()
    for i in wanted:
        np.testing.assert_array_equal(seeking[i], in_order[i])


def test_a_seek_that_lands_wrong_falls_back_to_decoding_in_order(synthetic_videos, monkeypatch):
    path = synthetic_videos["mpeg4"]
    info = probe(source(path))
    # a timestamp table off by one frame from frame 11 on: the seek to keyframe 24 lands on
    # frames the table numbers 23 and 24, and "24" is no keyframe
    pts = info.pts
    lying = dataclasses.replace(info, pts=pts[:11] + pts[12:] + (pts[-1] + 1,))
    wanted = sparse(info.num_frames)
    stats = DecodeStats()
    got = dict(iter_frames(source(path), lying, wanted, None, "pyav", stats))
    ref = frames_of(path, wanted, seekable=False)
    assert stats.fallbacks == 1
    for i in wanted:
        np.testing.assert_array_equal(got[i], ref[i])


def test_seek_table_refuses_timestamps_in_decode_order_of_a_reordering_stream():
    keys = [True] + [False] * 11
    in_order = [(i * 10, k) for i, k in enumerate(keys * 2)]
    assert _seek_table(in_order, reorders=False)["seekable"]
    assert _seek_table(in_order, reorders=True) == {}  # B-frames, but pts == decode order
    shuffled = [(p, k) for p, k in in_order]
    shuffled[1], shuffled[2] = shuffled[2], shuffled[1]
    assert _seek_table(shuffled, reorders=True)["keyframes"] == (0, 12)
    assert _seek_table([(0, True), (10, False)], reorders=False) == {}  # one keyframe
    assert _seek_table([(None, True), (10, True)], reorders=False) == {}
    assert _seek_table([(0, True), (0, True)], reorders=False) == {}


def test_real_videos_seek_only_where_the_timestamps_are_right():
    videos = needs_shared("data", "videos")
    box = probe(source(videos / "box.mp4"))  # B-frames with timestamps in decode order
    assert not box.seekable
    bikes = source(videos / "bikes.mp4")
    info = probe(bikes)
    assert info.seekable and len(info.keyframes) > 2
    wanted = sparse(info.num_frames)
    stats = DecodeStats()
    seeking = frames_of(bikes.path, wanted, stats=stats)
    in_order = frames_of(bikes.path, wanted, seekable=False)
    assert stats.seeks > 0 and stats.fallbacks == 0
    for i in wanted:
        np.testing.assert_array_equal(seeking[i], in_order[i])


# ------------------------------------------------------------------ torchcodec


def test_missing_torchcodec_is_a_clear_error(monkeypatch, tmp_path, tiny_recipe, make_video):
    real_import = builtins.__import__

    def no_torchcodec(name, *args, **kwargs):
        if name.startswith("torchcodec"):
            raise ImportError("No module named 'torchcodec'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchcodec)
    with pytest.raises(AqaError, match=r"pip install 'aqa-pipeline\[torchcodec\]'"):
        check_decoder("torchcodec")
    make_video("v/a.mp4")
    res = CliRunner().invoke(main, ["extract", "--config", str(tiny_recipe()), "--input",
                                    str(tmp_path / "v"), "--output", str(tmp_path / "c.h5"),
                                    "--random-init", "--decoder", "torchcodec"])  # fmt: skip
    assert res.exit_code == 1
    assert "--decoder torchcodec" in res.output and "libavcodec" in res.output
    assert "Traceback" not in res.output


def test_torchcodec_returns_the_frames_of_pyav(synthetic_videos):
    torchcodec_or_skip()
    for codec, path in synthetic_videos.items():
        n = probe(source(path)).num_frames
        for wanted in (np.arange(n), sparse(n)):
            ref = frames_of(path, wanted)
            got = frames_of(path, wanted, decoder="torchcodec")
            assert sorted(got) == sorted(ref)
            diff = np.stack([np.abs(got[i].astype(int) - ref[i]) for i in ref])
            if codec == "mpeg4":
                # MPEG-4 part 2 does not fix its inverse DCT bit-exactly, and TorchCodec runs
                # the system's FFmpeg, PyAV its own: a few values differ, by at most 2
                assert diff.max() <= 2 and (diff > 0).mean() < 1e-3, (diff.max(), diff.mean())
            else:  # h264 and mjpeg decode bit-exactly; the same swscale conversion follows
                assert diff.max() == 0, (codec, diff.max())


def test_torchcodec_on_real_videos():
    torchcodec_or_skip()
    videos = needs_shared("data", "videos")
    for name in ("box.mp4", "bikes.mp4", "carphone_pristine.mp4"):
        path = videos / name
        n = probe(source(path)).num_frames
        wanted = sparse(n)
        ref = frames_of(path, wanted)
        got = frames_of(path, wanted, decoder="torchcodec")
        assert sorted(got) == sorted(ref)
        for i in ref:  # h264: bit-exact
            np.testing.assert_array_equal(got[i], ref[i], err_msg=f"{name} frame {i}")


# ------------------------------------------------------------------ --decode-only


def test_decode_only_reports_rates_stages_and_workers(tmp_path, make_video, tiny_recipe):
    make_video("v/a.mp4", 24)
    make_video("v/b.avi", 40, codec="mpeg4", seed=1)
    args = ["extract", "--config", str(tiny_recipe()), "--input", str(tmp_path / "v"),
            "--decode-only", "--workers", "1", "--feed", "50"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "8 clips, 64 sampled frames" in res.output  # 3 + 5 clips of 8
    assert "clips/s" in res.output and "sampled frames/s" in res.output
    assert "to feed 50 clips/s you need" in res.output and "decode workers" in res.output
    assert not list(tmp_path.glob("*.h5"))  # no cache, no weights needed
    res = CliRunner().invoke(main, [*args, "--json"])
    out = json.loads(res.stdout)
    assert out["n_clips"] == 8 and out["sampled_frames"] == 64 and out["n_failed"] == 0
    assert out["stages"]["frames_decoded"] == 64 and out["stages"]["busy_s"] > 0
    per_worker = out["per_worker_clips_per_s"]
    assert out["workers_for"]["50.0"] == int(np.ceil(50 / per_worker - 1e-9))


def test_output_is_required_without_decode_only(tmp_path, make_video, tiny_recipe):
    make_video("v/a.mp4", 24)
    res = CliRunner().invoke(main, ["extract", "--config", str(tiny_recipe()), "--input",
                                    str(tmp_path / "v"), "--random-init"])  # fmt: skip
    assert res.exit_code == 2 and "--output" in res.output


def test_decode_only_seeks_for_a_sparse_recipe_unless_told_not_to(tmp_path, make_video):
    make_video("v/a.avi", 300, codec="mpeg4")  # a keyframe every 12 frames
    recipe = tmp_path / "sparse.yaml"
    recipe.write_text(
        "backbone: {name: i3d}\n"
        "sampling: {method: linspace, num_frames: 8, clip_len: 4}\n"
        "preprocess: {resize: [32, 32]}\n"
    )
    args = ["extract", "--config", str(recipe), "--input", str(tmp_path / "v"), "--decode-only",
            "--workers", "0", "--json"]  # fmt: skip
    seeking = json.loads(CliRunner().invoke(main, args).stdout)
    in_order = json.loads(CliRunner().invoke(main, [*args, "--no-seek"]).stdout)
    assert seeking["n_clips"] == in_order["n_clips"] == 2
    assert seeking["stages"]["seeks"] > 0 and in_order["stages"]["seeks"] == 0
    assert seeking["stages"]["frames_decoded"] < in_order["stages"]["frames_decoded"] == 300
