"""Input discovery: folders, frame folders, manifests, ids, shards."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqa_pipeline.errors import AqaError
from aqa_pipeline.extract.sources import discover_sources, select_shard


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_ids_are_relative_and_do_not_collide(tmp_path):
    touch(tmp_path / "a" / "000.mp4")
    touch(tmp_path / "b" / "000.mp4")
    touch(tmp_path / "c" / "frames_x" / "0001.jpg")
    touch(tmp_path / "notes.txt")
    ids = [s.video_id for s in discover_sources(tmp_path)]
    assert ids == ["a/000", "b/000", "c/frames_x"]
    kinds = {s.video_id: s.kind for s in discover_sources(tmp_path)}
    assert kinds["c/frames_x"] == "frames"


def test_same_id_twice_is_an_error(tmp_path):
    touch(tmp_path / "x.mp4")
    touch(tmp_path / "x.avi")
    with pytest.raises(AqaError, match="two inputs map to video id 'x'"):
        discover_sources(tmp_path)


def test_manifest_with_trim_and_relative_paths(tmp_path):
    touch(tmp_path / "v" / "01.mp4")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "video_id,path,start_frame,end_frame\n01_05,v/01.mp4,10,112\nmissing,nope.mp4,,\n"
    )
    sources = {s.video_id: s for s in discover_sources(manifest)}
    assert sources["01_05"].path == tmp_path / "v" / "01.mp4"
    assert (sources["01_05"].start_frame, sources["01_05"].end_frame) == (10, 112)
    assert sources["missing"].start_frame is None  # kept: extraction records it as failed


@pytest.mark.parametrize(
    "body, message",
    [
        ("video_id,file\na,b\n", "needs the columns video_id,path"),
        ("video_id,path\na,x.mp4\na,y.mp4\n", "row 3: duplicate video_id 'a'"),
        ("video_id,path,start_frame,end_frame\na,x.mp4,20,10\n", "end_frame 10 < start_frame 20"),
        ("video_id,path,start_frame\na,x.mp4,abc\n", "start_frame 'abc' is not an integer"),
    ],
)
def test_bad_manifests_name_the_row(tmp_path, body, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text(body)
    with pytest.raises(AqaError, match=message):
        discover_sources(manifest)


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(AqaError, match="input not found"):
        discover_sources(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AqaError, match="no videos or frame folders"):
        discover_sources(tmp_path / "empty")


def test_shards_are_disjoint_and_cover(tmp_path):
    for i in range(11):
        touch(tmp_path / f"{i:02d}.mp4")
    sources = discover_sources(tmp_path)
    parts = [select_shard(sources, k, 3) for k in range(3)]
    ids = [s.video_id for p in parts for s in p]
    assert sorted(ids) == sorted(s.video_id for s in sources)
    assert len(ids) == len(set(ids))
    assert [len(p) for p in parts] == [4, 4, 3]
    assert select_shard(list(reversed(sources)), 1, 3) == parts[1]  # order-independent
