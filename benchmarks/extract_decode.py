"""Decode + preprocess throughput vs raw decoding of the same files (issue target: >= 0.5
with 1 worker, for the swin_b_gdlt and i3d recipes).

For each recipe it runs `aqa extract --decode-only` (sources -> probe -> sampler -> decode ->
preprocess, 1 decode worker, no backbone) and, on the same files, raw decoding (PyAV, every
frame, no conversion, FFmpeg's automatic threads), before and after, and prints

    ratio  = sampled frames/s / raw decode frames/s   (the issue's measure; dense recipes)
    time   = raw decode seconds / pipeline seconds    (the same when every frame is sampled;
                                                       the meaningful one for sparse recipes)
    CPU    = the same two ratios in CPU seconds (the decode worker and the main process)
             instead of seconds: what sets the ratios when other jobs share the cores

and, for reference, the previous path (PIL conversion and resize, per-frame swscale
context) on the same frames in this process. Sparse recipes also run with --no-seek, to show
what seeking to keyframes gains. Inputs: ../shared/data/videos when present
(real h264) and synthetic 640x480 mpeg4 and h264 videos (`--frames` frames at 25 fps).

    python benchmarks/extract_decode.py [--recipes swin_b_gdlt i3d_jigsaws] [--frames 3000]
        [--decoder pyav torchcodec] [--keep DIR] [--no-shared] [--no-synthetic]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from aqa_pipeline.extract.decode import probe
from aqa_pipeline.extract.recipe import load_recipe
from aqa_pipeline.extract.runner import ExtractJob, run_decode_only
from aqa_pipeline.extract.sampling import plan_clips
from aqa_pipeline.extract.sources import discover_sources
from aqa_pipeline.provenance import describe_cpu
from aqa_pipeline.synthetic import moving_square, write_video

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def raw_decode(paths: list[Path]) -> tuple[int, float, float]:
    """(frames, seconds, CPU seconds) decoding every frame of `paths`, no conversion."""
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                n += 1
    return n, time.perf_counter() - t0, time.process_time() - c0


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the decode workers)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load_average() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def previous_path(folder: Path, recipe) -> tuple[int, float]:
    """(sampled frames, seconds) of the previous implementation on the same frames:
    `frame.to_image()` (a new swscale context per frame) and the PIL resizes, in order."""
    n, t0 = 0, time.perf_counter()
    for source in discover_sources(folder):
        info = probe(source)
        try:
            plan = plan_clips(recipe.sampling, info.num_frames, info.fps)
        except ValueError:
            continue
        wanted = set(np.unique(plan).tolist())
        last = max(wanted)
        with av.open(str(source.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if i > last:
                    break
                if i in wanted:
                    recipe.preprocess(frame.to_image())
        n += plan.size
    return n, time.perf_counter() - t0


def synthetic(folder: Path, frames: int) -> dict[str, Path]:
    out = {}
    for codec, name in (("mpeg4", "mpeg4.avi"), ("libx264", "h264.mp4")):
        sub = folder / f"synthetic_{codec}_{frames}"
        path = sub / name
        if not path.exists():
            t0 = time.perf_counter()
            write_video(path, moving_square(frames, (480, 640), 3.0), 25, codec)
            print(f"encoded {path} ({frames} frames) in {time.perf_counter() - t0:.0f} s")
        out[f"synthetic {codec} 640x480 x{frames}"] = sub
    return out


def measure(
    name: str, folder: Path, recipe_name: str, decoder: str, previous: bool, seek: bool
) -> None:
    recipe = load_recipe(recipe_name)
    paths = [s.path for s in discover_sources(folder)]
    load = load_average()
    raw_n, raw_before, cpu_before = raw_decode(paths)
    job = ExtractJob(recipe=recipe, input=str(folder), output=Path("unused.h5"), workers=1,
                     decoder=decoder, seek=seek)  # fmt: skip
    c0 = cpu_seconds()
    report = run_decode_only(job, progress=False)
    pipeline_cpu = cpu_seconds() - c0
    _, raw_after, cpu_after = raw_decode(paths)
    raw_s = (raw_before + raw_after) / 2
    raw_fps = raw_n / raw_s
    st = report.stats
    print(f"\n{name} | {recipe_name} | decoder {decoder} | {'seek' if seek else 'no seek'} | "
          f"1 worker | load average {load} -> {load_average()}")  # fmt: skip
    print(f"  raw decode: {raw_n} frames in {raw_s:.2f} s = {raw_fps:.0f} frames/s "
          f"(before {raw_before:.2f} s, after {raw_after:.2f} s)")  # fmt: skip
    raw_cpu = (cpu_before + cpu_after) / 2
    frames = max(report.sampled_frames, 1)
    print(f"  CPU (all processes): raw decode {raw_cpu:.2f} s, {raw_cpu / raw_n * 1e3:.3f} ms "
          f"per frame; decode-only {pipeline_cpu:.2f} s, {pipeline_cpu / frames * 1e3:.3f} ms "
          f"per sampled frame; CPU ratio per frame {raw_cpu / raw_n / (pipeline_cpu / frames):.3f}"
          f", per run {raw_cpu / pipeline_cpu:.3f}")  # fmt: skip
    print(f"  decode-only: {report.n_clips} clips, {report.sampled_frames} sampled frames in "
          f"{report.seconds:.2f} s = {report.clips_per_s:.2f} clips/s, "
          f"{report.frames_per_s:.0f} sampled frames/s; {st.frames_decoded} frames decoded, "
          f"{st.seeks} seeks, {report.n_failed} failed")  # fmt: skip
    print(f"  stages (worker s): probe {st.probe_s:.2f}, decode {st.decode_s:.2f}, "
          f"YUV->RGB {st.convert_s:.2f}, resize/crop {st.preprocess_s:.2f}, "
          f"whole {st.busy_s:.2f}")  # fmt: skip
    print(f"  ratio sampled frames/s / raw frames/s: {report.frames_per_s / raw_fps:.3f}   "
          f"time ratio raw s / pipeline s: {raw_s / report.seconds:.3f}   (target >= 0.5)")  # fmt: skip
    if previous:
        n_prev, prev_s = previous_path(folder, recipe)
        print(f"  previous path (PIL, in process): {n_prev / prev_s:.0f} sampled frames/s, "
              f"ratio {n_prev / prev_s / raw_fps:.3f}, time ratio {raw_s / prev_s:.3f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--recipes", nargs="+", default=["swin_b_gdlt", "i3d_jigsaws"])
    ap.add_argument("--decoder", nargs="+", default=["pyav"])
    ap.add_argument("--frames", type=int, default=3000, help="frames per synthetic video")
    ap.add_argument("--keep", type=Path, default=None, help="keep/reuse synthetic videos here")
    ap.add_argument("--no-shared", action="store_true")
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--no-previous", action="store_true", help="skip the previous-path runs")
    args = ap.parse_args()
    print(f"CPU {describe_cpu()}; load average {load_average()}; PyAV {av.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        inputs: dict[str, Path] = {}
        if not args.no_shared and SHARED_VIDEOS.is_dir():
            inputs["shared videos (h264: 640x480, 640x272, 176x144)"] = SHARED_VIDEOS
        if not args.no_synthetic:
            inputs.update(synthetic(args.keep or Path(tmp), args.frames))
        for name, folder in inputs.items():
            for recipe in args.recipes:
                sparse = load_recipe(recipe).sampling.method != "consecutive"
                for decoder in args.decoder:
                    for seek in (True, False) if sparse else (True,):
                        previous = seek and not args.no_previous and decoder == args.decoder[0]
                        measure(name, folder, recipe, decoder, previous, seek)


if __name__ == "__main__":
    main()
