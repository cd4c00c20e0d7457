"""The authors' own head checkpoints: their key layouts and loading them into our heads.

A head whose authors released code declares `authors_layout` (an `AuthorsLayout`, next to
the head in its module): how each of our state_dict keys is named in the authors' model,
how its tensor is laid out there, and under which entries of their checkpoint pickle the
state lives. One mapping serves three uses: loading a released checkpoint (`aqa evaluate
--checkpoint`, `aqa train --init-from`), the training-step parity test against the
authors' code (tests/test_head_parity.py), and writing a checkpoint in the authors' layout
(`to_authors`).

Checkpoint containers accepted (the authors save either): a bare state_dict, or a dict
holding it, e.g. GDLT's `torch.save(model.state_dict())`, InterAQA's `{'epoch', 'backbone',
'neck', 'head', 'optimizer', 'rho_best'}` (`neck` and `head` each a state_dict), the DAE's
`{'epoch', 'i3d', 'dae', 'optimizer', 'rho_best'}`. A state_dict saved from nn.DataParallel
(every key prefixed `module.`) is accepted. Files are read with `torch.load(weights_only=True)`;
one that needs full unpickling (e.g. a numpy scalar `rho_best`) is refused unless
allow_unsafe_pickle (the `--allow-unsafe-pickle` flag), by the same reader `aqa extract`
uses for backbone weights.

Value conversions between the authors' tensor (A) and ours (O):
    same        A and O have the same shape
    kernel1     A is a kernel-1 Conv1d weight (out, in, 1), O the Linear weight (out, in)
    transposed  A is an nn.Linear weight (out, in), O a `Dense` weight (in, out)
    rows        A is a table (n, D) or (1, n, D), O a (N, D) table with N >= n: A fills
                O's first n rows (InterAQA's positional table and learned queries)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from aqa_pipeline.errors import AqaError

log = logging.getLogger(__name__)

Convert = Literal["same", "kernel1", "transposed", "rows"]
_SHOW = 5  # keys an error message lists
# dict entries that commonly hold a whole model's state_dict
COMMON_CONTAINERS = ("state_dict", "model", "model_state", "model_state_dict", "net")


@dataclass(frozen=True)
class AuthorsLayout:
    """How a head's authors named and shaped its state.

    name: the layout's id (e.g. "gdlt_xuangch"); source: repository and class.
    rules: (pattern, replacement) regexes from OUR key to THEIRS, the first match wins; a
        key no rule matches has no counterpart in their model (it keeps our initialisation
        when loading, e.g. the score_dist output, and is logged).
    convert: our key (regex, full match) -> the `Convert` of its tensor (default "same").
    parts: their prefix -> the entries of a checkpoint dict that may hold that part's
        state_dict, in order of preference; "" is a model saved whole. The prefix is
        prepended to the part's keys (InterAQA: "neck." and "head.").
    unused: their key (regex, full match) -> why our head has no use for it; such keys are
        accepted in a checkpoint and ignored.
    """

    name: str
    source: str
    rules: tuple[tuple[str, str], ...]
    convert: Mapping[str, Convert] = field(default_factory=dict)
    parts: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {"": ()})
    unused: Mapping[str, str] = field(default_factory=dict)

    def their_key(self, ours: str) -> str | None:
        """Our key -> the authors' name of the same tensor, or None (no counterpart)."""
        for pattern, repl in self.rules:
            if re.match(pattern, ours):
                return re.sub(pattern, repl, ours, count=1)
        return None

    def conversion(self, ours: str) -> Convert:
        for pattern, kind in self.convert.items():
            if re.fullmatch(pattern, ours):
                return kind
        return "same"

    def why_unused(self, theirs: str) -> str | None:
        for pattern, reason in self.unused.items():
            if re.fullmatch(pattern, theirs):
                return reason
        return None


