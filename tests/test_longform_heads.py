"""InterAQA and GDLT heads: masks, the attention and triplet losses, the weight-score and
Likert outputs, the configs, and a short real training run on Fis-V features."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from aqa_pipeline.config import configs_dir
from aqa_pipeline.train.heads import build_head
from aqa_pipeline.train.heads.gdlt import MaskedBatchNorm1d
from aqa_pipeline.train.losses_longform import attention_gram_kl, hardest_triplet_loss
from tests.conftest import needs_shared

CONFIGS = configs_dir("train")
SMALL_INTERAQA = {"num_heads": 2, "ffn_dim": 32}
SMALL_GDLT = {"hidden_dim": 16, "ffn_dim": 24}


def padded_batch(lengths: list[int], dim: int, fill: float, seed: int = 0):
    """Random clip features (B, T_max, dim) with `fill` in the padding, and the mask."""
    g = torch.Generator().manual_seed(seed)
    t_max = max(lengths)
    x = torch.full((len(lengths), t_max, dim), fill)
    mask = torch.zeros(len(lengths), t_max, dtype=torch.bool)
    for i, t in enumerate(lengths):
        x[i, :t] = torch.randn(t, dim, generator=g)
        mask[i, :t] = True
    return x, mask


def run(head: nn.Module, x: torch.Tensor, mask: torch.Tensor | None, seed: int = 0):
    torch.manual_seed(seed)  # the same dropout masks and query noise for both calls
    return head(x, mask)


# -- masks: padded positions change nothing ---------------------------------------------


@pytest.mark.parametrize(
    "name, opts",
    [
        ("interaqa", {"preset": "clean"}),
        ("interaqa", {"preset": "paper", "query": "learned", "max_queries": 16, "padding": "mask"}),
        ("gdlt", {}),
    ],
)
def test_eval_outputs_ignore_padding_and_batch_mates(name, opts):
    torch.manual_seed(0)
    small = SMALL_INTERAQA if name == "interaqa" else SMALL_GDLT
    head = build_head(name, 32, **small, **opts).eval()
    lengths = [9, 5, 7]
    x, mask = padded_batch(lengths, 32, fill=1e3)
    with torch.no_grad():
        out = head(x, mask)
        for i, t in enumerate(lengths):
            alone = head(x[i : i + 1, :t], None)
            assert torch.allclose(out["score"][i], alone["score"][0], atol=1e-5)
            assert torch.allclose(out["clip_scores"][i, :t], alone["clip_scores"][0], atol=1e-5)
            assert torch.allclose(out["clip_weights"][i, :t], alone["clip_weights"][0], atol=1e-6)
            assert torch.all(out["clip_weights"][i, t:] == 0)


@pytest.mark.parametrize(
    "name, opts",
    [
        ("interaqa", {"preset": "paper", "padding": "mask"}),
        ("interaqa", {"preset": "clean"}),
        ("gdlt", {"padding": "mask"}),
    ],
)
def test_training_loss_and_gradients_ignore_padding_values(name, opts):
    """Train mode (dropout, noise queries, batch-norm statistics): the padding's content
    changes neither the loss nor any gradient."""
    small = SMALL_INTERAQA if name == "interaqa" else SMALL_GDLT
    torch.manual_seed(0)
    head = build_head(name, 32, **small, **opts).train()
    target = torch.tensor([0.3, 0.6, 0.5])
    results = []
    for fill in (0.0, -50.0):
        x, mask = padded_batch([8, 4, 6], 32, fill=fill)
        head.zero_grad()
        loss = head.loss(run(head, x, mask), {"target": target})  # as the loop calls it
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in head.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.isfinite(loss_a)
    assert torch.allclose(loss_a, loss_b, rtol=1e-5)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        assert torch.allclose(ga, gb, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "name, opts, train",
    [
        ("interaqa", {"preset": "paper"}, True),
        ("interaqa", {"preset": "paper"}, False),
        ("gdlt", {}, True),
    ],
)
def test_zeros_padding_feeds_zero_clips_like_the_authors_loaders(name, opts, train):
    """padding: zeros (the paper preset, GDLT's default in training): the padded positions
    are zero clips the model sees, whatever they hold, as the authors' loaders zero-pad
    and their models take no mask; so the outputs differ from the masked ones."""
    small = SMALL_INTERAQA if name == "interaqa" else SMALL_GDLT
    torch.manual_seed(0)
    head = build_head(name, 32, **small, **opts).train(train)
    x, mask = padded_batch([8, 4, 6], 32, fill=-50.0)
    zeros = x * mask[..., None]
    got = run(head, x, mask)["score"]
    assert torch.allclose(got, run(head, zeros, None)["score"], atol=1e-6)
    masked = build_head(name, 32, **small, **{**opts, "padding": "mask"}).train(train)
    masked.load_state_dict(head.state_dict())
    assert not torch.allclose(got, run(masked, x, mask)["score"], atol=1e-4)


def test_interaqa_loss_of_a_padded_video_equals_its_loss_alone():
    """Padded queries stay out of the attention loss: padding a video to 9 clips leaves
    its loss (MSE + attention loss) as it is at its own 5 clips."""
    torch.manual_seed(0)
    head = build_head("interaqa", 32, preset="clean", pred_noise=0.0, **SMALL_INTERAQA).eval()
    x, mask = padded_batch([5, 9], 32, fill=3.0)
    target = {"target": torch.tensor([0.4])}
    padded = head.loss(head(x[:1], mask[:1]), target)
    alone = head.loss(head(x[:1, :5], None), target)
    assert padded.item() == pytest.approx(alone.item(), rel=1e-5)


def test_masked_batch_norm_uses_only_real_clips():
    torch.manual_seed(0)
    x, mask = padded_batch([6, 3, 5], 4, fill=7.0)
    x = x * 3 + 1
    ours, ref = MaskedBatchNorm1d(4), nn.BatchNorm1d(4)
    y = ours(x, mask)
    real = x[mask]  # (14, 4): what nn.BatchNorm1d should see
    expected = ref(real)
    assert torch.allclose(y[mask], expected, atol=1e-5)
    assert torch.all(y[~mask] == 0)
    assert torch.allclose(ours.running_mean, ref.running_mean, atol=1e-6)
    assert torch.allclose(ours.running_var, ref.running_var, atol=1e-6)
    # without a mask it is nn.BatchNorm1d over (B, C, T)
    ref2 = nn.BatchNorm1d(4)
    assert torch.allclose(
        MaskedBatchNorm1d(4)(x, None), ref2(x.transpose(1, 2)).transpose(1, 2), atol=1e-5
    )


# -- the attention loss ----------------------------------------------------------------


def _softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_attention_loss_matches_hand_computation():
    a_s = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (B=1, Q=2, D=2)
    a_c = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    # G = A A^T / D: G_S = [[.5, 0], [0, .5]], G_C = [[1, .5], [.5, .5]]
    g_s = [[0.5, 0.0], [0.0, 0.5]]
    g_c = [[1.0, 0.5], [0.5, 0.5]]
    expected = 0.0
    for rs, rc in zip(g_s, g_c, strict=True):
        ps, pc = _softmax(rs), _softmax(rc)
        expected += sum(c * math.log(c / s) for s, c in zip(ps, pc, strict=True))
    got = attention_gram_kl(a_s, a_c)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # KL(P_C || P_S), not the reverse
    reverse = attention_gram_kl(a_c, a_s)
    assert reverse.item() != pytest.approx(expected, rel=1e-3)
    # summed over the batch
    assert attention_gram_kl(a_s.repeat(3, 1, 1), a_c.repeat(3, 1, 1)).item() == pytest.approx(
        3 * expected, rel=1e-6
    )


def test_attention_loss_leaves_out_padded_queries():
    a_s = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, -4.0]]], requires_grad=True)
    a_c = torch.tensor([[[1.0, 1.0], [0.0, 1.0], [-7.0, 3.0]]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    masked = attention_gram_kl(a_s, a_c, mask)
    plain = attention_gram_kl(a_s[:, :2].detach(), a_c[:, :2].detach())
    assert masked.item() == pytest.approx(plain.item(), rel=1e-6)
    masked.backward()
    assert torch.isfinite(a_s.grad).all() and torch.isfinite(a_c.grad).all()
    assert torch.all(a_s.grad[0, 2] == 0) and torch.all(a_c.grad[0, 2] == 0)
    assert a_c.grad[0, :2].abs().sum() > 0  # both sides of the KL get gradients


# -- outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["paper", "clean"])
def test_interaqa_weight_score_sum(preset):
    torch.manual_seed(0)
    head = build_head("interaqa", 32, preset=preset, padding="mask", **SMALL_INTERAQA).eval()
    x, mask = padded_batch([7, 4], 32, fill=0.0)
    with torch.no_grad():
        out = head(x, mask)
    w, s = out["clip_weights"], out["clip_scores"]
    assert w.shape == s.shape == (2, 7)
    assert torch.allclose(w.sum(dim=1), torch.ones(2), atol=1e-6)
    assert torch.all(w >= 0) and torch.all(w[1, 4:] == 0)
    assert torch.allclose(out["score"], (w * s).sum(dim=1), atol=1e-6)


def test_interaqa_noise_queries_are_redrawn_but_learned_ones_are_not():
    x, mask = padded_batch([6, 6], 32, fill=0.0)
    for preset, differs in (("paper", True), ("clean", False)):
        torch.manual_seed(0)
        head = build_head("interaqa", 32, preset=preset, **SMALL_INTERAQA).eval()
        with torch.no_grad():
            a, b = head(x, mask)["score"], head(x, mask)["score"]
        assert (not torch.allclose(a, b)) == differs


def test_interaqa_dropped_residual_option_changes_the_model():
    x, mask = padded_batch([6], 32, fill=0.0)
    outs = []
    for residual in ("dropped", "standard"):
        torch.manual_seed(0)
        head = build_head("interaqa", 32, preset="clean", self_attn_residual=residual,
                          **SMALL_INTERAQA).eval()  # fmt: skip
        with torch.no_grad():
            outs.append(head(x, mask)["score"])
    assert not torch.allclose(outs[0], outs[1])


def test_gdlt_likert_output_by_hand():
    torch.manual_seed(0)
    head = build_head("gdlt", 32, **SMALL_GDLT).eval()
    with torch.no_grad():
        head.regressor.weight.zero_()
        head.regressor.bias.copy_(torch.tensor([-1.0, 0.0, 2.0, 0.5]))
        x, mask = padded_batch([5, 3], 32, fill=0.0)
        out = head(x, mask)
    sig = [1 / (1 + math.exp(-b)) for b in (-1.0, 0.0, 2.0, 0.5)]
    grades = [0.0, 1 / 3, 2 / 3, 1.0]
    expected = sum(v * s for v, s in zip(grades, sig, strict=True)) / sum(sig)
    assert torch.allclose(out["score"], torch.full((2,), expected), atol=1e-6)
    # the clip decomposition adds up to the score
    w, s = out["clip_weights"], out["clip_scores"]
    assert torch.allclose((w * s).sum(dim=1), out["score"], atol=1e-6)
    assert torch.allclose(w.sum(dim=1), torch.ones(2), atol=1e-6)
    assert torch.all(w[1, 3:] == 0)


def test_gdlt_score_is_the_diagonal_of_the_regressor():
    torch.manual_seed(1)
    head = build_head("gdlt", 32, **SMALL_GDLT).eval()
    x, mask = padded_batch([6, 6], 32, fill=0.0)
    with torch.no_grad():
        out = head(x, mask)
        full = head.regressor(out["embed"])  # (B, G, G)
        s = torch.diagonal(full, dim1=1, dim2=2)
    p = torch.sigmoid(s) / torch.sigmoid(s).sum(dim=1, keepdim=True)
    assert torch.allclose(out["grade_probs"], p, atol=1e-6)
    assert torch.allclose(out["score"], (p * torch.linspace(0, 1, 4)).sum(dim=1), atol=1e-6)
    assert torch.all((out["score"] >= 0) & (out["score"] <= 1))


# -- the triplet loss ------------------------------------------------------------------


def test_hardest_triplet_loss_by_hand():
    emb = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # cosine distances: d(0,1)=.2 d(0,2)=1 d(0,3)=2 d(1,2)=.4 d(1,3)=1.8 d(2,3)=1
    # anchor: hardest pos - hardest neg + 1 -> .2-1+1, .2-.4+1, 1-.4+1, 1-1.8+1
    expected = (0.2 + 0.8 + 1.6 + 0.2) / 4
    assert hardest_triplet_loss(emb, labels, margin=1.0).item() == pytest.approx(expected, abs=1e-6)
    # cosine: the scale of each embedding does not matter; hinge at 0 with margin 0
    scaled = emb * torch.tensor([[3.0], [0.5], [2.0], [7.0]])
    assert hardest_triplet_loss(scaled, labels, 1.0).item() == pytest.approx(expected, abs=1e-6)
    assert hardest_triplet_loss(emb, labels, margin=0.0).item() == pytest.approx(0.6 / 4, abs=1e-6)


def test_gdlt_loss_adds_the_triplet_term_on_grade_queries():
    torch.manual_seed(0)
    x, mask = padded_batch([6, 6, 6], 32, fill=0.0)
    batch = {"target": torch.tensor([0.2, 0.5, 0.9]), "mask": mask}
    losses = []
    for alpha in (0.0, 0.5):
        torch.manual_seed(0)
        head = build_head("gdlt", 32, alpha=alpha, dropout=0.0, **SMALL_GDLT).eval()
        out = head(x, mask)
        losses.append(head.loss(out, batch))
        emb = out["embed"]
    triplet = hardest_triplet_loss(emb.reshape(12, -1), torch.arange(4).repeat(3), 1.0)
    assert losses[1].item() == pytest.approx(losses[0].item() + 0.5 * triplet.item(), rel=1e-5)


# -- score distributions ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["interaqa", "gdlt"])
def test_dae_score_distribution_option(name):
    small = SMALL_INTERAQA if name == "interaqa" else SMALL_GDLT
    torch.manual_seed(0)
    head = build_head(name, 32, score_dist="dae", **small).train()
    x, mask = padded_batch([6, 4], 32, fill=0.0)
    out = head(x, mask)
    assert out["sigma"].shape == (2,) and torch.all(out["sigma"] > 0)
    loss = head.loss(out, {"target": torch.tensor([0.4, 0.7]), "mask": mask})
    loss.backward()
    logvar_params = head.logvar_mlp if name == "interaqa" else head.logvar_head
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in logvar_params.parameters())
    pred = head.predict(out, {})
    assert pred["sigma"] is not None and torch.equal(pred["score"], out["score"])


@pytest.mark.parametrize("name", ["interaqa", "gdlt"])
def test_dae_loss_option_selects_the_likelihood_form(name):
    from aqa_pipeline.train.losses import dae_likelihood_loss, weighted_likelihood_loss

    # the score loss alone: no attention loss (InterAQA) or triplet loss (GDLT)
    opts = {**SMALL_INTERAQA, "attn_loss_weight": 0.0} if name == "interaqa" else {
        **SMALL_GDLT, "alpha": 0.0}  # fmt: skip
    target = torch.tensor([0.4, 0.7])
    x, mask = padded_batch([6, 4], 32, fill=0.0)
    for kind, fn in (("weighted", weighted_likelihood_loss), ("likelihood", dae_likelihood_loss)):
        torch.manual_seed(0)
        head = build_head(name, 32, score_dist={"kind": "dae", "loss": kind}, **opts).eval()
        out = head(x, mask)
        expect = fn(out["score"], out["logvar"], target, 0.6, 0.4).item()
        got = head.loss(out, {"target": target, "mask": mask}).item()
        assert got == pytest.approx(expect, rel=1e-6)
    assert weighted_likelihood_loss(out["score"], out["logvar"], target).item() != pytest.approx(
        expect, rel=1e-3
    )


def test_unknown_options_are_clear_errors():
    from aqa_pipeline.errors import AqaError

    with pytest.raises(AqaError, match="preset"):
        build_head("interaqa", 32, preset="fast")
    with pytest.raises(AqaError, match="query"):
        build_head("interaqa", 32, query="random")
    with pytest.raises(AqaError, match="score_dist"):
        build_head("gdlt", 32, score_dist="gauss")
    with pytest.raises(AqaError, match="score_dist.loss"):
        build_head("interaqa", 32, score_dist={"kind": "dae", "loss": "nll"})
    head = build_head("interaqa", 32, query="learned", max_queries=4, **SMALL_INTERAQA)
    with pytest.raises(AqaError, match="max_queries"):
        head(torch.zeros(1, 6, 32))


@pytest.mark.parametrize(
    "path",
    sorted(CONFIGS.glob("interaqa_*.yaml")) + sorted(CONFIGS.glob("gdlt_*.yaml")),
    ids=lambda p: p.stem,
)
def test_configs_build_their_head(path):
    cfg = yaml.safe_load(path.read_text())
    opts = {k: v for k, v in cfg["head"].items() if k != "name"}
    head = build_head(cfg["head"]["name"], 1024, **opts)
    assert head.input_kind == "clips"
    assert cfg["label"]["scale"] in (25, 43, 100)
    assert cfg["data"]["test_crop"] in ("crop", "full")


# -- a short real training run ---------------------------------------------------------


def test_short_fisv_training_beats_a_constant_predictor():
    """A small GDLT trained for 10 epochs on the 400 Fis-V training programs (each averaged
    into 16 segments, random 12-segment crops): on the 100 test programs its PCS predictions
    beat the train-mean constant (MSE) and rank the programs (Spearman)."""
    from scipy.stats import spearmanr

    from aqa_pipeline.datasets.fisv import read_fisv

    root = needs_shared("data", "fisv")
    rows = read_fisv(root, "PCS")

    def load(split):
        part = [r for r in rows if r[2] == split]
        segments = []
        for vid, *_ in part:
            clips = np.load(root / "swintx_avg_fps25_clip32" / f"{vid}.npy").astype(np.float32)
            segments.append(np.stack([c.mean(axis=0) for c in np.array_split(clips, 16)]))
        x = torch.from_numpy(np.stack(segments))
        return x, torch.tensor([r[1] / 43 for r in part], dtype=torch.float32)

    x_train, y_train = load("train")
    x_test, y_test = load("test")
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    head = build_head("gdlt", 1024, hidden_dim=64, ffn_dim=128, dropout=0.1, alpha=0.1)
    epochs = 10
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        head.train()
        perm = torch.randperm(len(x_train), generator=g)
        for i in range(0, len(perm), 32):
            idx = perm[i : i + 32]
            start = int(torch.randint(0, 16 - 12 + 1, (1,), generator=g))
            loss = head.loss(head(x_train[idx, start : start + 12]), {"target": y_train[idx]})
            opt.zero_grad()
            loss.backward()
            opt.step()
        schedule.step()
    head.eval()
    with torch.no_grad():
        pred = head(x_test)["score"]
    mse = torch.mean((pred - y_test) ** 2).item()
    constant = torch.mean((y_train.mean() - y_test) ** 2).item()
    rho = spearmanr(pred.numpy(), y_test.numpy())[0]
    assert mse < 0.8 * constant, (mse, constant)
    assert rho > 0.4, rho


# -- through the training loop ---------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        {
            "name": "interaqa",
            "preset": "paper",
            "padding": "mask",
            "score_dist": "dae",
            **SMALL_INTERAQA,
        },
        {"name": "gdlt", **SMALL_GDLT},
    ],
    ids=["interaqa-paper-dae", "gdlt"],
)
def test_heads_train_in_the_loop_and_keep_clip_outputs(tmp_path: Path, head: dict):
    """run_training on a tiny ragged clip cache: metrics for the three protocols, and per
    test video the clip scores and weights of its real clips, which add up to the score."""
    from aqa_pipeline.datasets import Fold, LabelSet
    from aqa_pipeline.features.store import FeatureSet, VideoRecord
    from aqa_pipeline.results.predictions import Predictions
    from aqa_pipeline.results.rundir import read_clip_outputs
    from aqa_pipeline.train import run_training

    rng = np.random.default_rng(0)
    records, scores = [], []
    for i in range(20):
        t = int(rng.integers(4, 11))
        clips = rng.normal(size=(t, 32)).astype(np.float32)
        starts = np.arange(t) * 16
        frames = np.stack([starts, starts + 16], axis=1)
        records.append(VideoRecord(f"v{i}", clip_features=clips, clip_frames=frames))
        scores.append(float(clips[:, 0].sum()) + 10.0)
    fs = FeatureSet.from_records(records, 32)
    labels = LabelSet(
        name="toy", source="toy", video_ids=[r.video_id for r in records], score=scores,
        folds=[Fold("split", np.arange(14), np.arange(14, 20))],
    )  # fmt: skip
    cfg = {
        "head": head,
        "label": {"scale": 20},
        "data": {"clip_num": 6, "train_crop": "random", "test_crop": "full"},
        "train": {"epochs": 2, "batch_size": 4, "seeds": 2},
        "eval": {"val_fraction": 0.25, "bootstrap": 10},
        "test": {"batch_size": 4},
    }
    metrics = run_training(cfg, fs, labels, tmp_path, None)
    for key in ("spearman", "spearman_val", "spearman_best_on_test"):
        assert np.isfinite(metrics[key])
    preds = Predictions.read(tmp_path / "predictions.csv")
    clips = read_clip_outputs(tmp_path / "clip_outputs.h5", "final", 0)
    assert sorted(clips) == sorted(f"v{i}" for i in range(14, 20))
    sel = preds.select("final", "split", 0)
    for vid, pred in zip(sel["video_id"], sel["pred"], strict=True):
        rec = clips[vid]
        n = len(records[int(vid[1:])].clip_features)
        assert len(rec["clip_weights"]) == len(rec["clip_scores"]) == n  # the whole video
        assert rec["clip_frames"][-1, 1] == 16 * n
        assert rec["clip_weights"].sum() == pytest.approx(1.0, abs=1e-5)
        total = float((rec["clip_weights"] * rec["clip_scores"]).sum())
        assert total == pytest.approx(pred, rel=1e-4, abs=1e-4)


def test_fast_dropout_keeps_the_right_fraction_and_scale():
    from aqa_pipeline.train.heads.common import FastDropout, use_fast_dropout

    drop = FastDropout(0.7)
    x = torch.ones(64, 125, 33)  # an element count that is not a multiple of 4
    torch.manual_seed(0)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.3) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.3))
    assert abs(y.mean().item() - 1.0) < 0.02  # unbiased, as nn.Dropout
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # seeded by torch's generator
    assert not torch.equal(drop(x), y)  # a fresh mask every call
    g = torch.ones_like(x, requires_grad=True)
    drop(g).sum().backward()
    assert torch.allclose(g.grad, (g.grad != 0) / 0.3)  # gradient flows where kept, scaled
    drop.eval()
    assert torch.equal(drop(x), x)
    head = build_head("gdlt", 64, hidden_dim=32, ffn_dim=48)
    dropouts = [m for m in head.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(type(m) is FastDropout for m in dropouts)
    assert use_fast_dropout(nn.Sequential(nn.Dropout(0.2)))[0].p == 0.2
