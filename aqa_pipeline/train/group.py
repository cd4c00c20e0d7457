"""Several seeds of one head, trained in lockstep on their own batches.

- `StackedGroup` (heads with `batch_seeds = True`): the seeds' parameters are stacked
  (S, ...) with torch.func.stack_module_state and one vmapped call runs every seed's
  forward and loss; one optimiser steps the stacked tensors (its updates are elementwise,
  so each seed gets exactly its own update). Random draws inside the head (the DAE sample,
  dropout) come from one generator for the group, so a seed trained in a group of 10 and
  alone differ in those draws only (initialisation and batch order are per seed).
- `SequentialGroup` (every other head, and any head with one seed): one module and
  optimiser per seed, stepped one after the other, each seed with its own torch RNG
  state, so a seed's result does not depend on the other seeds.

Evaluation runs under a fixed RNG seed (`eval_seed`), so predicting again from a saved
snapshot reproduces the predictions made during training.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from aqa_pipeline.train.config import TrainConfig
from aqa_pipeline.train.heads.base import Head
from aqa_pipeline.train.optim import build_optimizer, build_scheduler

CLIP_OUTPUTS = ("clip_scores", "clip_weights")


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_head(
    head: Head, inputs: dict[str, Tensor], batch: dict[str, Any], mode: str, amp: str
) -> Any:
    """The head's forward (under autocast with amp="bf16"), then its loss (mode "loss") or
    prediction (mode "predict") in float32."""
    x = inputs["x"]
    with autocast(amp, x.device):
        out = head(x, inputs.get("mask"))
    out = {k: v.float() if torch.is_floating_point(v) else v for k, v in out.items()}
    if mode == "loss":
        return head.loss(out, batch)
    return prediction_of(head, out, batch)


def prediction_of(head: Head, out: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
    """head.predict plus the per-clip outputs, float32, without None entries."""
    pred = dict(head.predict(out, batch))
    for key in CLIP_OUTPUTS:
        if key in out:
            pred[key] = out[key]
    return {k: v.float() for k, v in pred.items() if v is not None}


class HeadCall(nn.Module):
    """`run_head` as a module, so functional_call swaps the parameters for the whole step."""

    def __init__(self, head: Head, amp: str):
        super().__init__()
        self.head, self.amp = head, amp

    def forward(self, inputs: dict[str, Tensor], batch: dict[str, Any], mode: str) -> Any:
        return run_head(self.head, inputs, batch, mode, self.amp)


class ModelGroup:
    """Interface of both groups; heads[s] was initialised under seeds[s]."""

    def __init__(
        self, heads: list[Head], cfg: TrainConfig, steps_per_epoch: int, rng_seeds: list[int]
    ):
        self.seeds_n = len(heads)
        self.rng_states = []  # torch RNG state(s) of the random draws inside the heads
        self._mode_modules: list[nn.Module] = list(heads)
        self._training: bool | None = None
        for seed in rng_seeds:
            with fixed_rng(seed):
                self.rng_states.append(torch.get_rng_state())
        self.cfg = cfg
        self.amp = cfg.train.amp
        self.per_iteration = cfg.schedule.per == "iteration"
        self.epochs = cfg.train.epochs

    @contextlib.contextmanager
    def _own_rng(self, i: int) -> Iterator[None]:
        """Run the block on RNG state i, then keep its new state for next time."""
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.rng_states[i])
            yield
            self.rng_states[i] = torch.get_rng_state()

    def _set_mode(self, train: bool) -> None:
        # Module.train() walks every submodule: only call it when the mode changes
        if self._training is not train:
            for module in self._mode_modules:
                module.train(train)
            self._training = train

    def train_step(self, inputs: dict[str, Tensor], batch: dict[str, Tensor], epoch: int) -> Tensor:
        """One optimiser step for every seed; inputs/batch tensors are (S, B, ...)."""
        raise NotImplementedError

    def predict(
        self, inputs: dict[str, Tensor], batch: dict[str, Tensor], eval_seed: int
    ) -> dict[str, Tensor]:
        """Predictions (S, B, ...) in eval mode."""
        raise NotImplementedError

    def end_epoch(self) -> None:
        """Step per-epoch schedules."""
        raise NotImplementedError

    def state_dict(self, s: int) -> dict[str, Tensor]:
        """A copy of seed s's parameters and buffers (the head's own names)."""
        raise NotImplementedError

    def load_state_dicts(self, states: list[dict[str, Tensor]]) -> None:
        raise NotImplementedError

    def training_state(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: weights, optimiser and schedule
        state, and the RNG states of the heads' random draws."""
        raise NotImplementedError

    def load_training_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    @property
    def lr(self) -> float:
        raise NotImplementedError


