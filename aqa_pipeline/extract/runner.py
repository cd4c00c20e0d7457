"""`aqa extract`: sources -> decode workers -> batched backbone -> feature cache.

Decoding runs in DataLoader worker processes that stream clips (uint8) to the main
process, which batches clips across videos through the backbone. Every finished video
goes to the part store at once (see parts.py); the cache is assembled at the end and
moved into place atomically. A rerun skips the videos already done.

Frames are resized and cropped in the workers (`Preprocess.frame`), or, with
`preprocess_device`, shipped at native size and resized on that device in the main process
(`preprocess_clips`). `run_decode_only` runs everything up to the backbone and reports
where the time goes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from aqa_pipeline.config import config_hash
from aqa_pipeline.errors import AqaError, Interrupted
from aqa_pipeline.extract.decode import (
    DecodeStats,
    FrameCountError,
    Probe,
    check_decoder,
    iter_clips,
    probe,
    tune_allocator,
)
from aqa_pipeline.extract.engine import ClipEngine, resolve_amp, resolve_device
from aqa_pipeline.extract.parts import PartStore
from aqa_pipeline.extract.preprocess import RESIZE_IMPL, preprocess_clips
from aqa_pipeline.extract.progress import Progress
from aqa_pipeline.extract.progress import settings as progress_settings
from aqa_pipeline.extract.recipe import Recipe
from aqa_pipeline.extract.sampling import plan_clips
from aqa_pipeline.extract.sources import VideoSource, discover_sources, ids_digest, select_shard
from aqa_pipeline.features.keys import cache_key_fields
from aqa_pipeline.features.store import (
    STATUS_FAILED,
    FeatureSet,
    VideoRecord,
    check_key,
    read_features,
    write_features,
)
from aqa_pipeline.provenance import environment

log = logging.getLogger(__name__)
DTYPES = ("float32", "float16")
# helper threads per decode worker converting and resizing frames beside its decoder (2 were
# no faster than 1 on 2 cores: benchmarks/extract_decode.py; more workers scale instead)
CONVERT_THREADS = 1


@dataclass
class ExtractJob:
    """Everything one extraction run needs; picklable (shipped to Slurm tasks as is)."""

    recipe: Recipe
    input: str
    output: Path
    weights: str | None = None
    random_init: bool = False
    device: str = "cpu"
    batch_size: int = 8
    workers: int = 2
    shard: tuple[int, int] | None = None
    dtype: str = "float32"
    amp: str = "auto"
    compile: bool = False
    allow_unsafe_pickle: bool = False
    decoder: str = "pyav"  # decode.DECODERS
    preprocess_device: str | None = None  # None: in the decode workers; else a torch device
    seek: bool = True  # skip frames between sparse clips by seeking, where that is exact


@dataclass
class ExtractSummary:
    output: Path
    n_videos: int = 0
    n_extracted: int = 0
    n_skipped: int = 0
    n_failed: int = 0
    n_clips: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["output"] = str(self.output)
        return out


def shard_path(output: Path, k: int, n: int) -> Path:
    """cache.h5 -> cache.shard-0-of-2.h5"""
    output = Path(output)
    return output.with_name(f"{output.stem}.shard-{k}-of-{n}{output.suffix}")


# ---------------------------------------------------------------------------- decoding


class ClipStream(IterableDataset):
    """Yields, per video: ("start", pos, info), ("clip", pos, k, (L, H, W, 3) uint8 tensor)...,
    ("done", pos, error or "", DecodeStats as a dict). Worker w of W takes videos w, w + W, ...

    native: clips at the source's size (preprocessed later, on a device), else resized and
    cropped here."""

    def __init__(
        self,
        sources: list[VideoSource],
        recipe: Recipe,
        decoder: str = "pyav",
        native: bool = False,
        seek: bool = True,
    ):
        self.sources = sources
        self.recipe = recipe
        self.decoder = decoder
        self.native = native
        self.seek = seek

    def __iter__(self) -> Iterator[tuple]:
        tune_allocator()
        worker = get_worker_info()
        wid, nw = (worker.id, worker.num_workers) if worker else (0, 1)
        for pos in range(wid, len(self.sources), nw):
            yield from self._video(pos, self.sources[pos])

    def _video(self, pos: int, source: VideoSource) -> Iterator[tuple]:
        stats = DecodeStats()
        begin = time.perf_counter()
        waited = 0.0  # time spent handing items to the consumer
        error = ""
        try:
            t0 = time.perf_counter()
            info: Probe = probe(source)
            stats.probe_s += time.perf_counter() - t0
            if not self.seek:
                info = replace(info, seekable=False)
            try:
                for item in self._clips(pos, source, info, stats):
                    t0 = time.perf_counter()
                    yield item
                    waited += time.perf_counter() - t0
            except FrameCountError as exc:
                # the container promised more frames than decode: plan again on the real
                # count (a new "start" record tells the main process to drop the old clips)
                real = exc.decoded - info.start
                if real <= 0 or real >= info.num_frames:
                    raise
                for item in self._clips(pos, source, replace(info, num_frames=real), stats):
                    t0 = time.perf_counter()
                    yield item
                    waited += time.perf_counter() - t0
        except Exception as exc:  # any failure of one video is recorded, never fatal
            error = f"{type(exc).__name__}: {exc}"
        stats.busy_s = time.perf_counter() - begin - waited
        yield ("done", pos, error, stats.as_dict())

    def _clips(
        self, pos: int, source: VideoSource, info: Probe, stats: DecodeStats
    ) -> Iterator[tuple]:
        sampling = self.recipe.sampling
        fps = info.fps
        if source.kind == "frames":
            fps = float(sampling.source_fps or sampling.target_fps or 0)
        plan = plan_clips(sampling, info.num_frames, fps)
        frames = np.stack([plan.min(axis=1), plan.max(axis=1) + 1], axis=1) + info.start
        yield ("start", pos, {"num_clips": len(plan), "frames": frames,
                              "num_frames": info.num_frames, "fps": fps})  # fmt: skip
        transform = None if self.native else self.recipe.preprocess.frame
        # in a worker process torch runs one thread: conversion and resizing can overlap
        # decoding there, in CONVERT_THREADS helper threads
        overlap = CONVERT_THREADS if get_worker_info() is not None else 0
        for k, clip in iter_clips(source, info, plan, transform, self.decoder, stats, overlap):
            yield ("clip", pos, k, torch.from_numpy(clip))


@dataclass
class _Pending:
    source: VideoSource
    info: dict[str, Any] | None = None
    feats: np.ndarray | None = None
    n_ready: int = 0
    generation: int = 0  # bumped when the worker re-plans the video's clips
    finished: bool = False
    error: str = ""


# ---------------------------------------------------------------------------- the job


def build_backbone(job: ExtractJob):
    from aqa_pipeline.extract.backbones import build

    cfg = job.recipe.backbone
    return build(
        cfg.name,
        weights=job.weights,
        random_init=job.random_init,
        seed=cfg.seed,
        allow_unsafe_pickle=job.allow_unsafe_pickle,
        **cfg.arch,
    )


def key_fields_for(job: ExtractJob, backbone, normalize: str, amp: str) -> dict[str, Any]:
    """The fields that change the numbers; their hash is the cache key. `normalize` is the
    preset actually applied (the recipe's, or the one the weights expect)."""
    info = backbone.weights_info
    weights = {"sha256": info.get("sha256"), "random_init": bool(info.get("random_init"))}
    if weights["random_init"]:
        weights["seed"] = info.get("seed")
    if info.get("config_sha256"):  # snapshot backbones (hf.py): the model's config.json
        weights["config_sha256"] = info["config_sha256"]
    recipe = job.recipe
    return cache_key_fields(
        backbone=recipe.backbone.name,
        arch=recipe.backbone.arch,
        feature_dim=backbone.feature_dim,
        weights=weights,
        sampling=recipe.sampling.key(),
        preprocess={**recipe.preprocess.key(), "normalize": normalize},
        dtype=job.dtype,
        compute_precision="float32" if amp == "none" else amp,
    )


def resolve_normalize(job: ExtractJob, backbone) -> tuple[str, str | None]:
    """The normalisation preset to apply and, when the recipe overrides the one the weights
    expect, a warning saying so (logged once and kept in the cache's provenance)."""
    from aqa_pipeline.extract.backbones.weights import resolve_normalisation

    preset, warning = resolve_normalisation(backbone, job.recipe.preprocess.normalize)
    if warning:
        log.warning(warning)
    return preset, warning


def run_extraction(job: ExtractJob, progress: bool | None = None) -> ExtractSummary:
    """Extract every source of `job.input` (or its shard) into `job.output`, resumably."""
    start_time = time.perf_counter()
    output = Path(job.output)
    if job.dtype not in DTYPES:
        raise AqaError(f"--dtype must be one of {DTYPES}, got {job.dtype!r}")
    recipe = job.recipe
    check_decoder(job.decoder)
    progress_settings()
    all_sources = discover_sources(job.input)
    sources = select_shard(all_sources, *job.shard) if job.shard else all_sources
    device = resolve_device(job.device)
    pre_device = (
        resolve_device(job.preprocess_device, "--preprocess-device")
        if job.preprocess_device
        else None
    )
    amp = resolve_amp(job.amp, device)
    backbone = build_backbone(job)
    min_frames = getattr(getattr(backbone, "spec", None), "min_frames", 1) or 1
    clip_len = recipe.sampling.clip_len
    if clip_len < min_frames:
        raise AqaError(f"sampling.clip_len {clip_len} < {min_frames} frames the backbone needs")
    size = recipe.preprocess.squash or recipe.preprocess.crop  # (H, W) of every clip, if fixed
    if size is not None:
        backbone.check_input(clip_len, tuple(size))  # before any decoding
    normalize, override = resolve_normalize(job, backbone)
    key_fields = key_fields_for(job, backbone, normalize, amp)

    existing: FeatureSet | None = None
    if output.exists():
        existing = read_features(output)
        check_key(existing.key_fields, key_fields, f"{output}")
    parts = PartStore(output, key_fields)
    try:
        done = {r.video_id: r for r in existing.records()} if existing else {}
        done.update(parts.records())
        todo = [s for s in sources if not (s.video_id in done and done[s.video_id].ok)]
        summary = ExtractSummary(output=output, n_videos=len(sources))
        summary.n_skipped = len(sources) - len(todo)
        if todo:
            engine = ClipEngine(
                backbone,
                device,
                normalize,
                amp=amp,
                channels_last=recipe.backbone.name.startswith("i3d"),
                compile=job.compile,
                preprocess=recipe.preprocess if pre_device is not None else None,
                preprocess_device=pre_device,
            )
            _extract(todo, recipe, engine, job, parts, summary, progress)
            done.update(parts.records())
        provenance = _provenance(
            job, existing, key_fields, backbone, all_sources, sources, amp, override
        )
        order = list(existing.video_ids) if existing else []
        known = set(order)
        order += [s.video_id for s in sources if s.video_id not in known]
        # records of inputs gone from the whole input set: a failure is dropped (nothing is
        # left to retry), finished features are kept
        in_input = {s.video_id for s in all_sources}
        order += sorted(v for v in done if v not in known and v not in in_input)
        records = []
        for v in (v for v in order if v in done):
            if v not in in_input and not done[v].ok:
                log.warning("video %s: no longer in the input set; its failure record is dropped",
                            v)  # fmt: skip
                continue
            if v not in in_input:
                log.info("video %s: no longer in the input set; its features are kept", v)
            records.append(done[v])
        fs = FeatureSet.from_records(
            records, backbone.feature_dim, job.dtype, key_fields, provenance
        )
        write_features(output, fs)
    except BaseException as exc:
        parts.close(remove=False)
        if isinstance(exc, KeyboardInterrupt):
            n_new = len(list(parts.dir.glob("v-*.npz")))
            where = f"{n_new} in {parts.dir}" + (f", earlier ones in {output}" if existing else "")
            raise Interrupted(
                f"interrupted: finished videos are kept ({where}); a rerun of the same command "
                "resumes, skipping them"
            ) from None
        raise
    parts.close(remove=True)
    in_job = {s.video_id for s in sources}
    summary.failed = [f for f in fs.failed() if f["video_id"] in in_job]
    summary.n_failed = len(summary.failed)
    summary.n_clips = fs.n_clips
    summary.seconds = time.perf_counter() - start_time
    return summary


def _provenance(
    job, existing, key_fields, backbone, all_sources, sources, amp, override
) -> dict[str, Any]:
    run = {
        **environment(),
        "input": str(job.input),
        "n_sources": len(sources),
        "device": job.device,
        "amp": amp,
        "batch_size": job.batch_size,
        "workers": job.workers,
        "weights_path": backbone.weights_info.get("path"),
        "weights_layout": backbone.weights_info.get("layout"),
        **decode_provenance(job),
    }
    runs = list(existing.provenance.get("runs", [])) if existing else []
    runs.append(run)
    shard = None
    if job.shard:
        shard = {
            "k": job.shard[0],
            "n": job.shard[1],
            "all_ids_sha256": ids_digest([s.video_id for s in all_sources]),
            "n_all": len(all_sources),
            "ids": [s.video_id for s in sources],
        }
    return {
        **key_fields,
        "cache_key": config_hash(key_fields),
        "recipe_name": job.recipe.name,
        "recipe": job.recipe.plain(),
        "normalize_override": override,
        "weights_file": backbone.weights_info,
        "shard": shard,
        "runs": runs,
    }


def decode_provenance(job: ExtractJob) -> dict[str, Any]:
    """How frames were read and resized in this run (provenance, not the cache key: the
    implementations agree within 1 grey level, see preprocess.py)."""
    where = "device" if job.preprocess_device else "workers"
    return {
        "decoder": job.decoder,
        "preprocess_device": job.preprocess_device or "workers",
        "resize_impl": RESIZE_IMPL[where],
        "seek": job.seek,
    }


def _loader(todo: list[VideoSource], job: ExtractJob, pin: bool) -> DataLoader:
    return DataLoader(
        ClipStream(
            todo, job.recipe, job.decoder, native=job.preprocess_device is not None, seek=job.seek
        ),
        batch_size=None,
        num_workers=job.workers,
        pin_memory=pin,
        prefetch_factor=4 if job.workers > 0 else None,
    )


def _extract(todo, recipe, engine, job, parts, summary, progress) -> None:
    loader = _loader(todo, job, pin=engine.device.type == "cuda")
    pending = {pos: _Pending(src) for pos, src in enumerate(todo)}
    batch: list[torch.Tensor] = []
    refs: list[tuple[int, int, int]] = []
    meter = Progress(len(todo), progress)

    def finish(pos: int) -> None:
        p = pending[pos]
        if not p.finished or (not p.error and p.info and p.n_ready < p.info["num_clips"]):
            return
        rec = VideoRecord(video_id=p.source.video_id, source=p.source.describe())
        if p.error or p.info is None:
            rec.status, rec.error = STATUS_FAILED, p.error or "no clips"
            log.info("%s failed: %s", p.source.video_id, rec.error)
        else:
            rec.clip_features, rec.clip_frames = p.feats, np.asarray(p.info["frames"])
            rec.num_frames, rec.fps = p.info["num_frames"], p.info["fps"]
            summary.n_extracted += 1
        parts.put(rec)
        del pending[pos]
        meter.video(failed=rec.status == STATUS_FAILED)

    def flush() -> None:
        if not batch:
            return
        feats = engine.features(torch.stack(batch))
        meter.add_clips(len(batch))
        touched = set()
        for (pos, gen, k), f in zip(refs, feats, strict=True):
            p = pending.get(pos)
            if p is None or p.error or gen != p.generation:
                continue
            if p.feats is None:
                p.feats = np.zeros((p.info["num_clips"], feats.shape[1]), dtype=np.float32)
            p.feats[k] = f
            p.n_ready += 1
            touched.add(pos)
        batch.clear()
        refs.clear()
        for pos in touched:
            finish(pos)

    try:
        for item in loader:
            kind, pos = item[0], item[1]
            if kind == "start":
                p = pending[pos]
                if p.info is not None:
                    p.generation, p.feats, p.n_ready = p.generation + 1, None, 0
                p.info = item[2]
            elif kind == "clip":
                if batch and batch[0].shape != item[3].shape:
                    flush()  # native-size clips of another frame size: a batch of their own
                batch.append(item[3])
                refs.append((pos, pending[pos].generation, item[2]))
                if len(batch) >= job.batch_size:
                    flush()
            else:
                pending[pos].finished = True
                pending[pos].error = item[2]
                finish(pos)
        flush()
    finally:
        meter.close()


# ---------------------------------------------------------------------------- decode only


@dataclass
class DecodeReport:
    """What `aqa extract --decode-only` measured: everything up to the backbone."""

    n_videos: int = 0
    n_failed: int = 0
    n_clips: int = 0
    clip_len: int = 0
    seconds: float = 0.0  # wall time from the first video to the last clip
    workers: int = 0
    decoder: str = "pyav"
    preprocess_device: str = "workers"
    resize_impl: str = ""
    seek: bool = True
    device_preprocess_s: float = 0.0  # in this process, on the device (native-size clips)
    stats: DecodeStats = field(default_factory=DecodeStats)  # summed over the workers
    failed: list[dict[str, str]] = field(default_factory=list)

    @property
    def sampled_frames(self) -> int:
        """Frames delivered in clips (clips x clip_len; a frame two clips share counts twice)."""
        return self.n_clips * self.clip_len

    @property
    def clips_per_s(self) -> float:
        return self.n_clips / self.seconds if self.seconds > 0 else 0.0

    @property
    def frames_per_s(self) -> float:
        return self.sampled_frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def per_worker_clips_per_s(self) -> float:
        """Clips one worker delivers per second of its own time (waits excluded)."""
        return self.n_clips / self.stats.busy_s if self.stats.busy_s > 0 else 0.0

    def workers_for(self, clips_per_s: float) -> int | None:
        """Decode workers that feed `clips_per_s` (one core each), None if nothing was measured."""
        rate = self.per_worker_clips_per_s
        return math.ceil(clips_per_s / rate - 1e-9) if rate > 0 else None

    def to_dict(self, feeds: tuple[float, ...] = ()) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "stats"}
        out["stages"] = self.stats.as_dict()
        out.update(
            sampled_frames=self.sampled_frames,
            clips_per_s=self.clips_per_s,
            sampled_frames_per_s=self.frames_per_s,
            per_worker_clips_per_s=self.per_worker_clips_per_s,
            workers_for={str(f): self.workers_for(f) for f in feeds},
        )
        return out


