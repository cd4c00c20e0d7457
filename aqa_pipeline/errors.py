"""User-facing errors and the documented exit codes of the `aqa` tool.

Exit codes:
    0  success
    1  a user error (bad input, missing file, invalid config): the message names it
    2  command-line usage error (click)
    3  cache / config mismatch: the message names the differing fields
    4  the run finished but some inputs failed (each failure is recorded with its reason)
"""

from __future__ import annotations

import click

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_MISMATCH = 3
EXIT_SOME_FAILED = 4


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
