"""Labels in one shape for every dataset (`LabelSet`), checks, and a safe pickle reader.

A LabelSet is a table of N labelled videos plus one or more folds. A fold is a train/test
partition that gets its own models: the official split is one fold; JIGSAWS has MUSDL's 4
cross-validation folds per task; AQA-7 with `class=all` has one fold per sport class.
Scores are in the dataset's own units (e.g. MTL-AQA final score 0-104.5).

An adapter's options (the `?key=value&...` query of its labels spec) are one typed model,
a subclass of `AdapterOptions`.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import numpy as np
from pydantic import ConfigDict, model_validator

from aqa_pipeline.config import Section
from aqa_pipeline.errors import AqaError


class AdapterOptions(Section):
    """An adapter's options: the `?key=value&...` query of its labels spec, validated once.

    Query values are strings; each field's type converts them: ints ("0"), floats ("0.25"),
    bools (true/false, 1/0, yes/no, on/off), `X | None` fields are None when not given. A
    choice (a Literal field) matches in any case and keeps its declared spelling
    (`target=pcs` gives "PCS"); a list field takes comma-separated values (`key=a,b`).
    Unknown keys are refused (naming the closest known one). An adapter without options
    registers this class itself."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _from_query(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for key, value in data.items():
            info = cls.model_fields.get(key)
            if info is not None and isinstance(value, str):
                out[key] = query_value(info.annotation, value)
        return out


def query_value(annotation: Any, text: str) -> Any:
    """A query string value for a field of type `annotation`: a choice in its declared case,
    a list field's comma-separated items as a list, anything else as given (pydantic's lax
    mode converts "3" to an int, "true" to a bool)."""
    choices = {c.lower(): c for c in _choices(annotation)}
    if text.lower() in choices:
        return choices[text.lower()]
    item = _list_item(annotation)
    if item is None:
        return text
    return [query_value(item, part.strip()) for part in text.split(",") if part.strip()]


def _members(annotation: Any) -> list[Any]:
    """The types a field accepts: the members of a union (Annotated unwrapped), else itself."""
    if get_origin(annotation) is Annotated:
        return _members(get_args(annotation)[0])
    if get_origin(annotation) is Union or type(annotation).__name__ == "UnionType":
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _choices(annotation: Any) -> list[str]:
    return [
        c for m in _members(annotation) if get_origin(m) is Literal for c in get_args(m)
        if isinstance(c, str)
    ]  # fmt: skip


def _list_item(annotation: Any) -> Any:
    for m in _members(annotation):
        if get_origin(m) in (list, tuple, set, frozenset):
            return (get_args(m) or (Any,))[0]
    return None


@dataclass
class Fold:
    """Rows (indices into the LabelSet) that train and test one model."""

    name: str
    train: np.ndarray  # (n_train,) int64
    test: np.ndarray  # (n_test,) int64


@dataclass
class LabelSet:
    """N labelled videos. Optional fields are None when the dataset has no such label."""

    name: str  # adapter name, e.g. "mtl_aqa"
    source: str  # the spec it was loaded from
    video_ids: list[str]
    score: np.ndarray  # (N,) float64, dataset units
    folds: list[Fold]
    difficulty: np.ndarray | None = None  # (N,) float64, > 0
    judges: np.ndarray | None = None  # (N, J) float64
    subscores: np.ndarray | None = None  # (N, K) float64
    subscore_names: list[str] = field(default_factory=list)
    class_id: np.ndarray | None = None  # (N,) int64: exemplar groups (e.g. dive number)
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.score = np.asarray(self.score, dtype=np.float64)
        self._index = {v: i for i, v in enumerate(self.video_ids)}
        if len(self._index) != len(self.video_ids):
            dup = sorted({v for v in self.video_ids if self.video_ids.count(v) > 1})
            raise AqaError(f"{self.source}: duplicate video ids {dup[:5]}")

    @property
    def n(self) -> int:
        return len(self.video_ids)

    def score_range(self, fold: Fold) -> tuple[float, float]:
        """(min, max) score over the fold's train and test rows: the denominator of R-l2."""
        s = self.score[np.concatenate([fold.train, fold.test])]
        return float(s.min()), float(s.max())

    def index(self, video_id: str) -> int:
        return self._index[video_id]

    def has(self, fields: Sequence[str]) -> list[str]:
        """The names in `fields` this LabelSet lacks."""
        return [f for f in fields if getattr(self, f, None) is None]

    def fold(self, name: str) -> Fold:
        for f in self.folds:
            if f.name == name:
                return f
        raise AqaError(f"{self.source}: no fold {name!r}; folds are {[f.name for f in self.folds]}")


