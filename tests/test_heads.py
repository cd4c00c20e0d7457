"""The head registry, output shapes, the contrastive heads' arithmetic, and that seeds
trained together (vmapped) equal seeds trained alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aqa_pipeline.config import configs_dir, load_config
from aqa_pipeline.datasets import Fold, LabelSet
from aqa_pipeline.errors import AqaError
from aqa_pipeline.features import FeatureSet, VideoRecord
from aqa_pipeline.train.config import resolve_config
from aqa_pipeline.train.data import TrainData
from aqa_pipeline.train.group import SequentialGroup, StackedGroup, build_group
from aqa_pipeline.train.heads import build_head, list_heads
from aqa_pipeline.train.inputs import VideoInputs
from aqa_pipeline.train.loop import RunPlan, run_epochs

T = torch.tensor
MINE = ("mlp", "dae", "dae_mt", "usdl", "musdl", "core", "dae_core")


def test_registry_lists_every_head_and_rejects_unknown_options():
    assert set(MINE) <= set(list_heads())
    with pytest.raises(AqaError, match="unknown head 'nope'"):
        build_head("nope", 8)
    with pytest.raises(AqaError, match=r"unknown key head\.lr"):
        build_head("dae", 8, lr=1e-3)
    with pytest.raises(AqaError, match=r"head\.loss = 'kl'"):
        build_head("dae", 8, loss="kl")
    with pytest.raises(AqaError, match="num_paths"):
        build_head("musdl", 8)


@pytest.mark.parametrize(
    "name,opts,x_shape",
    [
        ("mlp", {}, (5, 16)),
        ("dae", {}, (5, 16)),
        ("dae_mt", {"paths": "judges", "num_paths": 7, "combine": "middle3"}, (5, 16)),
        ("usdl", {"num_bins": 11, "score_range": [0, 1]}, (5, 16)),
        ("musdl", {"num_paths": 7}, (5, 16)),
        ("core", {}, (5, 3, 2 * 16 + 2)),
        ("dae_core", {}, (5, 3, 2 * 16 + 2)),
    ],
)
def test_heads_give_a_score_per_video(name, opts, x_shape):
    head = build_head(name, 16, **opts)
    out = head(torch.randn(*x_shape))
    assert out["score"].shape == (5,)
    batch = {
        "target": torch.rand(5),
        "difficulty": torch.full((5,), 2.0),
        "judges": torch.rand(5, 7),
        "epoch": 0,
    }
    loss = head.loss(out, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())
    pred = head.predict(out, batch)
    assert pred["score"].shape == (5,)


def test_dae_outputs_sigma_and_samples_around_mu():
    head = build_head("dae", 8)
    torch.manual_seed(0)
    out = head(torch.randn(4000, 8))
    z = (out["sample"] - out["mu"]) / out["sigma"]
    assert z.mean().abs() < 0.1 and z.std().item() == pytest.approx(1.0, abs=0.1)
    assert torch.allclose(out["sigma"], torch.exp(0.5 * out["logvar"]))
    pred = head.predict(out, {})
    assert torch.equal(pred["score"], out["mu"]) and torch.equal(pred["sigma"], out["sigma"])


def _zero_delta(head):
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()


def test_core_predicts_exemplar_score_plus_delta_with_difficulty():
    d = 4
    x = torch.zeros(1, 2, 2 * d + 2)
    x[0, :, 2 * d] = T([0.4, 0.6])  # exemplar targets
    x[0, :, 2 * d + 1] = T([2.0, 3.0])  # exemplar DDs -> bases 0.2, 0.2
    head = build_head("core", d, difficulty=True)
    _zero_delta(head)
    out = head(x)
    pred = head.predict(out, {"difficulty": T([2.5])})
    assert pred["score"].item() == pytest.approx(0.5)
    plain = build_head("core", d, difficulty=False)
    _zero_delta(plain)
    assert plain(x)["score"].item() == pytest.approx(0.5)  # mean of 0.4 and 0.6
    with torch.no_grad():
        plain.delta.bias.fill_(0.1)
    assert plain(x)["score"].item() == pytest.approx(0.6)
    loss = plain.loss(plain(x), {"target": T([0.6])})
    assert loss.item() == pytest.approx(((0.5 - 0.6) ** 2 + (0.7 - 0.6) ** 2) / 2)


def test_dae_core_sigma_is_the_mixture_std():
    d = 4
    x = torch.zeros(1, 2, 2 * d + 2)
    x[0, :, 2 * d] = T([0.4, 0.8])
    x[0, :, 2 * d + 1] = 1.0
    head = build_head("dae_core", d)
    _zero_delta(head)
    with torch.no_grad():
        head.gauss.logvar.bias.fill_(math.log(0.01))
    out = head(x)
    assert out["score"].item() == pytest.approx(0.6)
    # mean variance 0.01 + variance of the means (0.4, 0.8) = 0.04
    assert out["sigma"].item() == pytest.approx(math.sqrt(0.05))


def _tiny_data(n: int = 40, d: int = 8, seed: int = 0) -> TrainData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    ids = [f"v{i}" for i in range(n)]
    fs = FeatureSet.from_records(
        [
            VideoRecord(video_id=v, clip_features=x[i : i + 1], clip_frames=np.array([[0, 8]]))
            for i, v in enumerate(ids)
        ],
        d,
    )
    labels = LabelSet("t", "t", ids, x[:, 0] * 2 + 5, [Fold("f", np.arange(30), np.arange(30, n))])
    return TrainData.build(fs, labels, 10.0, clips=False, cache="t")


def test_stacked_seeds_train_exactly_like_seeds_alone():
    """Two seeds vmapped with one optimiser == each seed with its own (same init, same
    batches): the elementwise optimiser update makes stacking exact."""
    data = _tiny_data()
    cfg = resolve_config(
        {
            "head": {"name": "mlp"},
            "optim": {"name": "adam", "lr": 1e-2, "weight_decay": 1e-3},
            "train": {"epochs": 3, "batch_size": 8},
            "schedule": {"name": "cosine"},
        }
    )
    train = np.arange(30)
    test = np.arange(30, 40)

    def run(seeds):
        group = build_group(lambda: build_head("mlp", 8), seeds, cfg, 4, torch.device("cpu"))
        plan = RunPlan.of(
            cfg, np.tile(train, (len(seeds), 1)), {"test": np.tile(test, (len(seeds), 1))}, seeds
        )
        out = run_epochs(group, data, VideoInputs(data), plan)
        return group, out

    group, both = run([3, 4])
    assert isinstance(group, StackedGroup)
    alone = [run([s])[1] for s in (3, 4)]
    assert isinstance(run([3])[0], SequentialGroup)
    for s in range(2):
        np.testing.assert_allclose(
            both.preds["test"]["score"][:, s],
            alone[s].preds["test"]["score"][:, 0],
            rtol=1e-4,
            atol=1e-5,
        )
        np.testing.assert_allclose(both.train_loss[:, s], alone[s].train_loss[:, 0], rtol=1e-4)
    # and the two seeds really differ
    assert not np.allclose(both.preds["test"]["score"][:, 0], both.preds["test"]["score"][:, 1])


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for p in configs_dir("train").glob("*.yaml")
        if not p.stem.startswith(("interaqa_", "gdlt_"))  # test_longform_heads checks those
    ),
    ids=lambda p: p.stem,
)
def test_shipped_configs_resolve_and_build_their_head(path):
    """Every averaged-feature config shipped in aqa_pipeline/configs/train/ passes the config
    checks and builds its head on 1024-d features (multi-path heads with 7 paths)."""
    cfg = resolve_config(load_config(path))
    opts = cfg.head_options()
    if opts.get("paths") not in (None, "none") and opts.get("num_paths") is None:
        opts["num_paths"] = 7
    head = build_head(cfg.head_name, 1024, **opts)
    assert head.input_kind in ("video", "pairs")
    shape = (2, 3, 1024 * 2 + 2) if head.input_kind == "pairs" else (2, 1024)  # 3 exemplars
    out = head(torch.randn(shape))
    assert out["score"].shape == (2,) and torch.isfinite(out["score"]).all()


# -- every head declares its options as one typed model -----------------------------------

LONGFORM = ("gdlt", "interaqa")


def _int_option(options_cls) -> str | None:
    """A field whose default is an int or a tuple of ints (a string is the wrong type)."""
    for key, field in options_cls.model_fields.items():
        value = field.default
        if isinstance(value, int) and not isinstance(value, bool):
            return key
        if isinstance(value, tuple) and value and all(isinstance(v, int) for v in value):
            return key
    return None


@pytest.mark.parametrize("name", list_heads())
def test_every_head_declares_typed_options(name):
    from aqa_pipeline.train.heads import head_class, head_options
    from aqa_pipeline.train.heads.base import HeadOptions

    cls = head_class(name)
    assert issubclass(cls.Options, HeadOptions)
    defaults = cls.Options()  # every option has a default that validates
    assert head_options(name, {}) == defaults == cls.options()
    assert cls.Options.model_validate(defaults.plain()) == defaults  # the config round trip
    if name not in (*MINE, *LONGFORM) and not cls.Options.model_fields:
        return  # a test-only head without options
    assert cls.Options is not HeadOptions and cls.Options.model_fields, name
    # an unknown key: a one-letter typo of the longest option names it
    key = max(cls.Options.model_fields, key=len)
    typo = key[:1] + key[2:]
    with pytest.raises(AqaError, match=f"unknown key head.{typo}.*did you mean {key}"):
        head_options(name, {typo: 1})
    with pytest.raises(AqaError, match="did you mean"):
        build_head(name, 16, **{typo: 1})
    # a wrong type: a word for an integer option
    int_key = _int_option(cls.Options)
    assert int_key is not None, name
    with pytest.raises(AqaError, match=rf"head\.{int_key}\b"):
        head_options(name, {int_key: "many"})
    with pytest.raises(AqaError, match=rf"head\.{int_key}\b"):
        build_head(name, 16, **{int_key: "many"})


def test_options_refuse_bad_values_before_the_head_is_built():
    from aqa_pipeline.train.heads import head_class, head_options

    bad = [
        ("dae", {"loss": "kl"}, "head.loss"),
        ("dae", {"predict": "median"}, "head.predict"),
        ("dae_core", {"alpha": -1.0}, "head.alpha"),
        ("dae_mt", {"paths": "judgez"}, "head.paths"),
        ("dae_mt", {"combine": "middle3"}, "middle3 needs at least 3 paths"),  # paths none
        ("musdl", {"num_paths": 2}, "middle3 needs at least 3 paths"),  # default combine
        ("musdl", {"num_paths": 0}, "head.num_paths"),
        ("usdl", {"score_range": [5.0, 1.0]}, "head.score_range needs lo < hi"),
        ("usdl", {"num_bins": 1}, "head.num_bins"),
        ("usdl", {"std": 0.0}, "head.std"),
        ("usdl", {"readout": "median"}, "head.readout"),
        ("mlp", {"hidden": [256, -1]}, "head.hidden"),
        ("gdlt", {"num_grades": 1}, "head.num_grades"),
        ("gdlt", {"dropout": 1.5}, "head.dropout"),
        ("gdlt", {"num_heads": 3}, "not divisible by head.num_heads=3"),
        ("interaqa", {"preset": "fast"}, "head.preset"),
        ("interaqa", {"self_attn_residual": "none"}, "head.self_attn_residual"),
    ]
    for name, opts, message in bad:
        with pytest.raises(AqaError, match=message.replace(".", r"\.")):
            head_options(name, opts)
    # num_paths is filled from the labels after parsing: the config may leave it out, the
    # build may not; the multi-path heads' `paths` default is an Options field
    assert head_options("musdl", {}).num_paths is None
    with pytest.raises(AqaError, match="num_paths"):
        build_head("musdl", 8)
    assert head_class("dae_mt").Options.model_fields["paths"].default == "none"
    assert head_class("musdl").Options.model_fields["paths"].default == "judges"
    # an Options instance (what the train config holds) builds the head; keywords add to it
    opts = head_options("musdl", {"paths": "subscores", "combine": "sum", "num_bins": 5})
    head = build_head("musdl", 8, opts, num_paths=6)
    assert len(head.path_nets) == 6 and head.requires[0] == "subscores" and head.bins.num_bins == 5
    assert head.opts.num_paths == 6 and opts.num_paths is None  # options are frozen values


def test_long_form_heads_share_one_score_dist_section():
    from aqa_pipeline.config import apply_overrides
    from aqa_pipeline.train.heads import head_class, head_options
    from aqa_pipeline.train.heads.common import ScoreDist

    for name in LONGFORM:
        field = head_class(name).Options.model_fields["score_dist"]
        assert field.annotation is ScoreDist and field.default == ScoreDist()
        assert ScoreDist() == ScoreDist(kind="none", loss="weighted", alpha=0.6, beta=0.4)
        # a string is the kind: `--set head.score_dist=dae`
        assert head_options(name, {"score_dist": "dae"}).score_dist == ScoreDist(kind="dae")
        cfg = apply_overrides(
            {"head": {"name": name, "score_dist": {"kind": "none", "loss": "weighted"}}},
            ["head.score_dist.kind=dae", "head.score_dist.loss=likelihood"],
        )
        sd = head_options(name, {k: v for k, v in cfg["head"].items() if k != "name"}).score_dist
        assert sd == ScoreDist(kind="dae", loss="likelihood")
        assert head_options(name, {}).plain()["score_dist"] == {
            "kind": "none", "loss": "weighted", "alpha": 0.6, "beta": 0.4}  # fmt: skip
        with pytest.raises(AqaError, match=r"head\.score_dist\.kind"):
            head_options(name, {"score_dist": "gauss"})
        with pytest.raises(
            AqaError, match=r"unknown key head\.score_dist\.los\b.*did you mean loss"
        ):
            head_options(name, {"score_dist": {"kind": "dae", "los": "weighted"}})
        # the old flat names are refused with their new place
        for old, new in (("dae_loss", "loss"), ("dae_alpha", "alpha"), ("dae_beta", "beta")):
            with pytest.raises(AqaError, match=rf"head\.{old}; it is now head\.score_dist\.{new}"):
                head_options(name, {"score_dist": "dae", old: 0.5})
    small = {"gdlt": {"hidden_dim": 16, "ffn_dim": 24}, "interaqa": {"num_heads": 2, "ffn_dim": 32}}
    for name in LONGFORM:
        plain = build_head(name, 32, **small[name])
        dae = build_head(name, 32, score_dist="dae", **small[name])
        assert plain.score_dist == ScoreDist() and dae.score_dist.dae
        assert "sigma" not in plain(torch.randn(2, 5, 32)) and "sigma" in dae(torch.randn(2, 5, 32))


def test_has_sigma_says_whether_predict_reports_one():
    """eval.calibrate_sigma relies on it (train/fold.py) to add its reference rows."""
    x = torch.randn(4, 16)
    for name, opts, want in [("dae", {}, True), ("mlp", {}, False), ("usdl", {}, True)]:
        head = build_head(name, 16, **opts)
        assert head.has_sigma is want, name
        head.eval()
        pred = head.predict(head(x), {"difficulty": torch.ones(4)})
        assert (pred.get("sigma") is not None) is want, name
    assert not build_head("gdlt", 16).has_sigma
    assert build_head("gdlt", 16, score_dist="dae").has_sigma
    assert build_head("interaqa", 16, score_dist={"kind": "dae"}).has_sigma
