"""A hub token as the kit holds it: the value read from the stack's env file, where it was
looked for and under which variable, and what to tell the user when it is missing. Its
``repr`` and ``str`` never show the value.

Read by :func:`kit.hub_source.token`; used by the hub clients (:mod:`kit.hub_client`,
:mod:`kit.hub_modelscope`) and their errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Token:
    """A hub token read from the env file. ``repr`` and ``str`` never show the value."""

    value: str | None
    #: where it was looked for: the env file's path, or None when the stack names none
    file: Path | None
    #: the variable it came from (or the first one looked for)
    variable: str

    def __repr__(self) -> str:
        state = "set" if self.value else "unset"
        return f"Token({self.variable} {state} in {self.file})"

    __str__ = __repr__


def token_hint(tok: Token) -> str:
    """What to do to give the kit a token, naming the file and the variable (never a value)."""
    if tok.file is None:
        return f"set defaults.api_key_env_file to an env file (chmod 600) holding {tok.variable}=<token>"
    if not tok.file.is_file():
        return f"create {tok.file} (chmod 600) with a line {tok.variable}=<token>"
    return f"put a line {tok.variable}=<token> in {tok.file}"
