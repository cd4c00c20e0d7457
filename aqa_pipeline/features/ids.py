"""Identifying the input set of a cache: what its shards record and `aqa features merge`
checks (every shard of one extraction saw the same input set)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def ids_digest(video_ids: Iterable[str]) -> str:
    """sha256 of the sorted id list: identifies an input set across shards."""
    return hashlib.sha256("\n".join(sorted(video_ids)).encode()).hexdigest()
