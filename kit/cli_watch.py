"""``kit watch STACK``: the command line of :mod:`kit.multinode_watch` (loaded on use)."""

from __future__ import annotations

import click

from kit.errors import NotReadyError
from kit.multinode_watch import UNREACHABLE_GRACE_S, WATCH_INTERVAL_S


@click.command("watch")
@click.argument("stack")
@click.option("--interval", type=float, default=WATCH_INTERVAL_S, show_default=True,
              help="Seconds between two looks at every host.")  # fmt: skip
@click.option("--timeout", type=float, default=None,
              help="Stop watching after this many seconds (default: until nothing is left).")  # fmt: skip
@click.option("--once", is_flag=True, help="Look once (tear down what lost a node), then stop.")
@click.option("--grace", type=float, default=UNREACHABLE_GRACE_S, show_default=True,
              help="Seconds a host's engine may not answer before its parts count as lost.")  # fmt: skip
def watch_command(
    stack: str, interval: float, timeout: float | None, once: bool, grace: float
) -> None:
    """Follow STACK's models over several hosts; one that loses a node is diagnosed and taken
    down on every host (exit status 5 then)."""
    from kit.multinode_watch import watch_stack

    done = watch_stack(
        stack,
        interval=interval,
        timeout=timeout,
        once=once,
        grace=grace,
        say=lambda m: click.echo(m, err=True),
    )
    if done:
        raise NotReadyError(
            "; ".join(f"service '{t.service}' torn down after {t.why}" for t in done),
            hint="`kit status` shows it; `kit up STACK` serves it again (the others stay as they are)",
        )
