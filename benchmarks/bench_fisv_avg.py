"""Real features: DAE and MLP heads vs ridge regression on Fis-V's averaged clip features.

Fis-V (500 programs, 400 train / 100 test) with GDLT's Video Swin-B clip features
(../shared/data/fisv/swintx_avg_fps25_clip32/<id>.npy, (T, 1024) float16): each program is
the mean of its clip features. Targets TES and PCS, one model per target.

- dae / mlp: `run_training` with aqa_pipeline/configs/train/{dae,mlp}_fisv_{tes,pcs}.yaml,
  5 seeds; the final, val and best_on_test protocols (best_on_test is shown for reference
  only), and the 90% interval coverage of the heads with a sigma (calibrated on validation).
- ridge: the baseline every run reports (aqa_pipeline.train.baseline): closed form on the
  mean features, lambda chosen by 5-fold cross-validation on the training set (mean fold
  Spearman) over a log grid. Deterministic.

    python benchmarks/bench_fisv_avg.py [--fisv ../shared/data/fisv] [--seeds 5] [--threads 1]
                                        [--amp bf16]

Targets (issue 11): dae and mlp reach at least ridge's test Spearman, for TES and PCS, under
the final and the val protocols; the DAE's 90% coverage lies within 0.85-0.95. With 100 test programs a difference of a few hundredths is
within the test set's sampling noise: the paired bootstrap interval of each head's Spearman
minus ridge's (the same resampled programs for both) is printed with the table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aqa_pipeline.config import load_config
from aqa_pipeline.datasets import load_labels
from aqa_pipeline.features import FeatureSet, VideoRecord
from aqa_pipeline.results.report import fmt
from aqa_pipeline.train import run_training

ROOT = Path(__file__).resolve().parents[1]
FEATURES = "swintx_avg_fps25_clip32"


def mean_features(folder: Path) -> FeatureSet:
    """One record per program holding its mean clip feature (float32)."""
    recs = []
    for path in sorted((folder / FEATURES).glob("*.npy")):
        clips = np.load(path).astype(np.float32)
        recs.append(
            VideoRecord(
                video_id=path.stem,
                clip_features=clips.mean(0, keepdims=True),
                clip_frames=np.array([[0, 32 * len(clips)]]),
            )
        )
    return FeatureSet.from_records(recs, 1024, key_fields={"features": FEATURES, "pool": "mean"})


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--fisv", type=Path, default=ROOT.parent / "shared" / "data" / "fisv")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--heads", nargs="+", default=["dae", "mlp"])
    ap.add_argument("--targets", nargs="+", default=["tes", "pcs"])
    ap.add_argument("--amp", choices=["none", "bf16"], default=None, help="override train.amp")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    fs = mean_features(args.fisv)
    seconds = time.perf_counter() - t0
    print(f"Fis-V: {fs.n_videos} programs, mean features {fs.feature_dim}-d ({seconds:.1f} s)")
    rows = []
    for target in args.targets:
        labels = load_labels(f"fisv:{args.fisv}?target={target.upper()}")
        for head in args.heads:
            overrides = [f"train.amp={args.amp}"] if args.amp else []
            cfg = load_config(f"{head}_fisv_{target}", overrides, kind="train")
            t = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                m = run_training(cfg, fs, labels, Path(tmp) / "run", seeds=args.seeds)
            rows.append((target.upper(), head, m, time.perf_counter() - t))
    print("\nEvery run fits ridge on the same training programs (lambda by 5-fold CV on them) and")
    print("reports the head's Spearman minus ridge's on the same test programs (paired 95% CI).")
    print(f"\n{'target':6s} {'model':22s} {'final':>16s} {'val':>16s} {'best_on_test*':>13s} "
          f"{'cov90 final/val':>16s}")  # fmt: skip
    for target, head, m, secs in rows:
        base = m["baseline"]
        if head == args.heads[0]:
            print(f"{target:6s} {'ridge':22s} {base['spearman']:7.4f}")
        cov = m["protocols"]
        c90 = " / ".join(fmt(cov[p].get("coverage_90"), 3) for p in ("final", "val") if p in cov)
        print(f"{target:6s} {f'{head} ({args.seeds} seeds, {secs:.0f} s)':22s} "
              f"{fmt(m['spearman'])} +- {fmt(m['spearman_std'], 3)} "
              f"{fmt(m['spearman_val'])} +- {fmt(m['spearman_val_std'], 3)} "
              f"{fmt(m['spearman_best_on_test']):>13s} {c90:>16s}")  # fmt: skip
    print("* best_on_test picks each epoch on the test set (as papers report); not a fair figure.")
    print("\nhead minus ridge on the same test programs (paired bootstrap 95% interval):")
    for target, head, m, _ in rows:
        vs = {p: m["protocols"][p]["vs_baseline"] for p in ("final", "val") if p in m["protocols"]}
        text = "  ".join(
            f"{p} {fmt(d['difference'], sign=True)} [{fmt(d['ci95'][0], 3, True)}, "
            f"{fmt(d['ci95'][1], 3, True)}]"
            for p, d in vs.items()
        )
        ok = all(d["difference"] >= 0 for d in vs.values())
        print(f"{target:6s} {head:4s} {text}   >= ridge: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
