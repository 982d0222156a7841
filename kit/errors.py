"""Exceptions that carry a message for the user.

Every failure the user can fix is a :class:`KitError`. The CLI turns them into exit codes in
one place (``kit.cli.main``); nothing else prints tracebacks for expected problems.
"""

from __future__ import annotations


class KitError(Exception):
    """A problem the user can act on. ``str(err)`` is the whole message."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class StackError(KitError):
    """The stack file is invalid. Holds every problem found, not just the first."""

    exit_code = 2

    def __init__(self, stack: str, problems: list[str]) -> None:
        self.stack = stack
        self.problems = list(problems)
        lines = [f"stack {stack}: {len(problems)} problem{'s' if len(problems) != 1 else ''}"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


class LintError(KitError):
    """A rendered compose file or a template failed a check."""

    exit_code = 3


class EngineError(KitError):
    """The Docker engine or compose failed, or is missing."""

    exit_code = 4


class NotReadyError(KitError):
    """A service crashed, or did not become ready in time."""

    exit_code = 5


class CheckFailed(KitError):
    """Smoke checks or a benchmark found failures."""

    exit_code = 6
