"""User-facing errors and the documented exit codes of the `aqa` tool.

Exit codes:
    0  success
    1  a user error (bad input, missing file, invalid config): the message names it
    2  command-line usage error (click)
    3  cache / config mismatch: the message names the differing fields
    4  the run finished but some inputs failed (each failure is recorded with its reason)
  130  interrupted (Ctrl-C): finished work is kept; rerunning the same command resumes
"""

from __future__ import annotations

import click

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_MISMATCH = 3
EXIT_SOME_FAILED = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class AqaError(click.ClickException):
    """A user error with a clear message; exits with `exit_code` (1 by default)."""

    exit_code = EXIT_USER_ERROR


class MismatchError(AqaError):
    """A cache or config does not match what the command requires (exit 3)."""

    exit_code = EXIT_MISMATCH

    def __init__(self, message: str, fields: dict[str, tuple[object, object]] | None = None):
        self.fields = dict(fields or {})
        if self.fields:
            detail = "; ".join(f"{k}: {a!r} != {b!r}" for k, (a, b) in sorted(self.fields.items()))
            message = f"{message} (differing fields: {detail})"
        super().__init__(message)


class SomeFailedError(AqaError):
    """Work finished but some inputs failed; their reasons are recorded (exit 4)."""

    exit_code = EXIT_SOME_FAILED


class Interrupted(AqaError):
    """The user interrupted the work (Ctrl-C); what was finished is kept (exit 130)."""

    exit_code = EXIT_INTERRUPTED
