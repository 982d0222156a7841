"""The ``kit`` command line. Thin: parse options, call the library, print.

Errors are :class:`~kit.errors.KitError` and become exit codes in one place: :func:`main`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kit import __version__
from kit.errors import KitError, LintError

if TYPE_CHECKING:  # imported where used: `kit --help` loads none of them (see bench/cli_startup.py)
    from kit.stack_plan import Plan


def _plan(stack: str, *, notes: bool = True) -> Plan:
    """Plan STACK and show its notes and warnings on stderr (stdout may be a compose file)."""
    plan = build_plan(load_stack(stack))
    show_notes(plan, notes=notes)
    return plan


def show_notes(plan: Plan, *, notes: bool = True) -> None:
    """Every command that plans says what the plan changed (notes) and what to look at
    (warnings), on stderr."""
    if notes:
        for n in plan.notes:
            click.echo(f"note: {n}", err=True)
    for w in plan.warnings:
        click.secho(f"warning: {w}", err=True, fg="yellow")


# Lazy stand-ins for library functions the commands call: importing them here would load
# pydantic, rich and jinja2 for every command, `kit --help` included.
def console(stderr: bool = False):  # type: ignore[no-untyped-def]
    from kit.report import console as make

    return make(stderr=stderr)


def relative_path(path: str) -> str:
    from kit.report import relative_path as rel

    return rel(path)


def load_stack(ref: str):  # type: ignore[no-untyped-def]
    from kit.spec import load_stack as load

    return load(ref)


def build_plan(stack):  # type: ignore[no-untyped-def]
    from kit.plan import build_plan as build

    return build(stack)


#: commands imported on first use: name -> (module:attribute, one-line help for `kit --help`)
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "batch": ("kit.cli_batch:batch_command", "Send an OpenAI-format batch file to SERVICE."),
    "train": ("kit.train.cli:train_command", "Run training JOB of STACK and serve its adapter."),
    "eval": ("kit.train.cli:eval_command", "Compare models on held-out prompts (one metric)."),
    "pull": ("kit.cli_pull:pull_command", "Download STACK's model folders, verified and pinned."),
    "export": ("kit.export.cli:export_command", "Export STACK for Kubernetes (k8s)."),
    "watch": ("kit.cli_watch:watch_command", "Tear down a model over hosts that lost a node."),
}


class KitGroup(click.Group):
    """Turns :class:`KitError` into a message on stderr and its exit code: the one place.
    Also loads heavy subcommands (:data:`LAZY_COMMANDS`) only when they run."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KitError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            module, _, attr = LAZY_COMMANDS[cmd_name][0].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in LAZY_COMMANDS and name not in self.commands:
                rows.append((name, LAZY_COMMANDS[name][1]))
                continue
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


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
    from kit.report import print_plan

    p = _plan(stack, notes=False)  # the plan prints its notes itself
    if p.stack.hosts is not None:  # one section per host, then the models over several
        from kit.hosts import print_plan as print_hosts_plan

        print_hosts_plan(console(), p)
        return
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
@click.option("--host", "host", metavar="HOST", help="A stack over several hosts: HOST's file.")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="A stack over several hosts: write one compose file per host here (HOST.yml).",
)
def render(stack: str, output: Path | None, image: str | None, host: str | None = None,
           folder: Path | None = None) -> None:  # fmt: skip
    """Print the compose file for STACK (or write it with -o); one per host with --host/--dir."""
    from kit.hosts import compose_texts, pick_host_file
    from kit.render import RenderOptions

    texts = compose_texts(_plan(stack), RenderOptions(image=image))
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, body in texts.items():
            target = folder / f"{name or 'docker-compose'}.yml"
            target.write_text(body, encoding="utf-8")
            click.echo(f"wrote {target}", err=True)
        return
    text = pick_host_file(texts, host)
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
    from kit.lint import lint_stack, lint_templates
    from kit.spec import list_stacks

    refs: list[str | Path] = list(stacks) or list(list_stacks())
    if not refs:
        raise KitError("no stacks to lint: none given and none under stacks/")
    results = [lint_templates(), *(lint_stack(r) for r in refs)]
    failed = 0
    for res in results:
        target = relative_path(res.target)
        if res.ok:
            click.echo(f"ok    {target}")
        else:
            failed += 1
            click.echo(f"FAIL  {target}")
            for p in res.problems:
                click.echo("      " + p.replace("\n", "\n      "))
        for w in res.warnings:
            click.echo(f"      warning: {w}", err=True)
    if failed:
        raise LintError(f"lint: {failed} of {len(results)} failed")
    click.echo(f"lint: {len(results)} passed")


