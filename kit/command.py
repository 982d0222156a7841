"""Each service's ``vllm serve`` command line: what the kit sets, and what it lets through.

The kit renders the flags it owns from typed stack fields (model, names, ports, parallelism,
memory fraction, parsers, the kind's runner). A service's ``extra_args`` add the rest, and are
checked here against the pinned vLLM version's real flag table (:mod:`kit.vllm_flags`), in every
spelling vLLM's parser accepts (``--flag_name``, ``--flag=value``, aliases such as ``-tp``):

- a flag the kit owns is refused with the field to use instead (vLLM keeps the last value, so a
  second ``--gpu-memory-utilization`` would silently replace the planned one);
- secrets (``--api-key``, ``--hf-token``, or any value shaped like a token) are refused with the
  env-file field to use, and never echoed;
- flags that contradict the service's kind (``--runner pooling`` on a chat service, a reasoning
  parser on an embedding service) are refused;
- every token must be a flag of the pinned version or that flag's value.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit import kinds
from kit import vllm_versions as vv
from kit.spec import Service, looks_like_secret
from kit.vllm_flags import parse_serve_args

#: flags the kit renders itself -> the stack field that sets them
OWNED_FLAGS: dict[str, str] = {
    "--model": "model",
    "--served-model-name": "served_name",
    "--host": "port",  # the container listens on every interface; the host side is the port
    "--port": "port",
    "--tensor-parallel-size": "tensor_parallel_size",
    "--pipeline-parallel-size": "pipeline_parallel_size",
    "--data-parallel-size": "data_parallel_size",
    "--gpu-memory-utilization": "gpu_memory_utilization",
    "--max-model-len": "max_model_len",
    "--dtype": "dtype",
    "--trust-remote-code": "trust_remote_code",
    "--reasoning-parser": "reasoning_parser",
    "--tool-call-parser": "tool_call_parser",
    "--enable-auto-tool-choice": "tool_call_parser",  # the kit adds it with a tool parser
    "--runner": "kind",
    "--convert": "kind",
    "--task": "kind",
    # vLLM's native multi-node launch: rendered per host for services with hosts (kit.multinode)
    "--nnodes": "hosts",
    "--node-rank": "hosts",
    "--master-addr": "hosts",
    "--master-port": "multinode",
    "--headless": "hosts",
    # LoRA serving: rendered for a service that a job serves its adapter from (kit.train.serving)
    "--enable-lora": "jobs.<job>.serve",
    "--lora-modules": "jobs.<job>.output",
    "--max-lora-rank": "max_lora_rank",
    "--max-loras": "jobs.<job>.serve",
}
#: owned flags the kit sets only on a service that serves the jobs' adapters: any other service
#: may give them in extra_args (its own adapters)
ADAPTER_FLAGS = frozenset({"--enable-lora", "--lora-modules", "--max-lora-rank", "--max-loras"})

#: flags that carry credentials -> where the credential goes instead
SECRET_FLAGS: dict[str, str] = {
    "--api-key": "VLLM_API_KEY in the env file named by defaults.api_key_env_file",
    "--hf-token": "HF_TOKEN in the env file named by defaults.api_key_env_file",
}

#: what ``--runner`` / ``--convert`` may say for a kind that pools (``--convert`` must equal
#: the kind's pooling) or generates
_RUNNER = {True: ("generate", "auto"), False: ("pooling", "auto")}


@dataclass(frozen=True)
class ExtraArgs:
    """A service's extra_args after checking: what goes on the command line, and why not."""

    args: tuple[str, ...]
    notes: tuple[str, ...]
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    #: canonical flag -> value (None for a switch), as the engine will see it
    flags: dict[str, str | None]