@dataclass(frozen=True)
class HeadInit:
    """Weights read from an authors' checkpoint, in OUR key names (`state`), ready to load
    into heads built with the same options (`apply`); `kept` are our keys the file has no
    counterpart for (they keep each head's own initialisation), `ignored` the file's keys
    the layout declares unused."""

    path: str
    sha256: str
    layout: str
    state: dict[str, Tensor]
    kept: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()  # their keys the head has no use for

    def apply(self, head: nn.Module) -> nn.Module:
        """Copy the weights into `head` (built with the options they were read for)."""
        with torch.no_grad():
            for key, value in self.state.items():
                target = _tensor_of(head, key)
                if value.shape == target.shape:
                    target.copy_(value)
                else:  # a "rows" table filling the first rows
                    target[: value.shape[0]].copy_(value)
        return head

    def provenance(self) -> dict[str, Any]:
        """What a run records about it: file, sha256, layout, what was loaded and kept."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "layout": self.layout,
            "loaded": len(self.state),
            "kept_own_init": list(self.kept),
            "ignored": list(self.ignored),
        }


def layout_of(head: nn.Module) -> AuthorsLayout:
    """The head's `authors_layout`; AqaError when its authors' layout is not known."""
    layout = getattr(head, "authors_layout", None)
    if layout is None:
        raise AqaError(
            f"head {getattr(head, 'head_name', type(head).__name__)!r} has no known authors' "
            f"checkpoint layout (known for: {', '.join(heads_with_layouts())})"
        )
    return layout


def heads_with_layouts() -> list[str]:
    from aqa_pipeline.train.heads.registry import head_class, list_heads

    return [n for n in list_heads() if getattr(head_class(n), "authors_layout", None)]


def our_tensors(head: nn.Module) -> dict[str, Tensor]:
    """Every tensor the head's numbers depend on: its state_dict plus its non-persistent
    buffers (InterAQA's positional table), by our key."""
    out = dict(head.state_dict(keep_vars=True))
    for name, buf in head.named_buffers():
        out.setdefault(name, buf)
    return out


def key_map(head: nn.Module, layout: AuthorsLayout | None = None) -> dict[str, str]:
    """Their key -> our key, for every tensor of `head` that has a counterpart."""
    layout = layout or layout_of(head)
    out = {}
    for ours in our_tensors(head):
        theirs = layout.their_key(ours)
        if theirs is not None:
            out[theirs] = ours
    return out


def to_ours(value: Tensor, kind: Convert) -> Tensor:
    """Their tensor -> our layout (see the module docstring)."""
    if kind == "kernel1":
        return value.squeeze(-1) if value.dim() == 3 and value.shape[-1] == 1 else value
    if kind == "transposed":
        return value.t() if value.dim() == 2 else value
    if kind == "rows":
        return value.reshape(-1, value.shape[-1]) if value.dim() >= 2 else value
    return value


def to_authors(
    head: nn.Module,
    tensors: Mapping[str, Tensor] | None = None,
    shapes: Mapping[str, Any] | None = None,
) -> dict[str, Tensor]:
    """The head's tensors (or `tensors` given by our keys and shaped like ours, e.g. the
    gradients) under the authors' names and in their layout, as contiguous copies. `shapes`
    (their key -> shape) sets the length of "rows" tables; without it they keep all our rows."""
    layout = layout_of(head)
    tensors = our_tensors(head) if tensors is None else tensors
    out = {}
    for theirs, ours in key_map(head, layout).items():
        if ours not in tensors:
            continue
        value = tensors[ours].detach()
        kind = layout.conversion(ours)
        if kind == "kernel1":
            value = value.unsqueeze(-1)
        elif kind == "transposed":
            value = value.t()
        elif kind == "rows" and shapes is not None and theirs in shapes:
            shape = tuple(int(d) for d in shapes[theirs])
            value = value[: shape[-2]].reshape(shape)
        out[theirs] = value.contiguous().clone()
    return out


def convert_state(
    head: nn.Module, theirs: Mapping[str, Tensor], where: str
) -> tuple[dict[str, Tensor], tuple[str, ...], tuple[str, ...]]:
    """Their flat state_dict -> (our tensors by our key, our keys left at their own init,
    their keys ignored as unused). Every problem is one AqaError naming `where` and the key:
    a key the head does not know, a key it needs that is missing, a shape that does not fit."""
    layout = layout_of(head)
    mapping = key_map(head, layout)
    tensors = our_tensors(head)
    unknown = [k for k in theirs if k not in mapping and layout.why_unused(k) is None]
    ignored = tuple(k for k in theirs if k not in mapping and layout.why_unused(k) is not None)
    missing = [k for k in mapping if k not in theirs and not k.endswith("num_batches_tracked")]
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} key(s) the {layout.name} layout of this head does not "
                        f"have, e.g. {_first(unknown)}")  # fmt: skip
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {_first(missing)}")
    out: dict[str, Tensor] = {}
    wrong = []
    for key, ours in mapping.items():
        if key not in theirs:
            continue
        value = theirs[key]
        if not isinstance(value, Tensor):
            wrong.append(f"{key} (a {type(value).__name__}, not a tensor)")
            continue
        kind = layout.conversion(ours)
        converted = to_ours(value, kind)
        target = tensors[ours]
        fits = converted.shape == target.shape or (
            kind == "rows"
            and converted.dim() == 2
            and converted.shape[1:] == target.shape[1:]
            and converted.shape[0] <= target.shape[0]
        )
        if not fits:
            wrong.append(
                f"{key} {tuple(value.shape)} (the head needs {_their_shape(target, kind)})"
            )
            continue
        out[ours] = converted.to(target.dtype).clone()
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape or type, e.g. {_first(wrong)}")
    if problems:
        raise AqaError(f"{where}: the weights do not fit head "
                       f"{getattr(head, 'head_name', type(head).__name__)} with these options: "
                       + "; ".join(problems))  # fmt: skip
    kept = tuple(k for k in tensors if k not in out and layout.their_key(k) is None)
    return out, kept, ignored


