"""Progress of an extraction: a bar on a terminal, log lines in batch logs.

On a terminal (or with `--progress`) a tqdm bar counts videos. Without a terminal (Slurm,
nohup, a pipe) a line goes to stderr every `AQA_PROGRESS_EVERY` videos (default 100) or
`AQA_PROGRESS_SECONDS` seconds (default 30), whichever comes first:

    2026-01-02 10:11:12 aqa extract: 120/1000 videos (12%), 3 failed, 860 clips, 14.3 clips/s, elapsed 0:01:00, ETA 0:07:20

`--no-progress` on a terminal shows neither.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timedelta
from typing import TextIO

from tqdm import tqdm

from aqa_pipeline.errors import AqaError

ENV_EVERY = "AQA_PROGRESS_EVERY"
ENV_SECONDS = "AQA_PROGRESS_SECONDS"


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise AqaError(f"environment variable {name}={raw!r}: expected a number") from None
    if value <= 0:
        raise AqaError(f"environment variable {name}={raw!r}: must be > 0")
    return value


def settings() -> tuple[int, float]:
    """(videos, seconds) between log lines, from the environment (AqaError naming a bad
    variable); called before any work so a typo fails at once."""
    return int(_env_number(ENV_EVERY, 100)), _env_number(ENV_SECONDS, 30.0)


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(round(seconds))))


class Progress:
    """Counts finished videos and clips; shows a bar or writes log lines (see the module).

    progress: True = bar, False = no bar, None = a bar only on a terminal. Lines are written
    whenever there is no bar and `stream` (default stderr) is not a terminal."""

    def __init__(
        self,
        total: int,
        progress: bool | None = None,
        label: str = "aqa extract",
        stream: TextIO | None = None,
    ):
        self.total = total
        self.label = label
        self.stream = stream
        out = stream if stream is not None else sys.stderr
        tty = bool(getattr(out, "isatty", lambda: False)())
        show_bar = tty if progress is None else progress
        self.bar = tqdm(total=total, unit="video", disable=not show_bar, file=stream)
        self.lines = not show_bar and not tty
        self.every, self.seconds = settings()
        self.done = 0
        self.failed = 0
        self.clips = 0
        self.start = time.monotonic()
        self._last_time = self.start
        self._last_done = 0

    def video(self, failed: bool = False) -> None:
        """One more video finished (or failed)."""
        self.done += 1
        self.failed += int(failed)
        self.bar.update(1)
        self._maybe_log()

    def add_clips(self, n: int) -> None:
        """`n` more clips through the backbone (a line may be due mid-video)."""
        self.clips += n
        self._maybe_log()

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.clips / elapsed if elapsed > 0 else 0.0
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = "?"
        if self.done and self.total:
            eta = _clock(elapsed / self.done * (self.total - self.done))
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"{datetime.now():%Y-%m-%d %H:%M:%S} {self.label}: {self.done}/{self.total} videos"
            f"{pct}{failed}, {self.clips} clips, {rate:.2f} clips/s, elapsed {_clock(elapsed)}, "
            f"ETA {eta}"
        )

    def _maybe_log(self) -> None:
        if not self.lines:
            return
        now = time.monotonic()
        if self.done - self._last_done >= self.every or now - self._last_time >= self.seconds:
            self._write()

    def _write(self) -> None:
        out = self.stream if self.stream is not None else sys.stderr
        print(self.line(), file=out, flush=True)
        self._last_time = time.monotonic()
        self._last_done = self.done

    def close(self) -> None:
        """Ends the bar; in batch logs, a last line unless the last one is up to date."""
        self.bar.close()
        if self.lines and self.done and self.done != self._last_done:
            self._write()