def check_extra_args(
    svc: Service, version: vv.Version, *, serving_jobs: tuple[str, ...] = ()
) -> ExtraArgs:
    """Translate flags copied from old notes, then refuse what would fight the plan.

    ``serving_jobs``: the jobs that serve their adapters from this service (the kit then owns
    :data:`ADAPTER_FLAGS`). Messages are for the ``extra_args`` field; none of them repeats a
    secret value.
    """
    kind = kinds.kind(svc.kind)
    problems: list[str] = []
    notes: list[str] = []
    secret_values = [a for a in svc.extra_args if looks_like_secret(a)]
    if secret_values:
        problems.append(
            f"{len(secret_values)} value{'s' if len(secret_values) > 1 else ''} look like an "
            f"access token ({', '.join(_masked(a) for a in secret_values)}): secrets never go "
            "on the command line, where `docker inspect` and `ps` show them; put them in the "
            "env file named by defaults.api_key_env_file"
        )
    t = vv.translate_legacy(svc.extra_args, svc.kind, version)
    problems += t.errors
    notes += t.notes
    parsed = parse_serve_args(t.args, version)
    warnings: list[str] = []
    for p in parsed.problems:
        if not parsed.exact_row and p.startswith("unknown flag") and "exists from" in p:
            # the pinned version lies between two rows of the table: the flag may be there
            warnings.append(f"{p}; vLLM {version} is not in the flag table: check it exists")
        else:
            problems.append(p)
    keep = [True] * len(t.args)
    flags: dict[str, str | None] = {}
    for item in parsed.items:
        flag, said = item.flag, item.spelling
        if flag in SECRET_FLAGS:
            problems.append(
                f"{said} carries a secret: put it in {SECRET_FLAGS[flag]} instead (the compose "
                "file only references that file)"
            )
            continue
        owner = next((k for k in kinds.KINDS.values() if flag in k.own_flags), None)
        if owner is not None and owner is not kind:
            problems.append(
                f"{said} contradicts kind '{svc.kind}': only {owner.name} services take it"
            )
            continue
        if flag in ("--runner", "--convert"):
            expected = _RUNNER[kind.generates] if flag == "--runner" else _convert_values(kind)
            if item.value not in expected:
                problems.append(
                    f"{said} {item.value} contradicts kind '{svc.kind}' (the kind field renders "
                    f"{' '.join(vv.pooling_flags(svc.kind, version)) or 'no runner flag'} for "
                    f"vLLM {version}); drop it, or change kind"
                )
            else:
                notes.append(f"{said} {item.value} dropped: the kind field renders it")
                for i in item.indices:
                    keep[i] = False
            continue
        if flag in OWNED_FLAGS and (flag not in ADAPTER_FLAGS or serving_jobs):
            field = OWNED_FLAGS[flag].replace("<job>", serving_jobs[0] if serving_jobs else "")
            why = (
                f" for a service that serves adapters (job {', '.join(serving_jobs)})"
                if flag in ADAPTER_FLAGS
                else ""
            )
            problems.append(
                f"{said} is set by the kit{why}; use the '{field}' field instead "
                "(vLLM keeps the last value given, so it would silently replace the plan's)"
            )
            continue
        if flag in flags:
            problems.append(
                f"{said} is given twice; vLLM would keep only the last value: give it once"
            )
            continue
        if item.abbreviated:
            warnings.append(
                f"{said} abbreviates {flag}: vLLM accepts unique prefixes, but a later release "
                "can make it ambiguous; write the whole name"
            )
        flags[flag] = item.value
    args = tuple(a for a, k in zip(t.args, keep, strict=True) if k)

    def clean(messages: list[str]) -> tuple[str, ...]:
        return tuple(_without_secrets(m, secret_values) for m in messages)

    return ExtraArgs(args, clean(notes), clean(problems), clean(warnings), flags)


def _convert_values(kind: kinds.Kind) -> tuple[str, ...]:
    return ("none", "auto") if kind.pooling is None else (kind.pooling, "auto")


def _without_secrets(message: str, secrets: list[str]) -> str:
    for value in secrets:
        message = message.replace(value, _masked(value).strip("'"))
    return message


def _masked(value: str) -> str:
    """Enough of a secret to find it in the stack file, never the secret."""
    return f"'{value[:3]}...'"


def serve_args(
    *,
    model_arg: str,
    served_name: str,
    port: int,
    tp: int,
    pp: int,
    fraction: float,
    svc: Service,
    version: vv.Version,
    extra: tuple[str, ...],
    dp: int = 1,
) -> tuple[str, ...]:
    """The arguments after ``vllm serve``: the kit's own flags first, then ``extra``."""
    args: list[str] = [
        model_arg,
        "--served-model-name", served_name,
        "--host", "0.0.0.0",
        "--port", str(port),
        "--tensor-parallel-size", str(tp),
    ]  # fmt: skip
    if pp > 1:
        args += ["--pipeline-parallel-size", str(pp)]
    if dp > 1:
        args += ["--data-parallel-size", str(dp)]
    args += ["--gpu-memory-utilization", f"{fraction:.2f}"]
    if svc.max_model_len:
        args += ["--max-model-len", str(svc.max_model_len)]
    args += ["--dtype", svc.dtype]
    if svc.trust_remote_code:
        args.append("--trust-remote-code")
    args += vv.pooling_flags(svc.kind, version)
    if svc.reasoning_parser:
        args += vv.reasoning_flags(svc.reasoning_parser, version)
    if svc.tool_call_parser:
        args += ["--enable-auto-tool-choice", "--tool-call-parser", svc.tool_call_parser]
    return (*args, *extra)