def run_decode_only(job: ExtractJob, progress: bool | None = None) -> DecodeReport:
    """Sources -> probe -> sampler -> decode -> preprocess of `job` (its shard), no backbone,
    no weights and no cache: the clips are counted and dropped. With `preprocess_device` the
    device step runs here, as in an extraction."""
    check_decoder(job.decoder)
    progress_settings()
    sources = discover_sources(job.input)
    if job.shard:
        sources = select_shard(sources, *job.shard)
    pre_device = (
        resolve_device(job.preprocess_device, "--preprocess-device")
        if job.preprocess_device
        else None
    )
    prov = decode_provenance(job)
    report = DecodeReport(n_videos=len(sources), clip_len=job.recipe.sampling.clip_len,
                          workers=job.workers, decoder=job.decoder,
                          preprocess_device=prov["preprocess_device"],
                          resize_impl=prov["resize_impl"], seek=job.seek)  # fmt: skip
    meter = Progress(len(sources), progress, label="aqa extract --decode-only")
    counted: dict[int, int] = {}
    t_start = time.perf_counter()
    try:
        for item in _loader(sources, job, pin=pre_device is not None and pre_device.type == "cuda"):
            kind, pos = item[0], item[1]
            if kind == "start":
                counted[pos] = 0  # a re-plan drops the clips counted so far
            elif kind == "clip":
                counted[pos] += 1
                meter.add_clips(1)
                if pre_device is not None:
                    t0 = time.perf_counter()
                    preprocess_clips(item[3].unsqueeze(0).to(pre_device), job.recipe.preprocess)
                    if pre_device.type == "cuda":
                        torch.cuda.synchronize(pre_device)
                    report.device_preprocess_s += time.perf_counter() - t0
            else:
                report.stats.add(DecodeStats(**item[3]))
                if item[2]:
                    report.failed.append({"video_id": sources[pos].video_id, "error": item[2]})
                    counted.pop(pos, None)
                meter.video(failed=bool(item[2]))
    finally:
        meter.close()
    report.seconds = time.perf_counter() - t_start
    report.n_clips = sum(counted.values())
    report.n_failed = len(report.failed)
    return report
