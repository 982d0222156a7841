"""``kit pull STACK [SERVICE...]``: the command line of :mod:`kit.pull` (loaded on use)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from kit.errors import KitError

if TYPE_CHECKING:
    from kit.pull import PullOptions, PullResult
    from kit.stack_plan import Plan

GIB = 1024**3


def run_pull(plan: Plan, services: list[str] | None, options: PullOptions) -> PullResult:
    """Pull with a progress display and a summary; Ctrl-C keeps what arrived for the next run."""
    from kit import pull
    from kit.pull_progress import PullDisplay
    from kit.report import console

    out = console(stderr=True)
    try:
        with PullDisplay(out) as display:
            result = pull.run(plan, services, options, listener=display)
    except KeyboardInterrupt:
        raise KitError(
            "interrupted: the verified files and the partial ones stay in the staging folders "
            "(.NAME.kit-pull beside each model folder, .kit-pull in an HF cache folder); no "
            "model folder or cached revision was left half-filled",
            hint="run the same kit pull again: it resumes where it stopped",
        ) from None
    for n in result.notes:
        out.print(f"note: {n}", markup=False, soft_wrap=True, highlight=False)
    done = {"fetch": "fetched", "update": "updated", "repair": "repaired"}
    for fp in result.folders:
        action = fp.action if options.dry_run else done.get(fp.action, fp.action)
        line = f"{action:<9} {fp.target.key}: {fp.target.source.repo} ({fp.lock_note}), "
        line += f"{len(fp.files)} files, {fp.total_bytes / GIB:.2f} GiB"
        if fp.action in ("fetch", "update", "repair"):
            verb = "to download" if options.dry_run else "downloaded"
            line += f", {len(fp.to_fetch)} {verb} ({fp.bytes_needed / GIB:.2f} GiB)"
        if fp.action == "unchecked":
            line += " - present, not pulled by the kit: not checked (kit pull --verify checks it)"
        skipped = fp.selection.summary()
        if skipped:
            line += f"; left out: {skipped}"
        out.print(line, markup=False, soft_wrap=True, highlight=False)
    return result


@click.command("pull")
@click.argument("stack")
@click.argument("services", nargs=-1)
@click.option(
    "--update", is_flag=True, help="Resolve each revision again and move the lock forward."
)
@click.option("--verify", is_flag=True, help="Hash every file of folders already present; repair.")
@click.option("--dry-run", is_flag=True, help="Resolve and check the disk; download nothing.")
@click.option("--workers", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Files downloaded at once.")  # fmt: skip
def pull_command(stack: str, services: tuple[str, ...], update: bool, verify: bool,
                 dry_run: bool, workers: int) -> None:  # fmt: skip
    """Download STACK's model folders (or SERVICES') from their hub, verified and pinned.

    Services name their source with `pull: org/name` (or repo/revision/hub). The commit and
    every file's checksum go to STACK.lock.json beside the stack file; the next pull fetches
    the same bytes (--update moves it forward). Interrupted pulls resume.
    """
    from kit.plan import build_plan
    from kit.pull import PullOptions
    from kit.spec import load_stack

    plan = build_plan(load_stack(stack))
    opts = PullOptions(update=update, verify=verify, dry_run=dry_run, workers=workers)
    result = run_pull(plan, list(services) or None, opts)
    where = _rel(result.lock_file)
    if dry_run:
        need = sum(fp.bytes_needed for fp in result.folders)
        click.echo(
            f"dry run: {need / GIB:.2f} GiB to download; disk space is enough; nothing written"
        )
        return
    click.echo(
        f"pull: {len(result.folders)} folder{'s' if len(result.folders) != 1 else ''} ready, "
        f"{result.fetched_files} files ({result.downloaded_bytes / GIB:.2f} GiB) downloaded in "
        f"{result.elapsed:.1f}s; lock: {where}"
    )


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)
