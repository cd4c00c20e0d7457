"""Training speed of the long-form heads (GDLT, InterAQA) on Fis-V TES, as ratios measured in
one run on one machine:

1. ours vs the authors' loop: seconds per epoch (train, then the test set predicted) of our
   loop (`run_epochs`, what `aqa train` runs, with the shipped gdlt_fisv_tes config) against
   the authors' own GDLT loop (github.com/xuangch/CVPR22_GDLT: main.py's epoch body, train.py's
   train_epoch and test.py's test_epoch, their RGDataset and DataLoaders, SGD and cosine
   schedule), patched only to run on the CPU (`.cuda()` removed). Goal: >= 3x.
2. ours vs the FLOP floor: the floating-point work of an epoch (the training steps, forward
   and backward, at the training crop; the test programs as the config predicts them,
   forward), counted with torch.utils.flop_counter's formulas over the head's own code,
   divided by the rate of the head's largest matrix product measured right after that epoch
   at the precision used (the median over a second of products). Goal: <= 1.3x.

Epochs alternate (ours, theirs, ours, theirs, ...) after one warm-up epoch each, so each
pair sees about the same machine load; a ratio is the median over the pairs (other jobs on
a shared machine move single epochs by several times). The precision: `--amp auto` takes
bf16 autocast when a bf16 product is faster here than a float32 one (the CPU flags alone do
not say: an AVX512-BF16 Xeon VM without AMX ran bf16 products at 0.6x float32), else float32;
the authors' loop runs in float32, as published.

    git --git-dir=/work/.mirror/xuangch+CVPR22_GDLT/repo archive HEAD | tar -x -C /tmp/authors/gdlt
    python benchmarks/bench_heads_speed.py --authors-gdlt /tmp/authors/gdlt \\
        [--data ../shared/data/fisv] [--heads gdlt interaqa] [--pairs 4] [--pairs-interaqa 2] \\
        [--threads 2] [--amp auto|none|bf16] [--authors-workers 0]

Without --authors-gdlt, only the floor ratios are measured. The authors' code is read from
that folder and patched in a temporary copy; nothing of it is part of the project. Their
DataLoaders use 8 workers; `--authors-workers` sets it (0, the default here, loads in the
main process: the faster on a 2-core machine, so the ratio is not flattered).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fisv import SHARED_FISV, load_features  # noqa: E402

from aqa_pipeline.config import apply_overrides, load_config  # noqa: E402
from aqa_pipeline.datasets import load_labels  # noqa: E402
from aqa_pipeline.train.config import resolve_config  # noqa: E402
from aqa_pipeline.train.data import TrainData  # noqa: E402
from aqa_pipeline.train.group import autocast, build_group  # noqa: E402
from aqa_pipeline.train.heads import build_head  # noqa: E402
from aqa_pipeline.train.loop import RunPlan, run_epochs  # noqa: E402
from aqa_pipeline.train.predict import make_inputs  # noqa: E402

CONFIGS = {"gdlt": "gdlt_fisv_tes", "interaqa": "interaqa_fisv_tes"}
# the head's largest product, (M per program-clip, K, N): GDLT's first projection,
# InterAQA's attention input projection (3 x D of its 1024-d queries and clips)
LARGEST_GEMM = {"gdlt": (1024, 512), "interaqa": (1024, 3072)}


def machine() -> str:
    try:
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                    if line.startswith("model name"))  # fmt: skip
    except (OSError, StopIteration):
        name = platform.processor()
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return f"{name}, {os.cpu_count()} cores, bf16: {', '.join(bf16) or 'no'}"


def cpu_has_bf16() -> bool:
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def load_avg() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# -- ours ----------------------------------------------------------------------------------


class OurLoop:
    """Our training loop for the shipped config, one epoch per call (`run_epochs` with one
    epoch: train, then the test set predicted, as in `aqa train`'s full run)."""

    def __init__(self, head: str, features, labels, amp: str, threads: int):
        cfg = apply_overrides(load_config(CONFIGS[head], kind="train"), [
            f"train.amp={amp}", f"train.threads={threads}", "train.seeds=[0]",
        ])  # fmt: skip
        self.cfg = resolve_config(cfg)
        torch.set_num_threads(threads)
        self.fold = labels.folds[0]
        self.data = TrainData.build(features, labels, float(self.cfg.label.scale), clips=True,
                                    cache="fisv")  # fmt: skip
        steps = -(-len(self.fold.train) // self.cfg.train.batch_size)
        opts = self.cfg.head_options()
        self.group = build_group(lambda: build_head(head, features.feature_dim, **opts), [0],
                                 self.cfg, steps, torch.device("cpu"))  # fmt: skip
        self.inputs = make_inputs("clips", self.data, self.cfg, [self.fold.train], None)

    def epoch(self) -> float:
        plan = RunPlan.of(self.cfg, self.fold.train[None], {"test": self.fold.test[None]}, [0])
        plan.epochs = 1
        t0 = time.perf_counter()
        run_epochs(self.group, self.data, self.inputs, plan)
        return time.perf_counter() - t0


# -- the authors' GDLT loop ---------------------------------------------------------------


@contextlib.contextmanager
def authors_gdlt(src: Path):
    """Their modules from a patched temporary copy (`.cuda()` removed), on sys.path."""
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "gdlt"
        shutil.copytree(src, dst)
        model = dst / "models" / "model.py"
        model.write_text(model.read_text().replace(".cuda()", ""))
        sys.path.insert(0, str(dst))
        names = ("datasets", "train", "test", "utils", "models", "models.model", "models.loss",
                 "models.transformer", "models.triplet_loss")  # fmt: skip
        saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
        try:
            yield {n: importlib.import_module(n) for n in
                   ("datasets", "train", "test", "models.model", "models.loss")}  # fmt: skip
        finally:
            sys.path.remove(str(dst))
            for n in names:
                sys.modules.pop(n, None)
            sys.modules.update(saved)


class AuthorsGDLTLoop:
    """main.py's epoch body with the Fis-V TES settings (REFERENCE.md: dropout 0.7, alpha 0.5,
    clip_num 124, 320 epochs; the README's RG command for the rest), one epoch per call."""

    def __init__(self, modules: dict, data: Path, workers: int, ckpt_dir: str):
        from torch.utils.data import DataLoader

        m = self.m = modules

        def dataset(split: str, train: bool):
            ds = m["datasets"].RGDataset.__new__(m["datasets"].RGDataset)  # read_label is RG's
            ds.train, ds.clip_num = train, 124
            ds.video_path = str(data / "swintx_avg_fps25_clip32")
            ds.erase_path = ds.video_path + "_erTrue"
            ds.labels = [[line.split()[0], float(line.split()[1])]
                         for line in (data / f"{split}.txt").read_text().splitlines() if line]  # fmt: skip
            return ds

        self.train_loader = DataLoader(dataset("train", True), batch_size=32, shuffle=True,
                                       num_workers=workers)  # fmt: skip
        self.test_loader = DataLoader(dataset("test", False), batch_size=1, shuffle=False,
                                      num_workers=workers)  # fmt: skip
        self.model = m["models.model"].GDLT(1024, 256, 1, 1, 2, 4, 0.7)
        self.loss_fn = m["models.loss"].LossFun(0.5, 1.0)
        self.optim = torch.optim.SGD(self.model.parameters(), lr=1e-2, momentum=0.9,
                                     weight_decay=1e-4)  # fmt: skip
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.optim, T_max=320,
                                                                eta_min=1e-4)  # fmt: skip
        self.best, self.epc, self.ckpt = -1.0, 0, f"{ckpt_dir}/best.pkl"

    def epoch(self) -> float:
        m, args = self.m, argparse.Namespace()
        t0 = time.perf_counter()
        m["train"].train_epoch(self.epc, self.model, self.loss_fn, self.train_loader,
                               self.optim, None, "cpu", args)  # fmt: skip
        self.sched.step()
        _, coef = m["test"].test_epoch(self.epc, self.model, self.test_loader, None, "cpu", args)
        if coef > self.best:
            self.best = coef
            torch.save(self.model.state_dict(), self.ckpt)
        self.epc += 1
        return time.perf_counter() - t0


# -- the FLOP floor ------------------------------------------------------------------------


class CountFlops(TorchDispatchMode):
    """The floating-point operations of the matrix products and attentions run inside it
    (torch.utils.flop_counter's formulas, plus the CPU flash-attention kernels it lacks).
    Without FlopCounterMode's module tracker, which fails on some autograd graphs."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in flop_registry:
            self.total += flop_registry[packet](*args, **kwargs, out_val=out)
        elif packet is torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
            q, k, v = args[:3]
            self.total += sdpa_flop_count(q.shape, k.shape, v.shape)
        elif packet is torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
            grad, q, k, v = args[:4]
            self.total += sdpa_backward_flop_count(grad.shape, q.shape, k.shape, v.shape)
        return out


def epoch_flops(head_name: str, features, labels, amp: str) -> tuple[float, float]:
    """(training FLOPs, test FLOPs) of one epoch: the training steps at the crop, forward and
    backward (one counted step of 32 programs, times the programs / 32), and the test programs
    as the config predicts them (whole, or cropped to clip_num), one at a time (no padding),
    forward; counted over the head's own code at the config's options."""
    cfg = load_config(CONFIGS[head_name], kind="train")
    opts = {k: v for k, v in cfg["head"].items() if k != "name"}
    clip_num = int(cfg["data"]["clip_num"])
    fold = labels.folds[0]
    index = {v: i for i, v in enumerate(features.video_ids)}
    offsets = features.clip_offsets

    def clips(row: int, crop: bool) -> torch.Tensor:
        i = index[labels.video_ids[row]]
        x = torch.from_numpy(features.clip_features[offsets[i] : offsets[i + 1]]).float()
        if crop:
            x = torch.nn.functional.pad(x[:clip_num], (0, 0, 0, max(0, clip_num - len(x))))
        return x

    torch.manual_seed(0)
    head = build_head(head_name, features.feature_dim, **opts).train()
    batch = torch.stack([clips(r, True) for r in fold.train[:32]])
    with CountFlops() as counter:
        with autocast(amp, batch.device):
            out = head(batch, None)
        loss = head.loss({k: v.float() for k, v in out.items()}, {"target": torch.rand(32)})
        loss.backward()
    train = counter.total * len(fold.train) / 32
    head.eval()
    crop = cfg["data"]["test_crop"] == "crop"
    with torch.no_grad(), CountFlops() as counter, autocast(amp, batch.device):
        for r in fold.test:
            head(clips(r, crop)[None], None)
    return float(train), float(counter.total)


def gemm_rate(head_name: str, amp: str, rows: int, seconds: float = 1.0) -> float:
    """FLOP/s of the head's largest product, (rows, K) @ (K, N), at the precision `amp`: the
    median over `seconds` of repeated products (a median, like the epoch it is compared
    with, sees the machine's load; the fastest product would catch a quiet moment)."""
    k, n = LARGEST_GEMM[head_name]
    dtype = torch.bfloat16 if amp == "bf16" else torch.float32
    a, b = torch.randn(rows, k).to(dtype), torch.randn(k, n).to(dtype)
    for _ in range(2):
        a @ b
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * rows * k * n / statistics.median(times)


def pick_amp(amp: str, head: str, rows: int) -> tuple[str, dict[str, float]]:
    """`auto`: bf16 when its product is faster here than float32's (5 alternating tries)."""
    rates = {"none": 0.0, "bf16": 0.0}
    for _ in range(5):
        for a in rates:
            rates[a] = max(rates[a], gemm_rate(head, a, rows, seconds=0.3))
    if amp == "auto":
        amp = "bf16" if cpu_has_bf16() and rates["bf16"] > rates["none"] else "none"
    return amp, rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED_FISV)
    ap.add_argument("--heads", nargs="+", default=["gdlt", "interaqa"], choices=list(CONFIGS))
    ap.add_argument("--pairs", type=int, default=4, help="measured epochs per side (GDLT)")
    ap.add_argument("--pairs-interaqa", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--amp", choices=["auto", "none", "bf16"], default="auto")
    ap.add_argument("--authors-gdlt", type=Path, default=None,
                    help="a checkout of github.com/xuangch/CVPR22_GDLT")  # fmt: skip
    ap.add_argument("--authors-workers", type=int, default=0,
                    help="DataLoader workers of the authors' loop (theirs: 8)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {machine()}; torch {torch.__version__}, {args.threads} threads")
    print(f"load before: {load_avg()}")
    features = load_features(args.data / "swintx_avg_fps25_clip32")
    labels = load_labels(f"fisv:{args.data}?target=TES")
    fold = labels.folds[0]
    for head in args.heads:
        rows = 32 * (124 if head == "gdlt" else 136)
        amp, rates = pick_amp(args.amp, head, rows)
        print(f"\n{head} (Fis-V TES, {len(fold.train)} train / {len(fold.test)} test programs): "
              f"product rate float32 {rates['none'] / 1e9:.0f}, bf16 {rates['bf16'] / 1e9:.0f} "
              f"GFLOP/s -> amp {amp}")  # fmt: skip
        train_flops, test_flops = epoch_flops(head, features, labels, amp)
        flops = train_flops + test_flops
        ours = OurLoop(head, features, labels, amp, args.threads)
        theirs_ctx = (authors_gdlt(args.authors_gdlt) if head == "gdlt" and args.authors_gdlt
                      else contextlib.nullcontext())  # fmt: skip
        with theirs_ctx as modules, tempfile.TemporaryDirectory() as ckpt:
            theirs = (AuthorsGDLTLoop(modules, args.data, args.authors_workers, ckpt)
                      if modules else None)  # fmt: skip
            ours.epoch()  # warm-up epochs
            if theirs:
                theirs.epoch()
            pairs = args.pairs if head == "gdlt" else args.pairs_interaqa
            rows_out = []
            for _ in range(pairs):
                o = ours.epoch()
                rate = gemm_rate(head, amp, rows)
                torch.set_num_threads(args.threads)
                t = theirs.epoch() if theirs else float("nan")
                rows_out.append((o, rate, t))
                print(
                    f"  ours {o:.2f} s (floor {flops / rate:.2f} s at {rate / 1e9:.0f} "
                    f"GFLOP/s), theirs {t:.2f} s; {load_avg().split('load')[-1]}",
                    flush=True,
                )
        o_med = statistics.median(r[0] for r in rows_out)
        floor_ratio = statistics.median(r[0] * r[1] / flops for r in rows_out)
        print(f"  FLOPs/epoch {train_flops / 1e12:.3f} T train + {test_flops / 1e12:.3f} T test; "
              f"largest product {rows}x{'x'.join(map(str, LARGEST_GEMM[head]))}")  # fmt: skip
        print(f"  ours: {o_med:.2f} s/epoch (median of {len(rows_out)}); ours / floor "
              f"{floor_ratio:.2f}x (median over epochs; goal <= 1.3x)")  # fmt: skip
        if theirs:
            t_med = statistics.median(r[2] for r in rows_out)
            speedup = statistics.median(r[2] / r[0] for r in rows_out)
            print(f"  the authors' loop ({args.authors_workers} DataLoader workers, float32): "
                  f"{t_med:.2f} s/epoch; ours is {speedup:.2f}x faster (median of the pairs' "
                  "ratios; goal >= 3x)")  # fmt: skip
    print(f"\nload after: {load_avg()}")


if __name__ == "__main__":
    main()
