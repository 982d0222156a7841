"""The service field ``pull:``: a model folder's source on a hub, as the stack file says it.

A stack-file type like :mod:`kit.gateway_spec` (validated with the stack by :mod:`kit.spec`);
what the kit does with it, from a plan, lives in :mod:`kit.hub_source` and :mod:`kit.pull`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

#: a hub id (``org/name``) and a revision (branch, tag or commit)
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")


class PullSource(BaseModel):
    """A model folder's source on a hub (the service field ``pull``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repo: str
    revision: str = "main"
    hub: Literal["huggingface", "modelscope"] = "huggingface"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):  # pull: org/name
            return {"repo": v}
        if isinstance(v, dict) and v.get("hub") == "modelscope" and "revision" not in v:
            return {**v, "revision": "master"}  # ModelScope's default branch
        return v

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not REPO_ID.match(v) or ".." in v:
            raise ValueError(f"must be a hub id such as deepseek-ai/DeepSeek-V3-0324, got {v!r}")
        return v

    @field_validator("revision")
    @classmethod
    def _revision(cls, v: str) -> str:
        if not REVISION.match(v) or ".." in v:
            raise ValueError(f"must be a branch, tag or commit hash such as main, got {v!r}")
        return v