def _project(plan: Plan, image: str | None = None):  # type: ignore[no-untyped-def]
    from kit.hosts import make_engine
    from kit.render import RenderOptions

    return make_engine(plan, RenderOptions(image=image))


def _deployment(stack: str):  # type: ignore[no-untyped-def]
    """What runs for STACK, from its deployment record (not from today's stack file)."""
    from kit.record import deployed

    return deployed(stack)


IMAGE_OPTION = click.option(
    "--image",
    metavar="IMAGE",
    help="Replace every service's image (tests and simulations only).",
)


@cli.command()
@click.argument("stack")
@click.option(
    "--timeout",
    type=float,
    metavar="SECONDS",
    help="Start-up budget per service (default: from the model's size, or the "
    "service's startup_timeout).",
)
@click.option(
    "--keep-on-failure", is_flag=True, help="Keep containers of a failed start for debugging."
)
@click.option(
    "--pull",
    is_flag=True,
    help="First download missing model folders that name a pull: source (and hub models into "
    "defaults.cache.hf).",
)
@IMAGE_OPTION
def up(stack: str, timeout: float | None, keep_on_failure: bool, image: str | None,
       pull: bool = False) -> None:  # fmt: skip
    """Start STACK in plan order and wait until every service is ready."""
    from kit import lifecycle
    from kit.progress import Display

    if pull:  # then plan again: shapes and fit from the pulled config.json and weights
        from kit.cli_pull import run_pull
        from kit.pull import PullOptions

        run_pull(build_plan(load_stack(stack)), None, PullOptions(only_missing=True))
    plan = _plan(stack)
    project = _project(plan, image)
    out = console()
    if image:
        out.print(
            f"IMAGE OVERRIDE (tests, simulations): every service runs {image}, not {plan.stack.defaults.image}",
            style="bold yellow",
        )
    out.print(
        f"starting '{plan.stack.name}' ({len(plan.services)} services) from {project.compose_file}"
    )
    with Display(out) as display:
        result = lifecycle.up(plan, project, timeout=timeout, keep_on_failure=keep_on_failure,
                              listener=display, say=lambda m: out.print(f"  {m}", markup=False))  # fmt: skip
    for p in result.services:
        ep = f"{plan.stack.defaults.bind_address}:{p.service.port}"
        if p.service.api_address:  # a stack over several hosts (kit.hosts)
            ep = f"{p.service.api_address}:{p.service.port} (host {'+'.join(n.host for n in p.service.nodes) or p.service.host})"
        if not p.service.published:
            ep = f"{p.name}:8000 (stack network, via the gateway)"
        out.print(f"  ready  {p.name:<20} {p.service.served_name:<28} http://{ep}  after {p.ready_at or 0:.1f}s",
                  markup=False, soft_wrap=True)  # fmt: skip
    out.print(f"stack '{plan.stack.name}' is ready after {result.elapsed:.1f}s", style="bold green")


@cli.command()
@click.argument("stack")
@click.option("--volumes", is_flag=True, help="Also remove the stack's named volumes (caches).")
def down(stack: str, volumes: bool) -> None:
    """Stop and remove STACK's containers and network (succeeds if it is not up)."""
    from kit import lifecycle

    name = lifecycle.down_stack(stack, volumes=volumes, warn=lambda m: click.echo(m, err=True))
    click.echo(f"stack '{name}' is down")


