"""Peak memory of extracting a 20-minute vs a 1-minute 640x480 video (target: <= 1.2x).

Each extraction runs in a fresh process with --workers 0 (decode and backbone in one
process, so its peak RSS is the whole pipeline's) and reports ru_maxrss. Two recipes:
`i3d_jigsaws` (160 frames by linspace over the whole video, I3D random init) and the GDLT
recipe (every frame at 25 fps in 32-frame clips; a tiny Swin at half the resolution, short
side 128 -> 112x150 -> 112x112, so the 20-minute run's 937 clips stay affordable on CPU).

    python benchmarks/extract_memory.py [--minutes 1 20] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aqa_pipeline.synthetic import moving_square, write_video

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from aqa_pipeline.config import load_config, set_dotted
from aqa_pipeline.extract.recipe import Recipe
from aqa_pipeline.extract.runner import ExtractJob, run_extraction
recipe, video, out, arch, pre = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
config = load_config(recipe, kind="extract")
if pre != "-":
    config["preprocess"] = json.loads(pre)
if arch != "-":
    set_dotted(config, "backbone.name", "swin3d")
    set_dotted(config, "backbone.arch", json.loads(arch))
t0 = time.perf_counter()
s = run_extraction(ExtractJob(recipe=Recipe.model_validate(config), input=video, output=Path(out), random_init=True,
                              batch_size=4, workers=0), progress=False)
print(json.dumps({"clips": s.n_clips, "failed": s.n_failed, "seconds": time.perf_counter() - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
TINY = {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2],
        "window_size": [8, 7, 7], "patch_size": [2, 4, 4]}  # fmt: skip


def measure(recipe: str, video: Path, out: Path, arch: dict | None, pre: dict | None) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, recipe, str(video), str(out),
                          json.dumps(arch) if arch else "-", json.dumps(pre) if pre else "-"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, nargs=2, default=[1, 20])
    ap.add_argument("--keep", type=Path, default=None, help="keep/reuse the videos in this folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        videos = {}
        for minutes in args.minutes:
            path = folder / f"{minutes:g}min_640x480.mp4"
            if not path.exists():
                t0 = time.perf_counter()
                write_video(path, moving_square(int(minutes * 60 * 25), (480, 640), 3.0))
                print(f"encoded {path.name} in {time.perf_counter() - t0:.0f} s")
            videos[minutes] = path
        half = {
            "short_side": 128,
            "crop": [112, 150],
            "squash": [112, 112],
            "normalize": "imagenet",
        }
        for recipe, arch, pre in (("i3d_jigsaws", None, None), ("swin_b_gdlt", TINY, half)):
            rows = {}
            for minutes, path in videos.items():
                vid_dir = Path(tmp) / f"{recipe}_{minutes:g}"
                vid_dir.mkdir()
                (vid_dir / path.name).symlink_to(path.resolve())
                rows[minutes] = measure(
                    recipe, vid_dir, Path(tmp) / f"{recipe}_{minutes:g}.h5", arch, pre
                )
                r = rows[minutes]
                print(f"{recipe:12s} {minutes:5g} min: {r['clips']:4d} clips, {r['seconds']:7.1f} s, "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB")  # fmt: skip
            short, long = rows[args.minutes[0]], rows[args.minutes[1]]
            print(
                f"{recipe:12s} ratio {long['peak_rss_mb'] / short['peak_rss_mb']:.3f} (target <= 1.2)"
            )


if __name__ == "__main__":
    main()
