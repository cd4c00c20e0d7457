"""Clips/s of our extraction path vs transformers' own forward, same model, same clips, one run.

For each model (VideoMAE, V-JEPA 2) a base-size config with seeded random weights is built
from a config (nothing is downloaded) and saved with save_pretrained into a temporary
snapshot folder. Then, in alternating rounds on the same uint8 clips:

    ours    `build(name, weights=folder)` + `ClipEngine.features`: what `aqa extract` runs per
            batch (uint8 -> normalised float, the transformers model, pooling, copy to numpy)
    theirs  `VideoMAEModel / VJEPA2Model.from_pretrained(folder)` on the clips already
            normalised (B, T, 3, H, W), last_hidden_state.mean(1), under inference_mode

and prints the median clips/s of each, ratio = ours / theirs (issue target >= 0.9), the median
of the per-round ratios (each round times both sides back to back, in alternating order, so it
is the figure least moved by other load on the machine) and whether the features are equal. `--end-to-end` also times the whole `aqa extract` (decode workers,
sampler, preprocessing, cache) on synthetic frame folders, which shares the CPU with decoding.

    python benchmarks/bench_hf_backbone.py [--models videomae vjepa2] [--batch 2] [--rounds 5]
        [--threads N] [--end-to-end]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aqa_pipeline.provenance import describe_cpu

# Base-size configs: VideoMAE-B as published (16 x 224 x 224, ViT-B); V-JEPA 2's encoder at
# ViT-B width/depth on 16 frames of 224 (its own ViT-L at 64 x 256 is ~16x the work per clip).
CONFIGS = {
    "videomae": ("VideoMAEConfig", "VideoMAEModel", {}),
    "vjepa2": (
        "VJEPA2Config",
        "VJEPA2Model",
        {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
         "crop_size": 224, "frames_per_clip": 16, "pred_num_hidden_layers": 1},
    ),
}  # fmt: skip


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def make_snapshot(name: str, folder: Path) -> tuple[int, int]:
    """Save a seeded random base-size model and its preprocessor config; (frames, size)."""
    import transformers

    config_cls, model_cls, overrides = CONFIGS[name]
    config = getattr(transformers, config_cls)(**overrides)
    torch.manual_seed(0)
    transformers.utils.logging.disable_progress_bar()
    getattr(transformers, model_cls)(config).save_pretrained(folder)
    if name == "videomae":
        transformers.VideoMAEImageProcessor(
            image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
        ).save_pretrained(folder)
        return config.num_frames, config.image_size
    transformers.VJEPA2VideoProcessor(crop_size=config.crop_size).save_pretrained(folder)
    return config.frames_per_clip, config.crop_size


def timed(fn, n_clips: int) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return n_clips / (time.perf_counter() - t0), out


def bench_model(name: str, batch: int, rounds: int, end_to_end: bool) -> dict:
    import transformers

    from aqa_pipeline.extract.backbones import build
    from aqa_pipeline.extract.engine import ClipEngine
    from aqa_pipeline.extract.preprocess import normalize_clips

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / name
        frames, size = make_snapshot(name, folder)
        ours_model = build(name, weights=folder)
        engine = ClipEngine(ours_model, torch.device("cpu"), ours_model.weights_info["normalisation"])  # fmt: skip
        theirs_model = getattr(transformers, CONFIGS[name][1]).from_pretrained(folder).eval()
        gen = torch.Generator().manual_seed(1)
        clips = torch.randint(0, 256, (batch, frames, size, size, 3), dtype=torch.uint8, generator=gen)  # fmt: skip
        x = normalize_clips(clips, engine.normalize).transpose(1, 2)  # (B, T, 3, H, W)

        def theirs():
            with torch.inference_mode():
                if name == "videomae":
                    return theirs_model(pixel_values=x).last_hidden_state.mean(1)
                out = theirs_model(pixel_values_videos=x, skip_predictor=True)
                return out.last_hidden_state.mean(1)

        def ours():
            return engine.features(clips)

        theirs()  # warm-up both (first-call allocations, lazy inits)
        ours()
        rates: dict[str, list[float]] = {"ours": [], "theirs": []}
        equal = True
        for r in range(rounds):
            order = ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")
            outs = {}
            for side in order:
                rate, outs[side] = timed(ours if side == "ours" else theirs, batch)
                rates[side].append(rate)
            equal &= torch.equal(torch.from_numpy(outs["ours"]), outs["theirs"])
        result = {
            "model": name,
            "clip": f"{frames}x{size}x{size}",
            "params_M": sum(p.numel() for p in theirs_model.parameters()) / 1e6,
            "ours": statistics.median(rates["ours"]),
            "theirs": statistics.median(rates["theirs"]),
            "per_round": [o / t for o, t in zip(rates["ours"], rates["theirs"], strict=True)],
            "equal": equal,
        }
        if end_to_end:
            result["end_to_end"] = run_end_to_end(name, folder, frames, size, batch)
        return result


def run_end_to_end(name: str, folder: Path, frames: int, size: int, batch: int) -> float:
    """clips/s of `aqa extract` (1 decode worker) on 2 synthetic frame folders of 4 clips each,
    the model load and hashing included."""
    from PIL import Image

    from aqa_pipeline.extract.recipe import Recipe
    from aqa_pipeline.extract.runner import ExtractJob, run_extraction
    from aqa_pipeline.synthetic import moving_square

    root = folder.parent / "frames"
    n_clips = 0
    for v in range(2):
        (root / f"v{v}").mkdir(parents=True)
        for i, frame in enumerate(moving_square(4 * frames, (size, size), 3.0, v)):
            Image.fromarray(frame).save(root / f"v{v}" / f"{i:05d}.png")
        n_clips += 4
    recipe = Recipe.model_validate({
        "name": "bench", "backbone": {"name": name},
        "sampling": {"method": "consecutive", "clip_len": frames},
    })  # fmt: skip
    job = ExtractJob(recipe=recipe, input=str(root), output=folder.parent / "c.h5",
                     weights=str(folder), batch_size=batch, workers=1)  # fmt: skip
    t0 = time.perf_counter()
    summary = run_extraction(job, progress=False)
    assert summary.n_clips == n_clips and not summary.n_failed, summary
    return n_clips / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch", type=int, default=2, help="clips per forward")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--end-to-end", action="store_true", help="also time `aqa extract`")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    print(f"CPU: {describe_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"transformers {transformers.__version__}; load before: {load()}")  # fmt: skip
    for name in args.models:
        r = bench_model(name, args.batch, args.rounds, args.end_to_end)
        ratio = r["ours"] / r["theirs"]
        print(
            f"{r['model']:<9} {r['clip']:<11} {r['params_M']:.0f}M params, batch {args.batch}: "
            f"ours {r['ours']:.3f} clips/s, transformers {r['theirs']:.3f} clips/s, "
            f"ratio {ratio:.3f}, paired median {statistics.median(r['per_round']):.3f} "
            f"(per round {np.round(r['per_round'], 3).tolist()}), "
            f"features equal: {r['equal']}"
        )
        if "end_to_end" in r:
            print(f"{'':<9} aqa extract end to end (decode + model load included): "
                  f"{r['end_to_end']:.3f} clips/s = {r['end_to_end'] / r['theirs']:.3f} x transformers")  # fmt: skip
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
