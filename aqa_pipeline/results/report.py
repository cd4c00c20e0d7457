"""report.md: the protocols side by side, sigma metrics, per-fold figures and the plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from aqa_pipeline.results import plots
from aqa_pipeline.results.predictions import Predictions
from aqa_pipeline.results.protocols import SIGMA_METRICS
from aqa_pipeline.results.rundir import read_epochs


def fmt(x: Any, digits: int = 4, sign: bool = False) -> str:
    """A figure as text; "n/a" for a missing or undefined one (None, NaN)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _vs(d: dict[str, Any] | None) -> str:
    if not d:
        return "n/a"
    lo, hi = d["ci95"]
    return f"{fmt(d['difference'], sign=True)} [{fmt(lo, 3, True)}, {fmt(hi, 3, True)}]"


def protocol_table(metrics: dict[str, Any]) -> list[str]:
    """The protocols side by side, with the baseline's row and each protocol's paired
    difference to it when the run has one."""
    base = metrics.get("baseline")
    lines = [
        "| protocol | Spearman (mean +- std over seeds) | 95% CI | R-l2 (x100) | MSE | MAE "
        "| minus ridge [paired 95% CI] | selection |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, d in metrics["protocols"].items():
        ci = d["spearman_ci95"]
        lines.append(
            f"| {name} | {fmt(d['spearman'])} +- {fmt(d['spearman_std'])} | "
            f"[{fmt(ci[0], 3)}, {fmt(ci[1], 3)}] | {fmt(d['rl2'], 3)} | {fmt(d['mse'], 3)} | "
            f"{fmt(d['mae'], 3)} | {_vs(d.get('vs_baseline'))} | {d['note']} |"
        )
    if base:
        ci = base["spearman_ci95"]
        lines.append(
            f"| ridge baseline | {fmt(base['spearman'])} | [{fmt(ci[0], 3)}, {fmt(ci[1], 3)}] | "
            f"{fmt(base['rl2'], 3)} | {fmt(base['mse'], 3)} | {fmt(base['mae'], 3)} | | "
            "ridge on the per-video mean features, lambda by CV on train |"
        )
    return lines


def sigma_table(metrics: dict[str, Any]) -> list[str]:
    lines = [
        "| protocol | Gaussian NLL | coverage 50% | coverage 90% | Spearman(sigma, abs err) |",
        "|---|---|---|---|---|",
    ]
    for name, d in metrics["protocols"].items():
        if "nll" in d:
            lines.append(
                f"| {name} | {fmt(d['nll'], 3)} | {fmt(d['coverage_50'], 3)} | "
                f"{fmt(d['coverage_90'], 3)} | {fmt(d['sigma_error_spearman'], 3)} |"
            )
    return lines


def fold_table(metrics: dict[str, Any]) -> list[str]:
    names = list(metrics["protocols"])
    lines = ["| fold | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    folds = metrics["protocols"]["final"]["per_fold"]
    for fold in folds:
        cells = [fmt(metrics["protocols"][p]["per_fold"][fold]["spearman"]) for p in names]
        lines.append(f"| {fold} | " + " | ".join(cells) + " |")
    return lines


def write_report(run_dir: Path, metrics: dict[str, Any], preds: Predictions | None = None) -> Path:
    """Write run_dir/report.md and run_dir/plots/*.png; returns the report path."""
    run_dir = Path(run_dir)
    preds = preds if preds is not None else Predictions.read(run_dir / "predictions.csv")
    figs = run_dir / "plots"
    seed = metrics["seeds"][0]
    lines = [
        f"# {metrics.get('name') or metrics.get('head')} run report",
        "",
        f"- head: `{metrics.get('head')}`; labels: `{metrics.get('labels')}`",
        f"- features: `{metrics.get('features')}`",
        f"- seeds: {metrics['seeds']}; folds: {metrics['n_folds']}; test videos: "
        f"{metrics['n_test']} (per seed, all folds)",
        "",
        "## Spearman by protocol",
        "",
        "Folds are averaged with Fisher-z, then seeds. `best_on_test` picks each epoch on the",
        "test set, as the papers report: it is optimistic and is not a fair estimate. The ridge",
        "baseline is fitted on the same training rows (its lambda chosen by cross-validation",
        "on them); `minus ridge` is the head's Spearman minus ridge's on the same test videos.",
        "",
        *protocol_table(metrics),
        "",
    ]
    if metrics.get("warnings"):
        lines += ["## Warnings", "", *(f"- {w}" for w in metrics["warnings"]), ""]
    if any(k in metrics for k in SIGMA_METRICS):
        lines += ["## Uncertainty (sigma)", "", *sigma_table(metrics), ""]
        plots.calibration(preds, list(metrics["protocols"]), figs / "calibration.png")
        lines += ["![calibration](plots/calibration.png)", ""]
    if metrics["n_folds"] > 1:
        lines += ["## Per fold (Spearman, mean over seeds)", "", *fold_table(metrics), ""]
    plots.pred_vs_true(preds, "final", seed, figs / "pred_vs_true.png")
    lines += ["## Predicted vs true", "", "![pred vs true](plots/pred_vs_true.png)", ""]
    epoch_rows = read_epochs(run_dir / "epochs.csv")
    if epoch_rows:
        plots.curves(epoch_rows, figs / "curves.png")
        lines += ["## Training curves", "", "![curves](plots/curves.png)", ""]
    timelines = (
        sorted((run_dir / "timelines").glob("*.png")) if (run_dir / "timelines").is_dir() else []
    )
    if timelines:
        lines += ["## Timelines", ""] + [f"![{p.stem}](timelines/{p.name})" for p in timelines[:50]]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
