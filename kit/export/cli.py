"""``kit export``: the stack in other systems' formats (loaded on use by ``kit.cli``)."""

from __future__ import annotations

from pathlib import Path

import click

from kit.export.k8s import FORMATS


@click.group("export")
def export_command() -> None:
    """Export STACK for another system (Kubernetes)."""


@export_command.command("k8s")
@click.argument("stack")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="manifests",
    show_default=True,
    help="production-stack: values for vLLM's Helm chart; manifests: plain Kubernetes objects.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Write the file here (a folder: its default name inside) instead of stdout.",
)
def k8s_command(stack: str, fmt: str, output: Path | None) -> None:
    """Kubernetes objects or production-stack values for STACK (see README: what maps)."""
    from kit.cli import _plan
    from kit.export import export

    result = export(_plan(stack), fmt)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    ((name, text),) = result.files.items()
    if output is None:
        click.echo(text, nl=False)
        return
    target = output / name if output.is_dir() else output
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    click.echo(f"wrote {target}", err=True)