def flatten_checkpoint(obj: object, layout: AuthorsLayout, where: str) -> dict[str, Tensor]:
    """The flat state_dict (their key names) in a loaded checkpoint object: a bare
    state_dict, or the layout's parts found in a checkpoint dict; `module.` prefixes of
    nn.DataParallel removed."""
    if not isinstance(obj, Mapping) or not obj:
        raise AqaError(f"{where}: expected a state_dict or a checkpoint dict holding one; "
                       f"found {_describe(obj)}")  # fmt: skip
    if all(isinstance(v, Tensor) for v in obj.values()):
        return _strip_module({str(k): v for k, v in obj.items()})
    flat: dict[str, Tensor] = {}
    for prefix, entries in layout.parts.items():
        candidates = (*entries, *COMMON_CONTAINERS) if not prefix else entries
        found = next((e for e in candidates if isinstance(obj.get(e), Mapping)), None)
        if found is None:
            raise AqaError(
                f"{where}: no {' or '.join(repr(e) for e in candidates)} entry holding the "
                f"{prefix.rstrip('.') or 'model'} state_dict (the file's entries: {_first(obj)})"
            )
        part = _strip_module({str(k): v for k, v in obj[found].items()})
        flat.update({prefix + k: v for k, v in part.items()})
    return flat


def read_head_checkpoint(
    path: str | Path, head: nn.Module, allow_unsafe_pickle: bool = False
) -> HeadInit:
    """Read an authors' checkpoint for `head` (built with the options it is to be loaded
    into): safe loading, sha256, container and `module.` prefixes, key mapping, checks.
    Returns the weights in our names (`HeadInit.apply` loads them into such a head)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise AqaError(f"{path}: checkpoint file not found")
    if not path.is_file():
        raise AqaError(f"{path}: checkpoint path is not a file")
    # the reader `aqa extract` uses for weights files (imported here: importing the backbone
    # package registers every backbone, which heads do not need otherwise)
    from aqa_pipeline.extract.backbones.checkpoints import sha256_file, torch_load

    layout = layout_of(head)
    obj = torch_load(path, allow_unsafe_pickle)
    theirs = flatten_checkpoint(obj, layout, str(path))
    state, kept, ignored = convert_state(head, theirs, str(path))
    init = HeadInit(str(path.resolve()), sha256_file(path), layout.name, state, kept, ignored)
    _warn_about_unsaved_buffers(head, init)
    if kept:
        log.info("%s: no counterpart in the %s layout for %s; they keep the head's own "
                 "initialisation", path, layout.name, _first(kept))  # fmt: skip
    return init


def _warn_about_unsaved_buffers(head: nn.Module, init: HeadInit) -> None:
    """A non-persistent buffer (computed, not saved in run directories) that the file sets to
    other values than the head computes: used here, but a saved run will not keep it."""
    persistent = head.state_dict(keep_vars=True)
    own = our_tensors(head)
    for key, value in init.state.items():
        if key in persistent:
            continue
        computed = own[key][: value.shape[0]]
        diff = float((value - computed).abs().max()) if value.numel() else 0.0
        if diff > 1e-5:
            log.warning("%s: %s differs from the table the head computes (max |diff| %.3g); "
                        "it is used as loaded, but run directories do not store it, so a "
                        "saved run re-scores with the computed table", init.path, key, diff)  # fmt: skip


def _tensor_of(module: nn.Module, key: str) -> Tensor:
    owner, _, name = key.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, name)


def _their_shape(target: Tensor, kind: Convert) -> str:
    shape = tuple(target.shape)
    if kind == "kernel1":
        return f"{(*shape, 1)}"
    if kind == "transposed" and len(shape) == 2:
        return f"{shape[::-1]}"
    if kind == "rows":
        return f"(n, {shape[-1]}) with n <= {shape[0]}"
    return f"{shape}"


def _strip_module(sd: dict[str, Any]) -> dict[str, Any]:
    if sd and all(k.startswith("module.") for k in sd):
        return {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def _first(items: Any) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:_SHOW]) + (", ..." if len(items) > _SHOW else "")


def _describe(obj: object) -> str:
    if isinstance(obj, Mapping):
        return "an empty dict" if not obj else f"a dict with entries {_first(obj)}"
    return f"a {type(obj).__name__}"
