"""`aqa extract` end to end on small videos: formats, bad inputs, resume, shards, caches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from click.testing import CliRunner
from PIL import Image

from aqa_pipeline.cli import main
from aqa_pipeline.features import read_features
from aqa_pipeline.synthetic import moving_square

from .conftest import needs_shared


def aqa(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def extract(config: Path, inp: Path, out: Path, *extra: str):
    return aqa("extract", "--config", config, "--input", inp, "--output", out, "--random-init",
               "--workers", "0", "--batch-size", "4", *extra)  # fmt: skip


def write_frame_folder(folder: Path, n: int, seed: int = 0) -> Path:
    folder.mkdir(parents=True)
    for i, frame in enumerate(moving_square(n, (48, 64), 2.0, seed)):
        Image.fromarray(frame).save(folder / f"img_{i:05d}.jpg", quality=95)
    return folder


def test_codecs_and_frame_folders(tmp_path, make_video, tiny_recipe):
    vids = tmp_path / "in"
    make_video("in/h264.mp4", 24, "libx264")
    make_video("in/sub/mpeg4.avi", 24, "mpeg4", seed=1)
    make_video("in/sub/msmpeg4.avi", 24, "msmpeg4", seed=2)
    make_video("in/mjpeg.mkv", 24, "mjpeg", seed=3)
    write_frame_folder(vids / "frames_a", 20, seed=4)
    out = tmp_path / "c.h5"
    res = extract(tiny_recipe(), vids, out, "--workers", "2")
    assert res.exit_code == 0, res.output
    fs = read_features(out)
    assert fs.video_ids == ["frames_a", "h264", "mjpeg", "sub/mpeg4", "sub/msmpeg4"]
    assert fs.ok_mask.all()
    counts = np.diff(fs.clip_offsets).tolist()
    assert counts == [2, 3, 3, 3, 3]  # 20 // 8 and 24 // 8 clips
    assert fs.frames(0).tolist() == [[2, 10], [10, 18]]  # remainder 4 trimmed 2 + 2
    assert fs.frames(1).tolist() == [[0, 8], [8, 16], [16, 24]]
    for i in range(fs.n_videos):
        np.testing.assert_allclose(fs.video_features[i], fs.clips(i).mean(0), rtol=1e-5, atol=1e-6)
    assert np.isfinite(fs.clip_features).all()
    assert fs.key_fields["weights"] == {"random_init": True, "seed": 0, "sha256": None}
    assert aqa("features", "verify", out).exit_code == 0


def test_real_clips_when_present(tmp_path, tiny_recipe):
    videos = needs_shared("data", "videos")
    out = tmp_path / "real.h5"
    res = extract(
        tiny_recipe(clip_len=32, target_fps=25), videos, out, "--set", "preprocess.resize=[32,32]"
    )
    assert res.exit_code == 0, res.output
    fs = read_features(out)
    assert fs.video_ids == ["bikes", "box", "carphone_pristine"]
    # box: 455 frames at 29.97 fps -> 379 at 25 fps -> 11 clips; bikes 250 at 25 -> 7
    assert dict(zip(fs.video_ids, np.diff(fs.clip_offsets).tolist(), strict=True)) == {
        "bikes": 7, "box": 11, "carphone_pristine": 3}  # fmt: skip
    assert fs.num_frames.tolist() == [250, 455, 120]


def test_bad_inputs_are_recorded_and_the_rest_extracted(tmp_path, make_video, tiny_recipe):
    vids = tmp_path / "in"
    good = make_video("in/good.mp4", 24)
    make_video("in/short.mp4", 5, seed=1)
    (vids / "zero.mp4").write_bytes(b"")
    (vids / "text.mp4").write_text("this is not a video\n" * 50)
    (vids / "corrupt.mp4").write_bytes(os.urandom(5000))
    make_video("in/full.mp4", 48, seed=2)
    data = (vids / "full.mp4").read_bytes()
    (vids / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (vids / "full.mp4").unlink()
    out = tmp_path / "c.h5"
    res = extract(tiny_recipe(), vids, out)
    assert res.exit_code == 4, res.output
    fs = read_features(out)
    reasons = {f["video_id"]: f["error"] for f in fs.failed()}
    assert set(reasons) == {"short", "zero", "text", "corrupt", "truncated"}
    assert "too short" in reasons["short"] and "has 5" in reasons["short"]
    assert "empty file (0 bytes)" in reasons["zero"]
    assert "zero.mp4" in reasons["zero"]
    assert "not a readable video" in reasons["text"]
    assert "corrupt.mp4" in reasons["corrupt"]
    assert "truncated.mp4" in reasons["truncated"]
    assert fs.ok_mask[fs.index("good")] and len(fs.clips(fs.index("good"))) == 3
    # a rerun keeps the good video and retries the failures; fixing one gets it extracted
    (vids / "short.mp4").unlink()
    good_feats = fs.clips(fs.index("good")).copy()
    os.link(good, vids / "short.mp4")
    res = extract(tiny_recipe(), vids, out)
    assert res.exit_code == 4
    assert "1 extracted, 1 already done" in res.output
    fs2 = read_features(out)
    assert fs2.ok_mask[fs2.index("short")]
    np.testing.assert_array_equal(fs2.clips(fs2.index("good")), good_feats)


def test_missing_paths_in_a_manifest_are_recorded(tmp_path, make_video, tiny_recipe):
    make_video("v/a.mp4", 24)
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path,start_frame,end_frame\na,v/a.mp4,4,19\nb,v/missing.mp4,,\n")
    out = tmp_path / "c.h5"
    res = extract(tiny_recipe(), manifest, out)
    assert res.exit_code == 4
    fs = read_features(out)
    assert "file not found" in fs.failed()[0]["error"] and "missing.mp4" in fs.failed()[0]["error"]
    a = fs.index("a")
    assert fs.num_frames[a] == 16  # frames 4..19
    assert fs.frames(a).tolist() == [[4, 12], [12, 20]]  # in the file's frame numbers


def test_missing_input_and_weights_errors(tmp_path, tiny_recipe, make_video):
    res = aqa("extract", "--config", tiny_recipe(), "--input", tmp_path / "nope",
              "--output", tmp_path / "c.h5", "--random-init")  # fmt: skip
    assert res.exit_code == 1 and "input not found" in res.output
    make_video("v/a.mp4")
    res = aqa(
        "extract",
        "--config",
        tiny_recipe(),
        "--input",
        tmp_path / "v",
        "--output",
        tmp_path / "c.h5",
    )
    assert res.exit_code == 1 and "--random-init" in res.output
    res = aqa("extract", "--config", tmp_path / "nope.yaml", "--input", tmp_path / "v",
              "--output", tmp_path / "c.h5", "--random-init")  # fmt: skip
    assert res.exit_code == 1 and "nope.yaml" in res.output


def test_config_mismatch_exits_3_naming_fields(tmp_path, make_video, tiny_recipe):
    make_video("v/a.mp4", 24)
    out = tmp_path / "c.h5"
    config = tiny_recipe()
    assert extract(config, tmp_path / "v", out).exit_code == 0
    res = extract(config, tmp_path / "v", out, "--set", "sampling.clip_len=4")
    assert res.exit_code == 3
    assert "sampling.clip_len" in res.output
    res = extract(config, tmp_path / "v", out, "--dtype", "float16")
    assert res.exit_code == 3 and "dtype" in res.output
    res = extract(config, tmp_path / "v", out, "--set", "backbone.seed=1")
    assert res.exit_code == 3 and "weights.seed" in res.output


def test_shards_merge_to_the_single_run(tmp_path, make_video, tiny_recipe):
    for i in range(5):
        make_video(f"v/{i}.mp4", 16 + 8 * i, seed=i)
    config = tiny_recipe()
    single = tmp_path / "single.h5"
    assert extract(config, tmp_path / "v", single).exit_code == 0
    shards = [tmp_path / f"s{k}.h5" for k in range(2)]
    for k, s in enumerate(shards):
        assert extract(config, tmp_path / "v", s, "--shard", f"{k}/2").exit_code == 0
    assert set(read_features(shards[0]).video_ids).isdisjoint(read_features(shards[1]).video_ids)
    res = aqa("features", "merge", shards[0], "-o", tmp_path / "bad.h5")
    assert res.exit_code == 1 and "incomplete: shard(s) [1] of 2 missing" in res.output
    merged = tmp_path / "merged.h5"
    assert aqa("features", "merge", *shards, "-o", merged).exit_code == 0
    a, b = read_features(single), read_features(merged)
    assert a.video_ids == b.video_ids
    np.testing.assert_allclose(a.clip_features, b.clip_features, atol=1e-5)
    np.testing.assert_array_equal(a.clip_offsets, b.clip_offsets)
    np.testing.assert_array_equal(a.clip_frames, b.clip_frames)
    assert a.cache_key == b.cache_key
    info = json.loads(aqa("features", "info", merged, "--json").output)
    assert [m["shard"]["k"] for m in info["provenance"]["merged_from"]] == [0, 1]
    # a shard of another input list is refused
    make_video("w/x.mp4", 16)
    other = tmp_path / "other.h5"
    assert extract(config, tmp_path / "w", other, "--shard", "1/2").exit_code == 0
    res = aqa("features", "merge", shards[0], other, "-o", tmp_path / "bad.h5")
    assert res.exit_code == 1 and "different jobs" in res.output


def test_info_json_float16_and_verify(tmp_path, make_video, tiny_recipe):
    make_video("v/a.mp4", 24)
    (tmp_path / "v" / "b.mp4").write_bytes(b"")
    out = tmp_path / "c.h5"
    assert extract(tiny_recipe(), tmp_path / "v", out, "--dtype", "float16").exit_code == 4
    info = json.loads(aqa("features", "info", out, "--json").output)
    assert (info["n_videos"], info["n_clips"], info["n_failed"]) == (2, 3, 1)
    assert info["feature_dim"] == 128 and info["video_ids"] == ["a", "b"]
    assert info["failed"][0]["video_id"] == "b" and "empty" in info["failed"][0]["error"]
    assert info["dtype"] == "float16" and info["key_fields"]["dtype"] == "float16"
    assert aqa("features", "verify", out).exit_code == 0
    with h5py.File(out, "r+") as f:
        f["clip_features"][1] = f["clip_features"][1] + 5.0
    res = aqa("features", "verify", out)
    assert res.exit_code == 1 and "a: video feature differs" in res.output
    res = aqa("features", "info", tmp_path / "v" / "b.mp4")
    assert res.exit_code == 1 and "not a readable HDF5 file" in res.output


def test_import_npy_dir(tmp_path):
    folder = tmp_path / "feats"
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {str(i): rng.normal(size=(5 + i, 16)).astype(np.float16) for i in range(3)}
    for k, v in arrays.items():
        np.save(folder / f"{k}.npy", v)
    (folder / "broken.npy").write_bytes(b"nope")
    out = tmp_path / "imp.h5"
    res = aqa("features", "import", "--format", "npy-dir", folder, "-o", out,
              "--backbone", "swin3d_b", "--recipe", "swin_b_gdlt", "--note", "GDLT release")  # fmt: skip
    assert res.exit_code == 4 and "broken" in res.output
    fs = read_features(out)
    assert fs.video_ids == ["0", "1", "2", "broken"]
    np.testing.assert_array_equal(fs.clips(fs.index("2")), arrays["2"].astype(np.float32))
    assert fs.frames(0)[1].tolist() == [32, 64]
    assert fs.key_fields["sampling"]["target_fps"] == 25 and fs.provenance["note"] == "GDLT release"


def _parts(out: Path) -> int:
    return len(list(out.with_name(out.name + ".parts").glob("v-*.npz")))


def test_kill_9_then_resume_does_each_video_once(tmp_path, make_video, tiny_recipe):
    n = 10
    for i in range(n):
        make_video(f"v/{i:02d}.mp4", 64, seed=i)
    config = tiny_recipe()
    out = tmp_path / "c.h5"
    cmd = [sys.executable, "-m", "aqa_pipeline.cli", "extract", "--config", str(config),
           "--input", str(tmp_path / "v"), "--output", str(out), "--random-init",
           "--workers", "1", "--batch-size", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _parts(out) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _parts(out)
    assert 3 <= done_before < n, "the job finished before it could be killed"
    assert not out.exists()  # nothing under the final name until the cache is whole
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{n - done_before} extracted, {done_before} already done" in res.stdout
    fs = read_features(out)
    assert fs.video_ids == [f"{i:02d}" for i in range(n)]
    assert not out.with_name(out.name + ".parts").exists()
    fresh = tmp_path / "fresh.h5"
    assert extract(config, tmp_path / "v", fresh).exit_code == 0
    np.testing.assert_allclose(fs.clip_features, read_features(fresh).clip_features, atol=1e-5)


_HOLD_LOCK = """
import os, sys, time
from pathlib import Path
from aqa_pipeline.extract.parts import PartStore
store = PartStore(Path(sys.argv[1]), {"recipe": "r"})
if os.fork() == 0:  # like a data-loader worker: inherits the open lock file
    time.sleep(30)
    os._exit(0)
print("locked", flush=True)
time.sleep(30)
"""


def test_cache_lock_refuses_a_second_writer_and_dies_with_its_owner(tmp_path):
    from aqa_pipeline.errors import AqaError
    from aqa_pipeline.extract.parts import PartStore

    out = tmp_path / "c.h5"
    owner = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out)], stdout=subprocess.PIPE)
    try:
        assert owner.stdout.readline().strip() == b"locked"
        try:
            PartStore(out, {"recipe": "r"})
            raise AssertionError("a second writer was let in")
        except AqaError as err:
            assert "another extraction is writing this cache" in str(err)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        # the forked child still holds the file open; the lock went with its owner anyway
        PartStore(out, {"recipe": "r"})
    finally:
        owner.kill()
        owner.wait()