class StackedGroup(ModelGroup):
    def __init__(self, heads: list[Head], cfg: TrainConfig, steps_per_epoch: int, seeds: list[int]):
        # one generator for the group, seeded from all its seeds
        super().__init__(heads, cfg, steps_per_epoch, [zlib.crc32(repr(list(seeds)).encode())])
        calls = [HeadCall(h, self.amp) for h in heads]
        self.call = calls[0]
        self._mode_modules = [self.call]
        self.params, self.buffers = stack_module_state(calls)
        self.opt = build_optimizer(self.params.values(), cfg.optim)
        self.sched = build_scheduler(self.opt, cfg.schedule, self.epochs, steps_per_epoch)

    def _vmapped(self, mode: str, epoch: int) -> Callable:
        def one(params: dict, buffers: dict, inputs: dict, batch: dict) -> Any:
            batch = {**batch, "epoch": epoch}
            return functional_call(self.call, (params, buffers), (inputs, batch, mode))

        return vmap(one, randomness="different")

    def train_step(self, inputs: dict[str, Tensor], batch: dict[str, Tensor], epoch: int) -> Tensor:
        self._set_mode(train=True)
        with self._own_rng(0):
            losses = self._vmapped("loss", epoch)(self.params, self.buffers, inputs, batch)
        self.opt.zero_grad(set_to_none=True)
        losses.float().sum().backward()
        self.opt.step()
        if self.sched is not None and self.per_iteration:
            self.sched.step()
        return losses.detach().float()

    def predict(
        self, inputs: dict[str, Tensor], batch: dict[str, Tensor], eval_seed: int
    ) -> dict[str, Tensor]:
        self._set_mode(train=False)
        with torch.no_grad(), fixed_rng(eval_seed):
            return self._vmapped("predict", 0)(self.params, self.buffers, inputs, batch)

    def end_epoch(self) -> None:
        if self.sched is not None and not self.per_iteration:
            self.sched.step()

    def state_dict(self, s: int) -> dict[str, Tensor]:
        named = {**self.params, **self.buffers}
        return {k.removeprefix("head."): v[s].detach().clone() for k, v in named.items()}

    def load_state_dicts(self, states: list[dict[str, Tensor]]) -> None:
        with torch.no_grad():
            for k, v in {**self.params, **self.buffers}.items():
                v.copy_(torch.stack([st[k.removeprefix("head.")] for st in states]))

    def training_state(self) -> dict[str, Any]:
        return {
            "tensors": {k: v.detach().clone() for k, v in {**self.params, **self.buffers}.items()},
            "optimizer": self.opt.state_dict(),
            "scheduler": None if self.sched is None else self.sched.state_dict(),
            "rng": list(self.rng_states),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for k, v in {**self.params, **self.buffers}.items():
                v.copy_(state["tensors"][k])
        self.opt.load_state_dict(state["optimizer"])
        if self.sched is not None:
            self.sched.load_state_dict(state["scheduler"])
        self.rng_states = list(state["rng"])

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])


class SequentialGroup(ModelGroup):
    def __init__(self, heads: list[Head], cfg: TrainConfig, steps_per_epoch: int, seeds: list[int]):
        super().__init__(heads, cfg, steps_per_epoch, seeds)  # one generator per seed
        self.heads = heads
        self.opts = [build_optimizer(h.parameters(), cfg.optim) for h in heads]
        self.scheds = [
            build_scheduler(o, cfg.schedule, self.epochs, steps_per_epoch) for o in self.opts
        ]

    def train_step(self, inputs: dict[str, Tensor], batch: dict[str, Tensor], epoch: int) -> Tensor:
        losses = []
        self._set_mode(train=True)
        for s, (head, opt) in enumerate(zip(self.heads, self.opts, strict=True)):
            b = {k: v[s] for k, v in batch.items()} | {"epoch": epoch}
            with self._own_rng(s):
                loss = run_head(head, {k: v[s] for k, v in inputs.items()}, b, "loss", self.amp)
            opt.zero_grad(set_to_none=True)
            loss.float().backward()
            opt.step()
            if self.scheds[s] is not None and self.per_iteration:
                self.scheds[s].step()
            losses.append(loss.detach().float())
        return torch.stack(losses)

    def predict(
        self, inputs: dict[str, Tensor], batch: dict[str, Tensor], eval_seed: int
    ) -> dict[str, Tensor]:
        preds = []
        self._set_mode(train=False)
        for s, head in enumerate(self.heads):
            b = {k: v[s] for k, v in batch.items()} | {"epoch": 0}
            with torch.no_grad(), fixed_rng(eval_seed + s):
                preds.append(
                    run_head(head, {k: v[s] for k, v in inputs.items()}, b, "predict", self.amp)
                )
        return {k: torch.stack([p[k] for p in preds]) for k in preds[0]}

    def end_epoch(self) -> None:
        for sched in self.scheds:
            if sched is not None and not self.per_iteration:
                sched.step()

    def state_dict(self, s: int) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.heads[s].state_dict().items()}

    def load_state_dicts(self, states: list[dict[str, Tensor]]) -> None:
        for h, st in zip(self.heads, states, strict=True):
            h.load_state_dict(st)

    def training_state(self) -> dict[str, Any]:
        return {
            "heads": [self.state_dict(s) for s in range(self.seeds_n)],
            "optimizers": [o.state_dict() for o in self.opts],
            "schedulers": [None if s is None else s.state_dict() for s in self.scheds],
            "rng": list(self.rng_states),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dicts(state["heads"])
        for opt, st in zip(self.opts, state["optimizers"], strict=True):
            opt.load_state_dict(st)
        for sched, st in zip(self.scheds, state["schedulers"], strict=True):
            if sched is not None:
                sched.load_state_dict(st)
        self.rng_states = list(state["rng"])

    @property
    def lr(self) -> float:
        return float(self.opts[0].param_groups[0]["lr"])


@contextlib.contextmanager
def fixed_rng(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded to `seed`, then restore it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_group(
    make_head: Callable[[], Head],
    seeds: list[int],
    cfg: TrainConfig,
    steps_per_epoch: int,
    device: torch.device,
) -> ModelGroup:
    """Initialise one head per seed (under that seed) and group them: stacked when the head
    allows and there are several seeds (vmap costs more than it saves for one)."""
    heads = []
    for seed in seeds:
        with fixed_rng(seed):
            heads.append(make_head().to(device))
    if type(heads[0]).batch_seeds and len(heads) > 1:
        return StackedGroup(heads, cfg, steps_per_epoch, seeds)
    return SequentialGroup(heads, cfg, steps_per_epoch, seeds)