@cli.command()
@click.argument("stack")
def status(stack: str) -> None:
    """Containers, health, GPUs and endpoints of STACK."""
    from rich import box
    from rich.table import Table

    from kit import lifecycle

    dep = _deployment(stack)
    plan = dep.plan
    project = _project(plan, dep.image_override)
    rows = lifecycle.status(plan, project)
    err = console(stderr=True)
    if dep.state != "ready":
        err.print(f"deployment state: {dep.state}" + (f" ({dep.detail})" if dep.detail else ""),
                  style="yellow", markup=False, soft_wrap=True)  # fmt: skip
    drift = dep.drift()
    if drift:
        err.print(f"warning: {drift}", style="yellow", markup=False, soft_wrap=True)
    t = Table(title=f"stack '{plan.stack.name}'", box=box.SIMPLE_HEAD, title_justify="left")
    hosts = plan.stack.hosts is not None  # a stack over several hosts: where each runs
    for col in (
        "service",
        *(["host"] if hosts else []),
        "kind",
        "GPUs",
        "NVIDIA_VISIBLE_DEVICES",
        "container",
        "health",
        "model",
        "url",
    ):
        t.add_column(col)
    for r in rows:
        t.add_row(r.name, *([r.host] if hosts else []), r.kind, r.gpus, r.visible_devices,
                  r.container, r.health, r.served, r.url)  # fmt: skip
    console().print(t)
    if hosts:  # a model over several hosts that lost a node: what happened, what will
        from kit.multinode_watch import DockerHosts, status_notes

        for note in status_notes(plan.stack.name, plan, dep.torn_down, DockerHosts(project)):
            console().print(note, style="yellow", markup=False, soft_wrap=True)


