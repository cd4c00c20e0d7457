"""Throughput of `aqa extract` vs the backbone alone (issue target: ratio >= 0.9).

Runs the real extraction (decode workers, sampling, preprocessing, batching, HDF5 cache) with
I3D (seeded random init) at 224x224 over real video, and compares its clips/s with
`forward_features` on preloaded tensors of the same shape and batch size.

    python benchmarks/extract_throughput.py [--videos DIR] [--copies 4] [--batch-size 10] [--workers 1]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

from aqa_pipeline.extract.backbones import build
from aqa_pipeline.extract.recipe import load_recipe
from aqa_pipeline.extract.runner import ExtractJob, run_extraction
from aqa_pipeline.synthetic import moving_square, write_video

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def backbone_only(batch_size: int, n_batches: int) -> float:
    """clips/s of forward_features on preloaded (B, 3, 16, 224, 224) tensors."""
    model = build("i3d", random_init=True).eval()
    x = torch.randn(batch_size, 3, 16, 224, 224)
    with torch.inference_mode():
        model.forward_features(x)  # warm-up
        t0 = time.perf_counter()
        for _ in range(n_batches):
            model.forward_features(x)
    return n_batches * batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--videos", type=Path, default=SHARED_VIDEOS)
    ap.add_argument("--copies", type=int, default=4, help="each video listed this many times")
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--recipe", default="i3d_musdl")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = sorted(args.videos.glob("*.mp4")) if args.videos.is_dir() else []
        if not videos:  # no shared data: a 640x480 synthetic clip
            videos = [write_video(tmp / "synthetic.mp4", moving_square(120, (480, 640)))]
        manifest = tmp / "manifest.csv"
        with manifest.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["video_id", "path"])
            for c in range(args.copies):
                for v in videos:
                    w.writerow([f"{v.stem}_{c}", str(v)])
        recipe = load_recipe(args.recipe)
        n_batches = 3
        before = backbone_only(args.batch_size, n_batches)  # measured on both sides of the
        # extraction so a machine whose load changes does not favour either number
        job = ExtractJob(recipe=recipe, input=str(manifest), output=tmp / "c.h5", random_init=True,
                         batch_size=args.batch_size, workers=args.workers)  # fmt: skip
        t0 = time.perf_counter()
        summary = run_extraction(job, progress=False)
        seconds = time.perf_counter() - t0
        extract_rate = summary.n_clips / seconds
        after = backbone_only(args.batch_size, n_batches)
        base_rate = (before + after) / 2
    print(f"videos {summary.n_videos} ({', '.join(v.name for v in videos)} x{args.copies}), "
          f"clips {summary.n_clips}, recipe {args.recipe}, batch {args.batch_size}, "
          f"workers {args.workers}, torch threads {torch.get_num_threads()}")  # fmt: skip
    print(
        f"aqa extract (end to end, incl. model build and cache write): {extract_rate:.3f} clips/s"
    )
    print(f"forward_features on preloaded tensors:                       {base_rate:.3f} clips/s "
          f"(before {before:.3f}, after {after:.3f})")  # fmt: skip
    print(f"ratio: {extract_rate / base_rate:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
