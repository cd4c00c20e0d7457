"""The one config system: YAML files plus `--set key=value` overrides, parsed once into typed,
validated models at the command boundary.

- A config file is YAML; dotted keys address nested entries (`--set sampling.num_clips=8`).
  Values given on the command line are parsed as YAML scalars, so `--set optim.lr=1e-4` is a
  float and `--set head.name=dae` a string.
- Every section is a `Section` (a pydantic model that forbids unknown keys). `parse(Model,
  data, where)` validates a plain dict and turns every problem into one `AqaError` (exit 1)
  naming the key: an unknown key with the closest known one ("did you mean num_frames?"), a
  wrong type or a value out of range with what the key expects.
- The stages' models: the extraction recipe (`aqa_pipeline.extract.recipe.Recipe`), the train
  config (`aqa_pipeline.train.config.TrainConfig`) and each head's options
  (`Head.Options`). Only a validated model reaches a cache key or a run directory.
- Shipped configs are package data (aqa_pipeline/configs/<kind>/NAME.yaml): `--config NAME`
  finds them from any directory, `--config PATH` reads a file.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from aqa_pipeline.errors import AqaError

KINDS = ("extract", "train")
M = TypeVar("M", bound=BaseModel)


class Section(BaseModel):
    """A config section: typed fields, unknown keys refused, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def plain(self) -> dict[str, Any]:
        """JSON-friendly dict of every field (defaults included), for YAML files and hashes."""
        return self.model_dump(mode="json")


# ------------------------------------------------------------------------ files and names


def configs_dir(kind: str) -> Path:
    """The folder of the configs shipped with the package: aqa_pipeline/configs/<kind>."""
    if kind not in KINDS:
        raise ValueError(f"config kind must be one of {KINDS}, got {kind!r}")
    return Path(str(resources.files("aqa_pipeline") / "configs" / kind))


def list_configs(kind: str) -> list[str]:
    """Names of the shipped configs of `kind` ("extract" recipes or "train" configs)."""
    return sorted(p.stem for p in configs_dir(kind).glob("*.yaml"))


def resolve_config_path(name: str | Path, kind: str) -> Path:
    """A YAML file path as given, or the name of a shipped config (`i3d_musdl`)."""
    path = Path(name)
    if path.is_file():
        return path
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        raise AqaError(f"config file not found: {path}")
    shipped = configs_dir(kind) / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    names = list_configs(kind)
    raise AqaError(f"--config {name}: no such file, and no shipped {kind} config of that name"
                   f"{did_you_mean(str(name), names)}; shipped: {', '.join(names)}")  # fmt: skip


def load_config(
    path: str | Path, overrides: Iterable[str] = (), kind: str | None = None
) -> dict[str, Any]:
    """Read a YAML config (a path, or with `kind` a shipped name) and apply `key=value`
    overrides (dotted keys). Returns a plain dict; validate it with `parse`."""
    path = resolve_config_path(path, kind) if kind else Path(path)
    if not path.is_file():
        raise AqaError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as exc:
        raise AqaError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise AqaError(f"{path}: a config must be a mapping at the top level")
    return apply_overrides(data, overrides)


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of `config` with each `a.b.c=value` override set."""
    out = copy.deepcopy(dict(config))
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise AqaError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        set_dotted(out, key, value)
    return out


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    node = config
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise AqaError(f"--set {key}: {where} is {child!r}, not a mapping; set {where} "
                           "as a whole or give it as a mapping first")  # fmt: skip
        node = child
    node[parts[-1]] = value


# ------------------------------------------------------------------------ validation


def parse(model: type[M], data: Any, where: str, prefix: str = "") -> M:
    """Validate `data` as `model`; every problem becomes one AqaError (exit 1) that names the
    key (`prefix` + its dotted path) and what it expects. `where` names the config."""
    if isinstance(data, model):
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise AqaError(f"{where}: {prefix.rstrip('.') or 'the config'} must be a mapping, "
                       f"got {data!r}")  # fmt: skip
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        problems: dict[str, list[str]] = {}  # key -> messages (a union gives one per member)
        for err in exc.errors():
            key, message = _describe(model, err, prefix)
            problems.setdefault(key, []).append(message)
        text = "; ".join(
            f"{key}{' or '.join(dict.fromkeys(msgs))}" for key, msgs in problems.items()
        )
        raise AqaError(f"{where}: {text}") from None


def _describe(model: type[BaseModel], err: Mapping[str, Any], prefix: str) -> tuple[str, str]:
    """(a key prefix such as "train.epochs = 2.7: ", what is wrong)."""
    loc = [str(part) for part in err["loc"]]
    # a union (int | "auto") reports one error per member: keep the key, not the member
    loc = [p for p in loc if not _is_union_tag(p)]
    key = prefix + ".".join(loc)
    if err["type"] == "extra_forbidden":
        known = sorted(_known_keys(model, loc[:-1]))
        return "", f"unknown key {key}{did_you_mean(loc[-1], known)}; known: {', '.join(known)}"
    if err["type"] == "missing":
        return "", f"{key} is required"
    message = str(err["msg"])
    if message.startswith("Value error, "):
        return "", message[len("Value error, ") :]  # our own message names the key
    message = message[0].lower() + message[1:]
    if "input" in err:
        return f"{key} = {err['input']!r}: ", message
    return f"{key}: ", message


def _is_union_tag(part: str) -> bool:
    return part in ("int", "float", "str", "bool", "list[int]", "none") or part.startswith(
        ("literal[", "constrained-", "function-")
    )


def _known_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The field names of the nested model at `loc` (empty if it is not a model)."""
    cls: Any = model
    for part in loc:
        cls = _model_of(cls.model_fields[part].annotation) if part in cls.model_fields else None
        if cls is None:
            return []
    return list(cls.model_fields)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is Union or type(annotation).__name__ == "UnionType":
        for arg in get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest of `known`, or ''."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


# ------------------------------------------------------------------------ hashing, diffs


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal configs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(obj: Any, length: int = 16) -> str:
    """A short sha256 of the canonical JSON of `obj`."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; used to name differing fields."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def diff_fields(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields (dotted) whose values differ between two nested dicts."""
    fa, fb = flatten(a), flatten(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
