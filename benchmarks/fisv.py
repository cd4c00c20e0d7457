"""Fis-V benchmark of the long-form heads: InterAQA and GDLT, TES and PCS, several seeds.

Reads a Fis-V feature folder (GDLT's release: swintx_avg_fps25_clip32/<id>.npy, (T, 1024),
plus train.txt / test.txt), trains every (head, target) with `aqa_pipeline.train.run_training`
and the shipped train config <head>_fisv_<target>.yaml, and prints one table: test
Spearman by protocol (final epoch; val-selected epoch; best epoch on test, as the papers
report), mean and std over seeds, R-l2 x 100 (final epoch) and seconds per epoch per seed
(train + test, the full run); then the reproduction table: each protocol's mean +- std over
seeds, its bootstrap 95% interval, the range over seeds, the paper's figure and the run's ridge
baseline. Each head runs once per precision in --amp (bf16 = autocast;
by default InterAQA in both, GDLT in float32).

    python benchmarks/fisv.py [--data ../shared/data/fisv] [--seeds 0 1 2 3 4]
        [--heads interaqa gdlt] [--targets tes pcs] [--amp none bf16]
        [--epochs-interaqa N] [--epochs-gdlt N] [--val-fraction 0.2] [--threads 2]
        [--clean] [--set key=value ...] [--runs-dir runs/bench_fisv]
    python benchmarks/fisv.py --table-from runs/bench_fisv/*      # the tables of earlier runs
    python benchmarks/fisv.py --rescore-bf16 runs/bench_fisv/interaqa_fisv_tes_none_e60
        # test Spearman of a float32 run's saved heads predicting under bf16 autocast

Every run writes a run directory under --runs-dir (metrics.json, epochs.csv, predictions,
clip outputs, report). --val-fraction 0 skips the validation runs (half the time) and leaves
the val column empty. --clean uses the <head>_fisv_<target>_clean.yaml configs (InterAQA).
On a machine shared with other jobs, GOMP_SPINCOUNT=0 keeps the OpenMP threads from spinning.
Runs save checkpoints every train.checkpoint_minutes: a killed benchmark, rerun with the same
arguments, continues each unfinished run where it stopped (`run_training(..., resume=True)`).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aqa_pipeline.config import apply_overrides, configs_dir, load_config
from aqa_pipeline.evaluate.rescore import rescore
from aqa_pipeline.features.store import FeatureSet, VideoRecord
from aqa_pipeline.results.metrics import spearman
from aqa_pipeline.results.predictions import Predictions
from aqa_pipeline.results.rundir import read_yaml, write_yaml
from aqa_pipeline.train import run_training
from aqa_pipeline.train.checkpoint import was_interrupted

ROOT = Path(__file__).resolve().parents[1]
SHARED_FISV = ROOT.parent / "shared" / "data" / "fisv"
FEATURES = "swintx_avg_fps25_clip32"
CLIP_LEN = 32  # frames per clip in GDLT's features (25 fps, non-overlapping)


def load_features(folder: Path) -> FeatureSet:
    """The .npy folder as an in-memory feature cache (video id = file stem)."""
    records = []
    for path in sorted(folder.glob("*.npy")):
        clips = np.load(path).astype(np.float32)
        starts = np.arange(len(clips), dtype=np.int64) * CLIP_LEN
        records.append(
            VideoRecord(
                video_id=path.stem,
                source=str(path),
                clip_features=clips,
                clip_frames=np.stack([starts, starts + CLIP_LEN], axis=1),
                num_frames=len(clips) * CLIP_LEN,
                fps=25.0,
            )
        )
    if not records:
        raise SystemExit(f"{folder}: no .npy feature files")
    key = {"backbone": {"name": "swin_b_k600_gdlt"}, "imported_from": str(folder)}
    return FeatureSet.from_records(records, records[0].clip_features.shape[1], key_fields=key)


def seconds_per_epoch(run_dir: Path, n_seeds: int) -> float:
    """Median seconds of one epoch of one seed in the full run (train + test)."""
    with (run_dir / "epochs.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["run"] == "full"]
    per_epoch = {int(r["epoch"]): float(r["seconds"]) for r in rows}  # shared by the seeds
    return float(np.median(list(per_epoch.values()))) / n_seeds


def summary_row(run_dir: Path) -> dict:
    """One table row from a run directory."""
    m = json.loads((run_dir / "metrics.json").read_text())
    info = json.loads((run_dir / "bench.json").read_text())
    return {
        **info,
        "run_dir": str(run_dir),
        "seeds": len(m["seeds"]),
        "final": (m["spearman"], m["spearman_std"]),
        "val": (m["spearman_val"], m["spearman_val_std"]),
        "best_on_test": (m["spearman_best_on_test"], m["spearman_best_on_test_std"]),
        "rl2": m["rl2"],
        "sec_per_epoch": seconds_per_epoch(run_dir, len(m["seeds"])),
    }


def fmt(pair: tuple[float | None, float | None]) -> str:
    mean, std = pair
    return "-" if mean is None else f"{mean:.3f}±{std:.3f}"


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'head':9} {'config':20} {'amp':5} {'epochs':>6} {'seeds':>5} {'final':>12} "
        f"{'val':>12} {'best-on-test':>12} {'R-l2 x100':>9} {'s/epoch':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['head']:9} {r['config']:20} {r['amp']:5} {r['epochs']:>6} {r['seeds']:>5} "
            f"{fmt(r['final']):>12} {fmt(r['val']):>12} {fmt(r['best_on_test']):>12} "
            f"{100 * r['rl2']:>9.2f} {r['sec_per_epoch']:>8.2f}"
        )


# What the papers report on Fis-V (Spearman, best epoch on test): GDLT, CVPR 2022, Table 2;
# InterAQA, BMVC 2024 (derived from the gains over GDLT that the paper states).
PAPER = {
    ("gdlt", "tes"): 0.685,
    ("gdlt", "pcs"): 0.820,
    ("interaqa", "tes"): 0.717,
    ("interaqa", "pcs"): 0.858,
}
PROTOCOL_NAMES = {"final": "final epoch", "val": "val-selected", "best_on_test": "best-on-test"}


def reproduction_table(run_dirs: list[Path]) -> str:
    """Markdown: each run's protocols side by side against the paper and the run's ridge
    baseline. A cell is the mean over seeds +- their std, then the bootstrap 95% interval
    of the mean (test programs resampled), then the range over seeds."""
    lines = [
        "| head | target | amp | epochs | seeds | protocol | Spearman mean ± std | 95% CI "
        "| seeds min to max | paper | mean - paper | ridge |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run_dir in run_dirs:
        m = json.loads((run_dir / "metrics.json").read_text())
        info = json.loads((run_dir / "bench.json").read_text())
        target = m["labels"].rsplit("target=", 1)[-1].lower() if "target=" in m["labels"] else "?"
        paper = PAPER.get((info["head"], target))
        for key, name in PROTOCOL_NAMES.items():
            p = m["protocols"].get(key)
            if not p or p.get("spearman") is None:
                continue
            per_seed = [v for v in p["spearman_per_seed"] if v is not None]
            lo, hi = p["spearman_ci95"] or (None, None)
            gap = "" if paper is None else f"{p['spearman'] - paper:+.3f}"
            lines.append(
                f"| {info['head']} | {target.upper()} | {info['amp']} | {info['epochs']} "
                f"| {len(per_seed)} | {name} | {p['spearman']:.3f} ± {p['spearman_std']:.3f} "
                f"| [{lo:.3f}, {hi:.3f}] | {min(per_seed):.3f} to {max(per_seed):.3f} "
                f"| {'' if paper is None else f'{paper:.3f}'} | {gap} "
                f"| {m['baseline']['spearman']:.3f} |"
            )
    return "\n".join(lines)


def rescore_bf16(run_dir: Path, features: FeatureSet) -> None:
    """Re-predict a run's test set with its saved heads under bf16 autocast and print the
    test Spearman per protocol and seed next to the run's own (float32) predictions."""
    ours = Predictions.read(run_dir / "predictions.csv")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        for name in ("heads.safetensors", "heads.json"):
            shutil.copy(run_dir / name, copy / name)
        cfg = read_yaml(run_dir / "config.yaml")
        cfg["train"]["amp"] = "bf16"
        write_yaml(copy / "config.yaml", cfg)
        t0 = time.perf_counter()
        theirs = rescore(copy, features)[0]
        seconds = time.perf_counter() - t0
    protocols, folds, seeds = ours.keys()
    print(f"{run_dir.name}: bf16-autocast re-prediction of the test set ({seconds:.0f} s)")
    for protocol in protocols:
        for fold in folds:
            for seed in seeds:
                a, b = ours.select(protocol, fold, seed), theirs.select(protocol, fold, seed)
                print(f"  {protocol:13} seed {seed}: float32 {spearman(a['pred'], a['true']):.4f}"
                      f"  bf16 {spearman(b['pred'], b['true']):.4f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=SHARED_FISV)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--heads", nargs="+", default=["interaqa", "gdlt"])
    ap.add_argument("--targets", nargs="+", default=["tes", "pcs"])
    ap.add_argument("--amp", nargs="+", default=None,
                    help="precisions to run every head in (default: InterAQA in none and "
                         "bf16, GDLT in none)")  # fmt: skip
    ap.add_argument("--epochs-interaqa", type=int, default=None, help="default: the config's")
    ap.add_argument("--epochs-gdlt", type=int, default=None, help="default: the config's")
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clean", action="store_true", help="the *_clean.yaml configs")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override key=value for every run (repeatable)")  # fmt: skip
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench_fisv")
    ap.add_argument("--table-from", type=Path, nargs="+", default=None,
                    help="print the table of earlier run directories and exit")  # fmt: skip
    ap.add_argument("--rescore-bf16", type=Path, nargs="+", default=None,
                    help="re-predict these float32 runs under bf16 autocast and exit")  # fmt: skip
    args = ap.parse_args()
    if args.table_from:
        done = [d for d in args.table_from if (d / "metrics.json").is_file()]
        print_table([summary_row(d) for d in done])
        print()
        print(reproduction_table(done))
        return

    torch.set_num_threads(args.threads)
    features = load_features(args.data / FEATURES)
    if args.rescore_bf16:
        for run_dir in args.rescore_bf16:
            rescore_bf16(run_dir, features)
        return
    rows = []
    for target in args.targets:
        for head in args.heads:
            name = f"{head}_fisv_{target}" + ("_clean" if args.clean else "")
            path = configs_dir("train") / f"{name}.yaml"
            if not path.is_file():
                print(f"skipping {name}: no {path}")
                continue
            cfg = apply_overrides(load_config(path), args.overrides)
            cfg["labels"] = f"fisv:{args.data}?target={target.upper()}"
            cfg.setdefault("eval", {})["val_fraction"] = args.val_fraction
            cfg["eval"].setdefault("bootstrap", 200)
            epochs = args.epochs_interaqa if head == "interaqa" else args.epochs_gdlt
            if epochs:
                cfg["train"]["epochs"] = epochs
            default_amp = ["none", "bf16"] if head == "interaqa" else ["none"]
            for amp in args.amp or default_amp:
                cfg["train"]["amp"] = amp
                run_dir = args.runs_dir / f"{name}_{amp}_e{cfg['train']['epochs']}"
                info = {"head": head, "config": name, "amp": amp, "epochs": cfg["train"]["epochs"]}
                resume = was_interrupted(run_dir)
                run_training(
                    cfg, features, None, run_dir, list(args.seeds), resume=resume, overwrite=True
                )
                # after the run: a finished run is moved into place, replacing run_dir
                (run_dir / "bench.json").write_text(json.dumps(info))
                rows.append(summary_row(run_dir))
                print_table(rows[-1:])
    print()
    print_table(rows)
    print()
    print(reproduction_table([Path(r["run_dir"]) for r in rows]))


if __name__ == "__main__":
    main()
