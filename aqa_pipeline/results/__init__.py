"""The stage-2 results contract, as features/ is for stage 1: what `aqa train` writes and
`aqa evaluate` reads.

    rundir.py       the run directory's files (config, environment, epochs, heads, clip outputs)
                    and how a finished run is published
    predictions.py  predictions.csv: one row per (protocol, fold, seed, video)
    protocols.py    metrics.json: final / val / best_on_test side by side, with intervals
    metrics.py      Spearman, R-l2, calibration, bootstrap intervals
    report.py       report.md and its plots (plots.py)
"""
