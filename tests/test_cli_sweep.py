"""`aqa train` with several configs runs a sweep; `aqa evaluate --sweep` tabulates it."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from aqa_pipeline.cli import main

from .train_fixtures import config, make_cache, write_labels


def test_local_sweep_of_two_configs_and_two_seeds(tmp_path):
    cache, scores = make_cache(tmp_path / "c.h5", n=24)
    labels = write_labels(tmp_path / "labels.csv", scores)
    configs = []
    for name in ("mlp", "dae"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**config(name, epochs=3), "name": name}))
        configs.append(path)
    sweep = tmp_path / "sweep"
    args = ["train", "--config", configs[0], "--config", configs[1], "--features", cache,
            "--labels", f"csv:{labels}", "--run-dir", sweep, "--seeds", "2"]  # fmt: skip
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    runs = sorted(p.name for p in (sweep / "runs").iterdir())
    assert len(runs) == 4 and all((sweep / "runs" / r / "metrics.json").exists() for r in runs)
    table = CliRunner().invoke(main, ["evaluate", "--sweep", str(sweep)], catch_exceptions=False)
    assert table.exit_code == 0
    assert "mlp" in table.output and "dae" in table.output and "spearman" in table.output
    res = CliRunner().invoke(main, ["evaluate"])
    assert res.exit_code == 2 and "--run-dir, --sweep or --checkpoint" in res.output
