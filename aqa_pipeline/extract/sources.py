"""Finding the inputs of an extraction: a scanned folder or a manifest CSV.

A source is a video file (anything FFmpeg reads) or a frame folder (one folder per
sample, images in name order). Video ids are paths relative to the input root without
the extension (`a/000.mp4` -> `a/000`), so ids are stable and never collide across
sub-folders. `ids_digest` (the id set's hash a shard records) lives in
`aqa_pipeline.features.ids`, the cache's side.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import click

from aqa_pipeline.errors import AqaError
from aqa_pipeline.features.ids import ids_digest as ids_digest  # re-exported: runner.py

VIDEO_EXTENSIONS = {
    ".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".flv", ".wmv",
    ".3gp", ".ts", ".mts", ".ogv", ".vob",
}  # fmt: skip
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp"}


@dataclass(frozen=True)
class VideoSource:
    """One sample to extract. Frames are numbered from 0 in the file; the trim
    `start_frame..end_frame` (both inclusive, None = open) selects the part to sample."""

    video_id: str
    path: Path
    kind: str  # "video" | "frames"
    start_frame: int | None = None
    end_frame: int | None = None

    def describe(self) -> str:
        trim = ""
        if self.start_frame is not None or self.end_frame is not None:
            trim = f"[{self.start_frame or 0}:{'' if self.end_frame is None else self.end_frame}]"
        return f"{self.path}{trim}"


def list_frame_files(folder: Path) -> list[Path]:
    """Images of a frame folder in name order."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def _kind_of(path: Path) -> str:
    return "frames" if path.is_dir() else "video"


def discover_sources(input_path: str | Path) -> list[VideoSource]:
    """Sources from a directory (scanned recursively) or a manifest CSV, sorted by id."""
    root = Path(input_path)
    if not root.exists():
        raise AqaError(f"input not found: {root}")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise AqaError(f"{root}: --input must be a directory or a manifest .csv file")
        sources = read_manifest(root)
    else:
        sources = scan_directory(root)
    if not sources:
        raise AqaError(f"{root}: no videos or frame folders found")
    return sorted(sources, key=lambda s: s.video_id)


def scan_directory(root: Path) -> list[VideoSource]:
    """Video files and frame folders below `root`; a folder holding images is one sample."""
    found: dict[str, VideoSource] = {}

    def add(source: VideoSource) -> None:
        if source.video_id in found:
            other = found[source.video_id].path
            raise AqaError(
                f"two inputs map to video id {source.video_id!r}: {other} and {source.path}; "
                "rename one or use a manifest CSV"
            )
        found[source.video_id] = source

    def visit(folder: Path) -> None:
        entries = sorted(folder.iterdir())
        if any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in entries):
            if folder == root:
                add(VideoSource(root.name, root, "frames"))
            else:
                add(VideoSource(folder.relative_to(root).as_posix(), folder, "frames"))
            return
        for p in entries:
            if p.is_dir():
                visit(p)
            elif p.suffix.lower() in VIDEO_EXTENSIONS:
                add(VideoSource(p.relative_to(root).with_suffix("").as_posix(), p, "video"))

    visit(root)
    return list(found.values())


def _int_or_none(value: str | None, row: int, column: str, manifest: Path) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        out = int(float(value))
    except ValueError:
        raise AqaError(f"{manifest}, row {row}: {column} {value!r} is not an integer") from None
    if out < 0:
        raise AqaError(f"{manifest}, row {row}: {column} must be >= 0, got {out}")
    return out


def read_manifest(manifest: Path) -> list[VideoSource]:
    """Rows `video_id,path[,start_frame,end_frame]`; relative paths are resolved against the
    manifest's folder. A path that does not exist is kept: extraction records it as failed.
    A UTF-8 byte order mark (Excel's "CSV UTF-8") is accepted."""
    with manifest.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"video_id", "path"} <= set(reader.fieldnames):
            raise AqaError(f"{manifest}: a manifest needs the columns video_id,path")
        sources: dict[str, VideoSource] = {}
        for row_no, row in enumerate(reader, start=2):
            vid = (row.get("video_id") or "").strip()
            raw = (row.get("path") or "").strip()
            if not vid or not raw:
                raise AqaError(f"{manifest}, row {row_no}: empty video_id or path")
            if vid in sources:
                raise AqaError(f"{manifest}, row {row_no}: duplicate video_id {vid!r}")
            path = Path(raw) if Path(raw).is_absolute() else manifest.parent / raw
            start = _int_or_none(row.get("start_frame"), row_no, "start_frame", manifest)
            end = _int_or_none(row.get("end_frame"), row_no, "end_frame", manifest)
            if start is not None and end is not None and end < start:
                raise AqaError(f"{manifest}, row {row_no}: end_frame {end} < start_frame {start}")
            sources[vid] = VideoSource(vid, path, _kind_of(path), start, end)
    return list(sources.values())


class ShardError(click.BadParameter):
    """A bad `--shard` value: a usage error (exit 2) whose message names the option."""

    def format_message(self) -> str:
        return self.message


def _shard_error(text: str) -> ShardError:
    return ShardError(f"--shard: expected K/N with 0 <= K < N (e.g. 0/4), got {text!r}")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'K/N' -> (k, n) with 0 <= k < n (None stays None: no sharding). The one check of a
    shard, used by `aqa extract --shard` and by `select_shard`."""
    if text is None:
        return None
    try:
        k, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise _shard_error(str(text)) from None
    if not (n >= 1 and 0 <= k < n):
        raise _shard_error(str(text))
    return k, n


def select_shard(sources: list[VideoSource], k: int, n: int) -> list[VideoSource]:
    """The k-th of n disjoint parts (0 <= k < n): every n-th source in id order."""
    k, n = parse_shard(f"{k}/{n}")
    ordered = sorted(sources, key=lambda s: s.video_id)
    return ordered[k::n]
