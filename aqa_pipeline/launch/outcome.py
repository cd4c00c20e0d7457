"""How one task of a launch ended: its result, or why it died and where its logs are."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TaskOutcome:
    """Task `index` of a launch: `result` (what its callable returned) or `error` + `logs`."""

    index: int
    result: Any = None
    error: str = ""
    logs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error
