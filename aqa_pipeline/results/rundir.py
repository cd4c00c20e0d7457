"""Files of a run directory.

config.yaml          the resolved config (labels spec, features path, seeds, label scale)
environment.json     versions, git commit, command, threads, time
train.log            the log
epochs.csv           per epoch: fold, run (full | val), seed, epoch, lr, train_loss,
                     spearman (of the run's evaluation set: test for full, val for val)
predictions.csv      see aqa_pipeline.results.predictions
metrics.json         see aqa_pipeline.results.protocols
heads.safetensors    weights "<protocol>::<fold>::<seed>::<param>" (+ "norm::<fold>::mean|std"
                     with data.standardize)
heads.json           sidecar: head name and options, input kind and width, label scale,
                     seeds, folds, eval seeds, selected epochs, cache key, labels spec
clip_outputs.h5      heads with per-clip outputs: /<protocol>/seed<seed>/ holds video_ids,
                     fold, offsets (N+1), clip_scores, clip_weights, clip_index, clip_frames
report.md, plots/    written by aqa evaluate (and at the end of aqa train)
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from aqa_pipeline import provenance
from aqa_pipeline.errors import AqaError

SEP = "::"
CLIP_KEYS = ("clip_scores", "clip_weights", "clip_index", "clip_frames")
EPOCH_COLUMNS = ("fold", "run", "seed", "epoch", "lr", "train_loss", "spearman", "seconds")


def write_yaml(path: Path, data: Any) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise AqaError(f"{path}: not found (is this a run directory?)")
    return yaml.safe_load(path.read_text())


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically; NaN and infinities (undefined figures) are written as null."""
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(_finite(data), indent=2, sort_keys=False, default=_json_default,
                      allow_nan=False)  # fmt: skip
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def _finite(obj: Any) -> Any:
    """obj with every non-finite float (NaN: an undefined figure) replaced by None."""
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _finite(obj.tolist())
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer | np.floating):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise AqaError(f"{path}: not found (is this a run directory?)")
    return json.loads(path.read_text())


def environment(device: str | None = None) -> dict[str, Any]:
    """`aqa_pipeline.provenance.environment()` plus what training adds: platform, torch
    threads, CUDA, device."""
    return {
        **provenance.environment(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "device": device,
    }


def follow_umask(path: Path) -> None:
    """Give a file the mode a plain open() would (0666 minus the umask): some writers
    (safetensors) create 0600 files that lab-mates on a shared filesystem cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def publish(work: Path, run_dir: Path) -> None:
    """Move a completed run from its partial dir to `run_dir`. An existing `run_dir` (an
    --overwrite) is set aside first and removed only once the new one is in place."""
    work, run_dir = Path(work), Path(run_dir)
    old = run_dir.parent / f".{run_dir.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if run_dir.exists():
        os.replace(run_dir, old)
    os.replace(work, run_dir)
    if old.exists():
        shutil.rmtree(old)


def write_epochs(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=EPOCH_COLUMNS)
        w.writeheader()
        w.writerows(rows)


def read_epochs(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [
            {k: (v if k in ("fold", "run") else float(v)) for k, v in row.items()}
            for row in csv.DictReader(fh)
        ]


def save_heads(
    run_dir: Path,
    states: dict[tuple[str, str, int], dict[str, torch.Tensor]],
    norms: dict[str, tuple[torch.Tensor, torch.Tensor]],
    sidecar: dict[str, Any],
) -> None:
    """states: (protocol, fold, seed) -> state dict."""
    tensors = {}
    for (protocol, fold, seed), sd in states.items():
        for name, t in sd.items():
            tensors[SEP.join((protocol, fold, str(seed), name))] = (
                t.detach().cpu().contiguous().clone()
            )
    for fold, (mean, std) in norms.items():
        tensors[SEP.join(("norm", fold, "mean"))] = mean.cpu().contiguous().clone()
        tensors[SEP.join(("norm", fold, "std"))] = std.cpu().contiguous().clone()
    save_file(tensors, str(run_dir / "heads.safetensors"))
    follow_umask(run_dir / "heads.safetensors")
    write_json(run_dir / "heads.json", sidecar)


def load_heads(
    run_dir: Path,
) -> tuple[dict[str, Any], dict[tuple[str, str, int], dict[str, torch.Tensor]], dict[str, tuple]]:
    """(sidecar, states keyed (protocol, fold, seed), norms keyed fold)."""
    sidecar = read_json(run_dir / "heads.json")
    path = run_dir / "heads.safetensors"
    if not path.is_file():
        raise AqaError(f"{path}: not found (is this a finished run directory?)")
    states: dict[tuple[str, str, int], dict[str, torch.Tensor]] = {}
    norms: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in load_file(str(path)).items():
        parts = key.split(SEP)
        if parts[0] == "norm":
            norms.setdefault(parts[1], {})[parts[2]] = t
        else:
            protocol, fold, seed, name = parts
            states.setdefault((protocol, fold, int(seed)), {})[name] = t
    return sidecar, states, {f: (d["mean"], d["std"]) for f, d in norms.items()}


def write_clip_outputs(path: Path, records: list[dict[str, Any]]) -> None:
    """records: one per (protocol, seed, fold) with video_ids and per-video lists
    clip_scores / clip_weights / clip_index / clip_frames."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["protocol"], r["seed"]), []).append(r)
    tmp = path.with_name(path.name + ".tmp")
    str_dt = h5py.string_dtype("utf-8")
    with h5py.File(tmp, "w") as f:
        for (protocol, seed), recs in groups.items():
            g = f.create_group(f"{protocol}/seed{seed}")
            ids = [v for r in recs for v in r["video_ids"]]
            folds = [r["fold"] for r in recs for _ in r["video_ids"]]
            g.create_dataset("video_ids", data=np.array(ids, dtype=object), dtype=str_dt)
            g.create_dataset("fold", data=np.array(folds, dtype=object), dtype=str_dt)
            per_video = {k: [a for r in recs for a in r[k]] for k in CLIP_KEYS if k in recs[0]}
            lengths = [len(a) for a in per_video["clip_index"]]
            g.create_dataset(
                "offsets", data=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            )
            for k, arrs in per_video.items():
                g.create_dataset(k, data=np.concatenate(arrs) if arrs else np.zeros(0))
    os.replace(tmp, path)


def read_clip_outputs(path: Path, protocol: str, seed: int) -> dict[str, Any]:
    """{video_id: {"fold", "clip_scores", "clip_weights", "clip_index", "clip_frames"}}."""
    if not path.is_file():
        raise AqaError(f"{path}: no per-clip outputs (the head has no clip scores/weights)")
    with h5py.File(path, "r") as f:
        key = f"{protocol}/seed{seed}"
        if key not in f:
            raise AqaError(f"{path}: no clip outputs for protocol {protocol} seed {seed}")
        g = f[key]
        ids = [v.decode() if isinstance(v, bytes) else str(v) for v in g["video_ids"][()]]
        folds = [v.decode() if isinstance(v, bytes) else str(v) for v in g["fold"][()]]
        off = g["offsets"][()]
        arrays = {k: g[k][()] for k in CLIP_KEYS if k in g}
    out = {}
    for i, vid in enumerate(ids):
        sl = slice(off[i], off[i + 1])
        out.setdefault(vid, {"fold": folds[i], **{k: a[sl] for k, a in arrays.items()}})
    return out
