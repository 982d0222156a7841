"""The ``kit`` command line. Thin: parse options, call the library, print.

Errors are :class:`~kit.errors.KitError` and become exit codes in one place: :func:`main`.
"""

from __future__ import annotations

from pathlib import Path

import click

from kit import __version__
from kit.errors import KitError
from kit.lint import lint_stack, lint_templates
from kit.plan import Plan, build_plan
from kit.render import RenderOptions, render_compose
from kit.report import console, print_plan
from kit.spec import list_stacks, load_stack


def _plan(stack: str) -> Plan:
    plan = build_plan(load_stack(stack))
    err = console(stderr=True)
    for w in plan.warnings:
        err.print(f"warning: {w}", style="yellow")
    return plan


class KitGroup(click.Group):
    """Turns :class:`KitError` into a message on stderr and its exit code: the one place."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KitError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=KitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kit")
def cli() -> None:
    """Declarative vLLM stacks on multi-GPU hosts.

    STACK is a stack file, or the name of one under stacks/.
    """


@cli.command()
@click.argument("stack")
def plan(stack: str) -> None:
    """Show the GPU map, start order and each service's engine command line."""
    p = build_plan(load_stack(stack))
    print_plan(console(), p)


@cli.command()
@click.argument("stack")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the compose file here instead of stdout.",
)
@click.option(
    "--image", metavar="IMAGE", help="Replace every service's image (tests and simulations only)."
)
def render(stack: str, output: Path | None, image: str | None) -> None:
    """Print the compose file for STACK (or write it with -o)."""
    text = render_compose(_plan(stack), RenderOptions(image=image))
    if output is None:
        click.echo(text, nl=False)
        return
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)
    click.echo(f"wrote {output}", err=True)


@cli.command()
@click.argument("stacks", nargs=-1)
def lint(stacks: tuple[str, ...]) -> None:
    """Check templates, and render and validate STACKS (default: every stack in stacks/)."""
    refs: list[str | Path] = list(stacks) or list(list_stacks())
    if not refs:
        raise KitError("no stacks to lint: none given and none under stacks/")
    results = [lint_templates(), *(lint_stack(r) for r in refs)]
    failed = 0
    for res in results:
        if res.ok:
            click.echo(f"ok    {res.target}")
        else:
            failed += 1
            click.echo(f"FAIL  {res.target}")
            for p in res.problems:
                click.echo("      " + p.replace("\n", "\n      "))
        for w in res.warnings:
            click.echo(f"      warning: {w}")
    if failed:
        raise KitError(f"lint: {failed} of {len(results)} failed")
    click.echo(f"lint: {len(results)} passed")


def main() -> None:
    cli(prog_name="kit")


if __name__ == "__main__":  # pragma: no cover
    main()