@cli.command()
@click.argument("stack")
@click.argument("service", required=False)
@click.option("-n", "--tail", type=int, default=200, show_default=True, help="Lines per service.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
def logs(stack: str, service: str | None, tail: int, follow: bool) -> None:
    """Logs of STACK, or of one SERVICE."""
    dep = _deployment(stack)
    plan = dep.plan
    if service is not None:
        plan.service(service)  # a clear error for an unknown name
    project = _project(plan, dep.image_override)
    if follow:
        for _source, line in project.follow_logs(service, tail=tail):
            click.echo(line.decode("utf-8", "replace"), nl=False)
    else:
        click.echo(project.logs(service, tail=tail), nl=False)


@cli.command()
@click.argument("stack")
@click.argument("services", nargs=-1)
@click.option("--max-tokens", type=int, default=64, show_default=True)
def smoke(stack: str, services: tuple[str, ...], max_tokens: int) -> None:
    """Check every endpoint of STACK (or of SERVICES) with real requests."""
    from kit.errors import CheckFailed
    from kit.report import check_table
    from kit.smoke import smoke as run_smoke

    plan = _deployment(stack).plan
    if plan.gateway is not None:  # every model through the one endpoint, published ones also direct
        from kit.gateway_smoke import smoke_via_gateway

        checks = smoke_via_gateway(plan, list(services) or None, max_tokens=max_tokens)
        direct = [s.name for s in plan.services if s.published
                  and (not services or (s.replica_of or s.name) in services)]  # fmt: skip
        checks += run_smoke(plan, direct, max_tokens=max_tokens) if direct else []
    else:
        checks = run_smoke(plan, list(services) or None, max_tokens=max_tokens)
    console().print(check_table(checks))
    failed = [c for c in checks if not c.ok]
    if failed:
        raise CheckFailed(f"smoke: {len(failed)} of {len(checks)} checks failed")
    click.echo(f"smoke: {len(checks)} passed, 0 failed")


@cli.command()
@click.argument("stack")
@click.option("-i", "--interval", type=float, default=2.0, show_default=True, help="Seconds.")
@click.option("-n", "--iterations", type=int, help="Stop after this many refreshes.")
def top(stack: str, interval: float, iterations: int | None) -> None:
    """Live per-engine view of STACK from /metrics: requests, KV cache, tokens/s, TTFT."""
    from kit import top as view

    dep = _deployment(stack)
    view.run(dep.plan, _project(dep.plan, dep.image_override), console(), interval=interval,
             iterations=iterations)  # fmt: skip


@cli.command()
@click.argument("stack", required=False)
def doctor(stack: str | None) -> None:
    """Check this machine (and STACK's needs): engine, compose, NVIDIA, GPUs, ports, disk."""
    from kit.doctor import doctor as run_doctor
    from kit.report import findings_table

    plan = build_plan(load_stack(stack)) if stack else None
    if plan is not None and plan.stack.hosts is not None:  # each host's engine (kit.hosts)
        from kit.hosts import doctor_hosts

        findings = doctor_hosts(plan)
    else:
        findings = run_doctor(plan)
    console().print(findings_table(findings))
    bad = [f for f in findings if f.status == "fail"]
    if bad:
        raise KitError(f"doctor: {len(bad)} problem{'s' if len(bad) > 1 else ''} to fix")


@cli.command()
@click.option(
    "--image",
    default="kit-engine-double:dev",
    show_default=True,
    help="The engine double image (scripts/build-double-image.sh builds it).",
)
@click.option("--stack", "stack", default="sim-demo", show_default=True)
@click.option("--keep", is_flag=True, help="Leave the simulated stack running at the end.")
@click.pass_context
def demo(ctx: click.Context, image: str, stack: str, keep: bool) -> None:
    """SIMULATION: the full loop (up, status, smoke, down) on the engine double, no GPU needed."""
    out = console()
    out.rule("[bold yellow]SIMULATION - engine double, fake GPUs, no real model[/]")
    ctx.invoke(up, stack=stack, timeout=None, keep_on_failure=False, image=image)
    ctx.invoke(status, stack=stack)
    try:
        ctx.invoke(smoke, stack=stack, services=(), max_tokens=16)
    finally:
        if not keep:
            ctx.invoke(down, stack=stack, volumes=False)
    out.rule("[bold yellow]end of SIMULATION[/]")


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a comma-separated list of whole numbers"
        ) from None
    if not vals or min(vals) < 1:
        raise click.BadParameter(f"{text!r}: give whole numbers of at least 1, e.g. 1,8,32")
    return vals


@cli.command()
@click.argument("stack")
@click.argument("service", required=False)
@click.option(
    "-p",
    "--parallel",
    default="32",
    show_default=True,
    metavar="N[,N...]",
    help="Requests in flight; a list makes a sweep (paired with --number).",
)
@click.option(
    "-n",
    "--number",
    default="200",
    show_default=True,
    metavar="N[,N...]",
    help="Requests per run; a list makes a sweep.",
)
@click.option(
    "--rate",
    type=float,
    help="Poisson arrivals at this many requests/s (default: as fast as --parallel allows).",
)
@click.option(
    "--stream/--no-stream",
    default=True,
    show_default=True,
    help="Stream chat/completions (needed for TTFT/ITL).",
)
@click.option(
    "--api",
    type=click.Choice(["chat", "completions", "embeddings", "rerank"]),
    help="Default: chat, embeddings or rerank by the service's kind.",
)
@click.option(
    "--dataset",
    type=click.Choice(["synthetic", "openqa", "messages"]),
    default="synthetic",
    show_default=True,
)
@click.option(
    "--dataset-path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL: openqa lines with a 'question', or messages lines.",
)
@click.option(
    "--prompt-tokens", type=int, default=128, show_default=True, help="Words per synthetic prompt."
)
@click.option(
    "--min-prompt-length", type=int, default=0, help="Drop prompts shorter than this (characters)."
)
@click.option("--max-prompt-length", type=int, help="Drop prompts longer than this (characters).")
@click.option("--max-tokens", type=int, default=128, show_default=True)
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@click.option("--ignore-eos", is_flag=True, help="Ask vLLM to generate exactly --max-tokens.")
@click.option(
    "--documents", type=int, default=8, show_default=True, help="Documents per rerank request."
)
@click.option(
    "--read-timeout",
    type=float,
    default=1200.0,
    show_default=True,
    help="Seconds without data before a request fails.",
)
@click.option(
    "--warmup",
    type=int,
    default=0,
    show_default=True,
    help="Requests sent first and left out of the figures.",
)
@click.option(
    "--mix",
    metavar="NAME=P,...",
    help="Drive several services at once, e.g. chat=8,embed=4,rerank=4.",
)
@click.option(
    "--baseline",
    is_flag=True,
    help="With --mix: run each service alone first, to show the slowdown.",
)
@click.option(
    "--max-failure-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Exit non-zero when a run's failure rate is above this.",
)
@click.option(
    "--results",
    "results_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results"),
    show_default=True,
)
@click.option("--no-plots", is_flag=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--via", type=click.Choice(["gateway"]),
              help="Send the requests through the stack's gateway (by model name).")  # fmt: skip
