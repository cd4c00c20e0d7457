"""The epoch loop of one run (one fold, S seeds in lockstep) and batched prediction.

Each epoch: every seed shuffles its own training rows (its own generator), the group takes
one step per batch, then every evaluation set is predicted (scores and sigma in dataset
units) and kept for all epochs, so any epoch can be selected afterwards. Snapshots of the
weights are taken at requested epochs per seed, at the best epoch of a tracked set, and at
the end. With a checkpoint path the loop saves its whole state every `checkpoint_seconds`
and after the last epoch, and continues from that file when it exists.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from aqa_pipeline.errors import MismatchError
from aqa_pipeline.results.metrics import spearman
from aqa_pipeline.train.checkpoint import load_checkpoint, save_checkpoint
from aqa_pipeline.train.config import TrainConfig
from aqa_pipeline.train.data import TrainData
from aqa_pipeline.train.group import CLIP_OUTPUTS, ModelGroup

log = logging.getLogger(__name__)


@dataclass
class RunOutput:
    """What one run leaves: curves (E epochs, S seeds) and snapshots per seed."""

    train_loss: np.ndarray  # (E, S)
    lr: np.ndarray  # (E,)
    seconds: np.ndarray  # (E,)
    preds: dict[str, dict[str, np.ndarray]]  # set -> "score"/"sigma" (E, S, n)
    spearman: dict[str, np.ndarray]  # set -> (E, S)
    snapshots: dict[str, list[dict[str, Tensor] | None]] = field(default_factory=dict)
    snapshot_epoch: dict[str, list[int]] = field(default_factory=dict)


def predict_rows(
    group: ModelGroup,
    data: TrainData,
    inputs: Any,
    rows: np.ndarray,
    batch_size: int,
    eval_seed: int,
    clips: bool = False,
) -> dict[str, Any]:
    """Predict rows (S, n) with every seed: "score" and "sigma" (S, n) in dataset units
    ("sigma" only for heads that have one). With clips=True also "clip_scores",
    "clip_weights" and "clip_index": per seed a list of n 1-D arrays (real clips only)."""
    rngs = [np.random.default_rng([eval_seed, s]) for s in range(rows.shape[0])]
    device = data.video.device
    out: dict[str, list] = {}
    per_clip: dict[str, list[list[np.ndarray]]] = {}
    s_n, n = rows.shape
    for start in range(0, n, batch_size):
        r = torch.as_tensor(rows[:, start : start + batch_size], device=device)
        made = inputs.make(r, train=False, rngs=rngs)
        head_inputs = {k: v for k, v in made.items() if k != "clip_index"}
        pred = group.predict(head_inputs, data.batch_fields(r), eval_seed)
        for key in ("score", "sigma"):
            if key in pred:
                out.setdefault(key, []).append(pred[key].cpu().numpy() * data.scale)
        if clips and "clip_index" in made and any(k in pred for k in CLIP_OUTPUTS):
            index = made["clip_index"].cpu().numpy()
            for key in (*CLIP_OUTPUTS, "clip_index"):
                values = index if key == "clip_index" else pred.get(key)
                if values is None:
                    continue
                values = values if isinstance(values, np.ndarray) else values.cpu().numpy()
                lists = per_clip.setdefault(key, [[] for _ in range(s_n)])
                for s in range(s_n):
                    for b in range(values.shape[1]):
                        lists[s].append(values[s, b][index[s, b] >= 0])
    result: dict[str, Any] = {k: np.concatenate(v, axis=1) for k, v in out.items()}
    if "clip_scores" in per_clip:
        # the head's clip scores are in normalised units like its score
        per_clip["clip_scores"] = [[a * data.scale for a in lst] for lst in per_clip["clip_scores"]]
    result.update(per_clip)
    return result


@dataclass
class RunPlan:
    """What one run trains on and records (the loop's one settings object).

    train_rows: (S, n) training rows of each seed; eval_sets: name -> (S, n_e) rows predicted
    after every epoch; seeds: the S seeds (initialisation, batch order); order_key: mixed into
    the batch-order and augmentation generators (fold, run); eval_seed: the fixed RNG seed of
    every prediction pass; snapshot_at: protocol -> epoch per seed whose weights to keep;
    best_on: an eval set whose best-Spearman epoch is kept as "best_on_<set>" (the last
    epoch is always kept as "final"); checkpoint: a file the loop saves its state to (every
    checkpoint_seconds and at the end) and continues from when it exists.
    """

    train_rows: np.ndarray
    eval_sets: dict[str, np.ndarray]
    seeds: list[int]
    epochs: int
    batch_size: int
    test_batch_size: int
    order_key: tuple[int, ...] = (0, 0)
    eval_seed: int = 1
    snapshot_at: dict[str, list[int]] = field(default_factory=dict)
    best_on: str | None = None
    label: str = ""
    checkpoint: Path | None = None
    checkpoint_seconds: float = 300.0

    @classmethod
    def of(
        cls,
        cfg: TrainConfig,
        train_rows: np.ndarray,
        eval_sets: dict[str, np.ndarray],
        seeds: list[int] | None = None,
        **kw: Any,
    ) -> RunPlan:
        """A plan with the config's epochs, batch sizes, checkpoint interval and seeds."""
        return cls(
            train_rows=train_rows,
            eval_sets=eval_sets,
            seeds=list(cfg.train.seeds if seeds is None else seeds),
            epochs=cfg.train.epochs,
            batch_size=cfg.train.batch_size,
            test_batch_size=cfg.test.batch_size,
            checkpoint_seconds=60 * cfg.train.checkpoint_minutes,
            **kw,
        )


def fit_closed_form(
    group: ModelGroup, make_head: Any, data: TrainData, inputs: Any, plan: RunPlan
) -> RunOutput:
    """The run of a head fitted in closed form (`head.closed_form`, e.g. ridge): each seed's
    head is fitted once on its training rows with `head.fit(x, y)`, then every evaluation set
    is predicted. The output has one "epoch", so every protocol selects it."""
    t0 = time.perf_counter()
    s_n = len(plan.seeds)
    rows = torch.as_tensor(plan.train_rows, device=data.video.device)
    rngs = [np.random.default_rng([plan.eval_seed, s]) for s in range(s_n)]
    x = inputs.make(rows, train=False, rngs=rngs)["x"]  # (S, n, D)
    y = data.fields["target"][rows]  # (S, n)
    states = []
    for s in range(s_n):
        head = make_head()
        info = head.fit(x[s], y[s])
        log.info("%s run: seed %d fitted in closed form (%s)", plan.label, plan.seeds[s], info)
        states.append(head.state_dict())
    group.load_state_dicts(states)
    preds, rho = {}, {}
    for name, eval_rows in plan.eval_sets.items():
        p = predict_rows(group, data, inputs, eval_rows, plan.test_batch_size, plan.eval_seed)
        preds[name] = {k: v[None] for k, v in p.items()}
        truth = data.labels.score[eval_rows]
        rho[name] = np.array([[spearman(p["score"][s], truth[s]) for s in range(s_n)]])
    snaps = {k: list(states) for k in (*plan.snapshot_at, "final")}
    epochs = {k: [0] * s_n for k in snaps}
    if plan.best_on:
        snaps[f"best_on_{plan.best_on}"] = list(states)
        epochs[f"best_on_{plan.best_on}"] = [0] * s_n
    secs = np.array([time.perf_counter() - t0])
    return RunOutput(np.zeros((1, s_n)), np.zeros(1), secs, preds, rho, snaps, epochs)


def run_epochs(group: ModelGroup, data: TrainData, inputs: Any, plan: RunPlan) -> RunOutput:
    """Train `group` for plan.epochs on plan.train_rows and predict every evaluation set
    after each epoch (see RunPlan)."""
    train_rows, eval_sets, seeds = plan.train_rows, plan.eval_sets, plan.seeds
    epochs, bs, test_bs = plan.epochs, plan.batch_size, plan.test_batch_size
    order_key, eval_seed, label = plan.order_key, plan.eval_seed, plan.label
    snapshot_at, best_on, checkpoint = plan.snapshot_at, plan.best_on, plan.checkpoint
    checkpoint_seconds = plan.checkpoint_seconds
    s_n, n = train_rows.shape
    device = data.video.device
    gens = [np.random.default_rng([seed, *order_key, 0]) for seed in seeds]  # batch order
    augs = [np.random.default_rng([seed, *order_key, 1]) for seed in seeds]  # crops, exemplars
    truth = {k: data.labels.score[v] for k, v in eval_sets.items()}  # (S, n_e)
    preds: dict[str, dict[str, np.ndarray]] = {k: {} for k in eval_sets}
    rho = {k: np.full((epochs, s_n), np.nan) for k in eval_sets}
    losses, lrs, secs = np.zeros((epochs, s_n)), np.zeros(epochs), np.zeros(epochs)
    snaps: dict[str, list] = {k: [None] * s_n for k in snapshot_at}
    best_key = f"best_on_{best_on}" if best_on else None
    if best_key:
        snaps[best_key] = [None] * s_n
    best = np.full(s_n, -np.inf)
    best_epoch = [0] * s_n
    n_steps = math.ceil(n / bs)
    start = 0
    if checkpoint is not None and checkpoint.is_file():
        st = load_checkpoint(checkpoint)
        saved = (st["epochs"], st["seeds"], st["rows"], sorted(st["preds"]))
        if saved != (epochs, list(seeds), train_rows.shape, sorted(eval_sets)):
            raise MismatchError(
                f"{checkpoint}: saved by a run of other epochs, seeds, training rows or "
                "evaluation sets",
                {
                    "epochs": (st["epochs"], epochs),
                    "seeds": (st["seeds"], list(seeds)),
                    "training rows": (st["rows"], train_rows.shape),
                    "evaluation sets": (sorted(st["preds"]), sorted(eval_sets)),
                },
            )
        group.load_training_state(st["group"])
        for g, state in zip(gens + augs, st["generators"], strict=True):
            g.bit_generator.state = state
        losses, lrs, secs, preds, rho = (
            st["losses"],
            st["lr"],
            st["seconds"],
            st["preds"],
            st["rho"],
        )
        snaps, best, best_epoch = st["snapshots"], st["best"], st["best_epoch"]
        start = st["epoch"] + 1
        log.info("%s run: continuing after epoch %d (%s)", label, start, checkpoint)
    last_save = time.monotonic()
    # a progress bar on terminals only (disable=None); the log has a line per epoch
    for epoch in tqdm(
        range(start, epochs),
        initial=start,
        total=epochs,
        desc=f"{label} run",
        unit="epoch",
        disable=None,
        leave=False,
    ):
        t0 = time.perf_counter()
        lrs[epoch] = group.lr
        order = np.stack([train_rows[s][g.permutation(n)] for s, g in enumerate(gens)])
        total = torch.zeros(s_n)
        for i in range(n_steps):
            r = torch.as_tensor(order[:, i * bs : (i + 1) * bs], device=device)
            made = inputs.make(r, train=True, rngs=augs)
            head_inputs = {k: v for k, v in made.items() if k != "clip_index"}
            total += group.train_step(head_inputs, data.batch_fields(r), epoch).cpu()
        group.end_epoch()
        losses[epoch] = (total / n_steps).numpy()
        for name, rows in eval_sets.items():
            p = predict_rows(group, data, inputs, rows, test_bs, eval_seed)
            for key, value in p.items():
                preds[name].setdefault(key, np.zeros((epochs, *value.shape)))[epoch] = value
            rho[name][epoch] = [spearman(p["score"][s], truth[name][s]) for s in range(s_n)]
        for proto, at in snapshot_at.items():
            for s in range(s_n):
                if at[s] == epoch:
                    snaps[proto][s] = group.state_dict(s)
        if best_key:
            for s in np.flatnonzero(rho[best_on][epoch] > best):
                best[s], best_epoch[s] = rho[best_on][epoch][s], epoch
                snaps[best_key][s] = group.state_dict(int(s))
        secs[epoch] = time.perf_counter() - t0
        curves = " ".join(f"{k} {_mean_defined(v[epoch])}" for k, v in rho.items())
        log.info(
            "%s epoch %d/%d loss %.4g lr %.3g %s (%.2fs)",
            label,
            epoch + 1,
            epochs,
            losses[epoch].mean(),
            lrs[epoch],
            curves,
            secs[epoch],
        )
        if checkpoint is not None and (
            epoch == epochs - 1 or time.monotonic() - last_save >= checkpoint_seconds
        ):
            state = {
                "epoch": epoch,
                "epochs": epochs,
                "seeds": list(seeds),
                "rows": train_rows.shape,
                "group": group.training_state(),
                "generators": [g.bit_generator.state for g in gens + augs],
                "losses": losses,
                "lr": lrs,
                "seconds": secs,
                "preds": preds,
                "rho": rho,
                "snapshots": snaps,
                "best": best,
                "best_epoch": best_epoch,
            }
            save_checkpoint(checkpoint, state)
            last_save = time.monotonic()
    snaps["final"] = [group.state_dict(s) for s in range(s_n)]
    snap_epoch = {k: list(v) for k, v in snapshot_at.items()}
    snap_epoch["final"] = [epochs - 1] * s_n
    if best_key:
        snap_epoch[best_key] = best_epoch
    return RunOutput(losses, lrs, secs, preds, rho, snaps, snap_epoch)


def _mean_defined(rhos: np.ndarray) -> str:
    """The mean of the defined (non-NaN) Spearmans of the seeds, for the log."""
    defined = rhos[np.isfinite(rhos)]
    return f"{defined.mean():.4f}" if len(defined) else "undefined"
