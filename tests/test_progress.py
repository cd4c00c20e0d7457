"""Progress in batch logs: without a terminal `aqa extract` writes a line every N videos or
T seconds (done/total, clips/s, ETA); on a terminal a bar instead."""

from __future__ import annotations

import io
import re

import pytest
from click.testing import CliRunner

from aqa_pipeline.cli import main
from aqa_pipeline.errors import AqaError
from aqa_pipeline.extract.progress import ENV_EVERY, ENV_SECONDS, Progress

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d aqa extract: (\d+)/(\d+) videos \(\d+%\)(, \d+ failed)?, "
    r"(\d+) clips, [\d.]+ clips/s, elapsed \d+:\d\d:\d\d, ETA (\d+:\d\d:\d\d|\?)$"
)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_batch_log_lines_every_n_videos_under_clirunner(tmp_path, make_video, tiny_recipe,
                                                        monkeypatch):  # fmt: skip
    for i in range(4):
        make_video(f"v/{i}.mp4", 16, seed=i)
    (tmp_path / "v" / "broken.mp4").write_bytes(b"")
    monkeypatch.setenv(ENV_EVERY, "2")
    monkeypatch.setenv(ENV_SECONDS, "3600")
    res = CliRunner().invoke(main, ["extract", "--config", str(tiny_recipe()), "--input",
                                    str(tmp_path / "v"), "--output", str(tmp_path / "c.h5"),
                                    "--random-init", "--workers", "0", "--batch-size", "2"])  # fmt: skip
    assert res.exit_code == 4, res.output  # the broken one is recorded
    lines = [m for m in map(LINE.match, res.output.splitlines()) if m]
    done = [int(m.group(1)) for m in lines]
    assert done == [2, 4, 5]  # every 2 videos, then the last line at the end
    assert all(int(m.group(2)) == 5 for m in lines)
    assert int(lines[-1].group(4)) == 8 and lines[-1].group(3) == ", 1 failed"
    assert lines[-1].group(5) == "0:00:00"
    assert "it/s" not in res.output and "video/s" not in res.output  # no bar in a log


def test_lines_every_t_seconds_even_within_a_video(monkeypatch):
    monkeypatch.setenv(ENV_SECONDS, "0.001")
    out = io.StringIO()
    meter = Progress(10, progress=None, stream=out)
    meter.add_clips(3)
    meter._last_time -= 1  # as if a second went by
    meter.add_clips(3)
    meter.close()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 1 and all(LINE.match(line) for line in lines)
    assert "0/10 videos (0%), 6 clips" in lines[-1] and lines[-1].endswith("ETA ?")


def test_a_terminal_gets_a_bar_and_no_lines(monkeypatch):
    monkeypatch.setenv(ENV_EVERY, "1")
    out = Tty()
    meter = Progress(3, progress=None, stream=out)
    for _ in range(3):
        meter.video()
    meter.close()
    text = out.getvalue()
    assert "3/3" in text and not any(LINE.match(x) for x in re.split(r"[\r\n]", text))
    quiet = Tty()
    meter = Progress(3, progress=False, stream=quiet)  # --no-progress on a terminal
    meter.video()
    meter.close()
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_bad_interval_is_a_user_error_naming_the_variable(monkeypatch, value, tmp_path,
                                                          make_video, tiny_recipe):  # fmt: skip
    monkeypatch.setenv(ENV_SECONDS, value)
    with pytest.raises(AqaError, match=ENV_SECONDS):
        Progress(1, stream=io.StringIO())
    make_video("v/a.mp4", 16)
    res = CliRunner().invoke(main, ["extract", "--config", str(tiny_recipe()), "--input",
                                    str(tmp_path / "v"), "--output", str(tmp_path / "c.h5"),
                                    "--random-init", "--workers", "0"])  # fmt: skip
    assert res.exit_code == 1 and ENV_SECONDS in res.output and "Traceback" not in res.output
    assert not list(tmp_path.glob("c.h5*"))  # refused before any work