def bench(stack: str, service: str | None, parallel: str, number: str, rate: float | None,
          stream: bool, api: str | None, dataset: str, dataset_path: Path | None,
          prompt_tokens: int, min_prompt_length: int, max_prompt_length: int | None,
          max_tokens: int, stop: tuple[str, ...], ignore_eos: bool, documents: int,
          read_timeout: float, warmup: int, mix: str | None, baseline: bool,
          max_failure_rate: float, results_dir: Path, no_plots: bool, seed: int,
          via: str | None = None) -> None:  # fmt: skip
    """Load-test SERVICE of STACK (chat, embed or rerank), or several services with --mix."""
    from kit import bench as b
    from kit.errors import CheckFailed
    from kit.loadgen import error_summary
    from kit.report import BenchProgress, bench_table
    from kit.workload import WorkloadSpec

    plan = _deployment(stack).plan
    opts = b.BenchOptions(
        pairs=b.parse_pairs(_ints(parallel), _ints(number)),
        rate=rate, warmup=warmup, read_timeout=read_timeout,
        max_failure_rate=max_failure_rate, results_dir=results_dir, plots=not no_plots, api=api,
        via=via,
        workload=WorkloadSpec(
            api="chat", dataset=dataset, dataset_path=dataset_path, prompt_tokens=prompt_tokens,
            max_tokens=max_tokens, stream=stream, stop=stop, ignore_eos=ignore_eos,
            min_prompt_length=min_prompt_length, max_prompt_length=max_prompt_length,
            documents=documents, seed=seed,
        ),
    )  # fmt: skip
    mix_map = b.parse_mix(mix, plan) if mix else None
    if baseline and not mix_map:
        raise KitError("--baseline goes with --mix")
    out = console()
    with BenchProgress(out) as progress:
        result = b.run_bench(plan, service, opts, mix=mix_map, baseline=baseline, progress=progress)
    out.print(bench_table(result))
    for r in result.runs:
        errors = error_summary(r.records)
        if errors:
            out.print(
                f"{r.spec.label}: {r.summary['failed']} failed; first errors:", style="bold red"
            )
            for e in errors:
                out.print(f"  {e[:500]}", markup=False, soft_wrap=True)
    out.print(f"results: {relative_path(str(result.folder))}", soft_wrap=True)
    bad = result.failed_runs(opts.max_failure_rate)
    if bad:
        worst = max(r.summary["failure_rate"] for r in bad)
        raise CheckFailed(
            f"bench: failure rate {worst:.2%} above --max-failure-rate {opts.max_failure_rate:.2%} "
            f"in {', '.join(r.spec.label for r in bad)}"
        )


def main() -> None:
    cli(prog_name="kit")


if __name__ == "__main__":  # pragma: no cover
    main()