def rows_of(ids: Sequence[str], index: dict[str, int], what: str) -> np.ndarray:
    """Row numbers of `ids`; a clear error names ids that have no label."""
    missing = [v for v in ids if v not in index]
    if missing:
        raise AqaError(
            f"{what}: {len(missing)} video(s) in the split have no label: {preview(missing)}"
        )
    return np.array([index[v] for v in ids], dtype=np.int64)


def preview(items: Sequence[Any], n: int = 8) -> str:
    items = list(items)
    more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(str(v) for v in items[:n]) + more


def check_finite(values: np.ndarray, ids: Sequence[str], what: str, positive: bool = False) -> None:
    """Raise naming the videos whose `what` is NaN/inf (or <= 0 with positive=True)."""
    arr = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if positive:
        bad |= ~(arr > 0)
    if bad.ndim > 1:
        bad = bad.any(axis=tuple(range(1, bad.ndim)))
    if bad.any():
        names = [ids[i] for i in np.flatnonzero(bad)]
        cond = "NaN/inf or not positive" if positive else "NaN or inf"
        raise AqaError(f"{what} is {cond} for {len(names)} video(s): {preview(names)}")


class _SafeUnpickler(pickle.Unpickler):
    """Only the classes numpy needs to rebuild arrays and scalars; plain containers and
    numbers need no class at all."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only data is allowed)")


def load_pickle(path: str | Path) -> Any:
    """Read a pickle holding only dicts, lists, tuples, numbers, strings and numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise AqaError(f"{path}: not found")
    try:
        return _SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise AqaError(f"{path}: not a readable label pickle ({exc})") from exc


def folds_from_split_column(splits: Sequence[str], what: str) -> list[Fold]:
    """A split column -> folds: train/test gives one fold "split"; integers 0..k-1 give k
    cross-validation folds "fold0".. (fold i tests on the rows marked i)."""
    values = [str(s).strip().lower() for s in splits]
    kinds = set(values)
    if kinds <= {"train", "test"}:
        train = np.array([i for i, s in enumerate(values) if s == "train"], dtype=np.int64)
        test = np.array([i for i, s in enumerate(values) if s == "test"], dtype=np.int64)
        if not len(train) or not len(test):
            raise AqaError(f"{what}: the split needs both train and test rows")
        return [Fold("split", train, test)]
    try:
        numbers = np.array([int(s) for s in values], dtype=np.int64)
    except ValueError:
        odd = sorted(k for k in kinds if k not in ("train", "test"))
        raise AqaError(
            f"{what}: split values must be train/test or fold numbers, got {odd[:5]}"
        ) from None
    ks = sorted(set(numbers.tolist()))
    if len(ks) < 2:
        raise AqaError(f"{what}: cross-validation needs at least 2 fold numbers, got {ks}")
    return [
        Fold(f"fold{k}", np.flatnonzero(numbers != k), np.flatnonzero(numbers == k)) for k in ks
    ]


def random_split(n: int, test_fraction: float, seed: int, what: str) -> list[Fold]:
    """One seeded random train/test fold over n rows."""
    if not 0 < test_fraction < 1:
        raise AqaError(f"{what}: test_fraction must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * test_fraction))
    if n_test >= n:
        raise AqaError(f"{what}: {n} rows are too few to split")
    return [Fold("split", np.sort(perm[n_test:]), np.sort(perm[:n_test]))]


def labels_from_rows(
    name: str,
    path: Path,
    rows: Sequence[tuple[str, float, str, Any]],
    score_name: str = "score",
    fold_name: str = "split",
) -> LabelSet:
    """(video_id, score, train|test, extras) rows -> a LabelSet with one fold `fold_name`;
    NaN/inf scores are named (as `path: score_name`)."""
    ids = [r[0] for r in rows]
    score = np.array([r[1] for r in rows], dtype=np.float64)
    check_finite(score, ids, f"{path}: {score_name}")
    (fold,) = folds_from_split_column([r[2] for r in rows], f"{path}: {fold_name}")
    fold.name = fold_name
    return LabelSet(name=name, source=str(path), video_ids=ids, score=score, folds=[fold])
