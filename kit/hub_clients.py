"""Which client talks to which hub: :class:`~kit.hub_client.HuggingFaceHub` for
``huggingface``, :class:`~kit.hub_modelscope.ModelScopeHub` for ``modelscope``. Above both, so
neither client module knows the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kit.errors import KitError
from kit.hub_client import HubClient, HuggingFaceHub

if TYPE_CHECKING:
    from kit.hub_token import Token


def client_for(hub: str, endpoint: str, token: Token) -> HubClient:
    """The client for ``hub`` (``huggingface``; other hubs plug in here)."""
    if hub == "huggingface":
        return HuggingFaceHub(endpoint, token)
    if hub == "modelscope":
        from kit.hub_modelscope import ModelScopeHub

        return ModelScopeHub(endpoint, token)
    raise KitError(f"unknown hub {hub!r}")
