"""Where a host of a stack over several hosts (``hosts:``) listens and is reached: its bind
address, the address the kit and clients use for its ports, whether its engine is this machine,
and which host runs the gateway (a host the gateway reaches from another host binds to its
``address``).

Plain functions of the validated stack, below both :mod:`kit.hosts` (planning, engines) and
:mod:`kit.multinode` / :mod:`kit.gateway_hosts` (models and replicas over hosts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kit.spec import HostEntry, Stack

_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def is_local(entry: HostEntry) -> bool:
    """The host's engine runs on this machine (a unix socket, or the CLI's default engine)."""
    return entry.context in (None, "default") and (
        entry.docker is None or entry.docker.startswith("unix://")
    )


def gateway_host(stack: Stack) -> str | None:
    """The host the stack's gateway runs on (None: no gateway)."""
    if stack.gateway is None or stack.hosts is None:
        return None
    return stack.gateway.host or next(iter(stack.hosts))


def reached_remotely(stack: Stack, host: str) -> bool:
    """The gateway runs on another host and reaches ``host``'s engines at its address."""
    g = gateway_host(stack)
    return g is not None and host != g


def default_bind(stack: Stack, host: str) -> str | None:
    """``host``'s bind address when its ``bind_address`` is not set: its ``address`` when the
    gateway reaches it from another host (None: the stack's default)."""
    assert stack.hosts is not None
    entry = stack.hosts[host]
    if reached_remotely(stack, host) and entry.address:
        return entry.address
    return None


def bind_address(stack: Stack, host: str) -> str:
    assert stack.hosts is not None
    return (
        stack.hosts[host].bind_address or default_bind(stack, host) or stack.defaults.bind_address
    )


def api_address(stack: Stack, host: str) -> str:
    """Where the kit and clients reach the ports published on ``host``."""
    assert stack.hosts is not None
    entry = stack.hosts[host]
    if entry.api_address:
        return entry.api_address
    bind = bind_address(stack, host)
    if is_local(entry):
        return _LOOPBACK.get(bind, bind)
    return entry.address or _LOOPBACK.get(bind, bind)
