"""The planner of one host: from a validated single-host :class:`~kit.spec.Stack` to a GPU
plan: placement, memory fractions, start order and each service's engine command line.

Every rule that needs the whole stack or the machine lives here. Problems are collected and
raised together as one :class:`~kit.errors.StackError`, so the user fixes them in one pass.
:func:`kit.plan.build_plan` is the entry point: it sends a stack with ``hosts:`` to
:mod:`kit.hosts`, which plans each host's part with :func:`build_single_host_plan`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from kit import gpus as gpu_models
from kit import hub_cache, kinds
from kit import replicas as replica_rules
from kit import vllm_versions as vv
from kit.command import check_extra_args, serve_args
from kit.errors import StackError
from kit.gateway_plan import (
    GatewayPlan,
    ObservabilityPlan,
    build_gateway,
    build_observability,
    exposure_warnings,
)
from kit.model_info import (
    DTYPE_BYTES,
    GIB,
    FitEstimate,
    ModelInfo,
    ModelUnreadable,
    estimate_fit,
    read_model,
)
from kit.service_plan import CONTAINER_PORT, ServicePlan, gpu_ids
from kit.spec import Service, Stack
from kit.stack_plan import Plan
from kit.train.plan import plan_jobs

#: Where the model folder is mounted inside the container.
MODEL_MOUNT = "/models"
MIN_FRACTION = 0.05
#: host ports below this need root to bind: a warning, not an error
PRIVILEGED_PORTS = 1024


@dataclass
class _Draft:
    """Mutable working state for one service while planning."""

    name: str
    svc: Service
    served_name: str
    n_gpus: int
    gpus: tuple[int, ...] = ()
    auto: bool = False
    tp: int = 1
    pp: int = 1
    fraction: float | None = None
    fraction_source: str = "stack"
    info: ModelInfo | None = None
    model_arg: str = ""
    host_path: str | None = None
    extra: tuple[str, ...] = ()
    #: canonical extra flag -> value, as the engine will see it
    extra_flags: dict[str, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: replicas (kit.replicas): the stack's service and the index (0: not replicated)
    replica_of: str | None = None
    replica: int = 0
    #: vLLM's --data-parallel-size (one container, dp x tp x pp GPUs)
    dp: int = 1


def build_single_host_plan(stack: Stack, *, inspect_models: bool = True) -> Plan:
    """Validate a single-host ``stack`` against its host and plan it. Raises
    :class:`StackError`."""
    problems: list[str] = []
    notes: list[str] = []
    warnings: list[str] = []
    d = stack.defaults
    version = d.version
    try:
        w = vv.check_version(version)
        if w:
            warnings.append(w)
    except ValueError as exc:
        problems.append(f"field 'defaults.vllm_version': {exc}")

    if stack.name_from_file and stack.name != Path(stack.name_from_file).stem:
        notes.append(
            f"project name '{stack.name}' derived from the file name '{stack.name_from_file}' "
            "(compose project names allow only a-z, 0-9, '-' and '_'; set name: to choose one)"
        )
    warnings += _host_warnings(stack)

    drafts = _replica_drafts(stack, problems)

    # names and ports (replicas share their service's served name)
    _unique([x for x in drafts if x.replica <= 1], lambda x: x.served_name, "served_name",
            "served model name", problems)  # fmt: skip
    _unique([x for x in drafts if x.svc.port is not None], lambda x: x.svc.port, "port",
            "host port", problems)  # fmt: skip
    _published_ports(stack, drafts, problems)

    # version-dependent flags and parsers
    for x in drafts:
        jobs = tuple(n for n, j in stack.jobs.items() if j.serve == x.name)  # kit.train
        _check_flags(x, version, problems, warnings, serving_jobs=jobs)
        x.notes += replica_rules.parallelism_notes(x.svc, x.replica, version, problems, x.name)

    # models readable on this machine
    for x in drafts:
        _locate_model(stack, x, problems)
        if inspect_models:
            cached = None if x.host_path else hub_cache.pulled_snapshot(stack, x.svc.model)
            _inspect_model(x, problems, warnings, cached)

    if problems:
        raise StackError(_label(stack), problems)

    _place(stack, drafts, problems, notes, warnings)
    problems += replica_rules.overlap_problems(
        [(x.replica_of, x.name, tuple(x.gpus)) for x in drafts if x.replica_of]
    )
    if problems:
        raise StackError(_label(stack), problems)

    _fill_fractions(stack, drafts, problems, notes)
    if problems:
        raise StackError(_label(stack), problems)

    fits = {x.name: _fit(stack, x, problems) for x in drafts}
    if problems:
        raise StackError(_label(stack), problems)

    order = _start_order(stack, drafts)
    deps = _dependencies(order)
    plans = tuple(_finish(stack, x, deps[x.name], fits[x.name], version) for x in order)
    jobs, plans = plan_jobs(stack, plans, problems, notes)  # kit.train: jobs + LoRA serving
    if problems:
        raise StackError(_label(stack), problems)
    for x in order:
        notes += [f"{x.name}: {n}" for n in x.notes]
    warnings += _exposure_warnings(stack, plans)
    gateway, observability = _aux_plans(stack, plans)
    warnings += exposure_warnings(gateway, observability)
    return Plan(stack=stack, services=plans, notes=tuple(notes), warnings=tuple(warnings),
                gateway=gateway, observability=observability, jobs=jobs)  # fmt: skip


def _replica_drafts(stack: Stack, problems: list[str]) -> list[_Draft]:
    """One draft per container: a service with ``replicas: N`` gives N (kit.replicas)."""
    drafts = []
    for name, svc in stack.services.items():
        for cname, one, index in replica_rules.expand(name, svc, problems):
            if index and cname in stack.services:
                problems.append(
                    f"service '{name}', field 'replicas': replica {index} is named '{cname}', "
                    f"which is already a service of the stack; rename one of them"
                )
            x = _draft(stack, cname, one, problems)
            if index:
                x.replica_of, x.replica = name, index
            drafts.append(x)
    return drafts


def _published_ports(stack: Stack, drafts: list[_Draft], problems: list[str]) -> None:
    """Without a gateway every service needs its own port; names of the auxiliary services
    are taken."""
    aux = []
    if stack.gateway is not None:
        aux.append(("gateway", "gateway", stack.gateway.port))
    if stack.observability is not None:
        aux.append(("prometheus", "observability", stack.observability.port))
        if stack.observability.grafana is not None:
            aux.append(("grafana", "observability.grafana", stack.observability.grafana.port))
    for x in drafts:
        if x.svc.port is None and stack.gateway is None:
            problems.append(
                f"service '{x.replica_of or x.name}', field 'port': required (the host port "
                "clients use), unless the stack has a gateway: section, which reaches it"
            )
        for name, section, port in aux:
            if x.name == name:
                problems.append(
                    f"service '{x.name}': the name '{name}' is taken by the stack's {section} "
                    "service; rename the service"
                )
            if x.svc.port == port:
                problems.append(
                    f"service '{x.replica_of or x.name}', field 'port': {port} is the "
                    f"{section}'s port; choose another"
                )
    for i, (_, section, port) in enumerate(aux):
        for _, other, port2 in aux[:i]:
            if port == port2:
                problems.append(f"field '{section}.port': {port} is the {other}'s port")


def _aux_plans(
    stack: Stack, plans: tuple[ServicePlan, ...]
) -> tuple[GatewayPlan | None, ObservabilityPlan | None]:
    bind = stack.defaults.bind_address
    gateway = None
    if stack.gateway is not None:
        gateway = build_gateway(
            stack.gateway, plans, bind_address=bind, api_key=stack.api_key_file() is not None,
            order=tuple(stack.services),
        )  # fmt: skip
    observability = None
    if stack.observability is not None:
        observability = build_observability(stack.observability, plans, gateway, bind_address=bind)
    return gateway, observability


# --- steps ---------------------------------------------------------------------------------


def _label(stack: Stack) -> str:
    return f"'{stack.name}' ({stack.source})"


def _draft(stack: Stack, name: str, svc: Service, problems: list[str]) -> _Draft:
    where = f"service '{name}'"
    host_gpus = stack.host.gpus
    wrong = gpu_models.gpus_request_problem(svc.gpus, host_gpus)
    if wrong:
        problems.append(f"{where}, field 'gpus': {wrong}")
    if isinstance(svc.gpus, int):
        n = svc.gpus
        x = _Draft(name, svc, svc.served_name or name, n, auto=True)
    else:
        n = len(svc.gpus)
        x = _Draft(name, svc, svc.served_name or name, n, gpus=tuple(svc.gpus))
    pp = svc.pipeline_parallel_size
    if svc.data_parallel_size > 1:  # vLLM's own DP: TP x PP per rank (kit.replicas)
        n = replica_rules.per_data_parallel_rank(n, svc.data_parallel_size, where, problems)
        x.dp = svc.data_parallel_size
    if svc.tensor_parallel_size is None:
        if n % pp:
            problems.append(
                f"{where}, field 'pipeline_parallel_size': {n} GPUs do not split into "
                f"{pp} pipeline stages; use a GPU count divisible by {pp}"
            )
        tp = max(1, n // pp)
    else:
        tp = svc.tensor_parallel_size
        if tp * pp != n:
            problems.append(
                f"{where}, field 'tensor_parallel_size': tensor_parallel_size {tp} x "
                f"pipeline_parallel_size {pp} = {tp * pp}, but the service gets {n} GPU"
                f"{'s' if n != 1 else ''}; they must be equal"
            )
    x.tp, x.pp = tp, pp
    if svc.gpu_memory_utilization is not None:
        x.fraction, x.fraction_source = svc.gpu_memory_utilization, "stack"
    return x


def _unique(drafts, key, fieldname: str, what: str, problems: list[str]) -> None:  # type: ignore[no-untyped-def]
    seen: dict[object, str] = {}
    for x in drafts:
        k = key(x)
        if k in seen:
            problems.append(
                f"service '{x.name}', field '{fieldname}': {what} {k!r} is already used by "
                f"service '{seen[k]}'"
            )
        else:
            seen[k] = x.name


def _check_flags(
    x: _Draft,
    version: vv.Version,
    problems: list[str],
    warnings: list[str],
    *,
    serving_jobs: tuple[str, ...] = (),
) -> None:
    svc, where = x.svc, f"service '{x.name}'"
    for fieldname, parser, table in (
        ("reasoning_parser", svc.reasoning_parser, vv.REASONING_PARSERS),
        ("tool_call_parser", svc.tool_call_parser, vv.TOOL_PARSERS),
    ):
        if parser is None:
            continue
        if not kinds.kind(svc.kind).generates:
            problems.append(
                f"{where}, field '{fieldname}': only chat services take a parser (this service "
                f"is kind '{svc.kind}')"
            )
            continue
        why = vv.parser_problem(table, parser, version)
        if why:
            problems.append(f"{where}, field '{fieldname}': {why}")
    checked = check_extra_args(svc, version, serving_jobs=serving_jobs)
    problems += [f"{where}, field 'extra_args': {p}" for p in checked.problems]
    warnings += [f"{x.name}: extra_args: {w}" for w in checked.warnings]
    x.notes += list(checked.notes)
    x.extra, x.extra_flags = checked.args, checked.flags


def _locate_model(stack: Stack, x: _Draft, problems: list[str]) -> None:
    svc, root = x.svc, stack.defaults.model_root
    source = svc.model_source or ("local" if root or svc.model.startswith("/") else "hub")
    if source == "hub":
        x.model_arg = svc.model
        return
    if svc.model.startswith("/"):
        host = svc.model  # an absolute host folder
        inside = f"{MODEL_MOUNT}/{Path(svc.model).name}"
        if root is not None:
            root_path = Path(stack.host_path(root))
            if not Path(host).is_relative_to(root_path):
                problems.append(
                    f"service '{x.name}', field 'model': {svc.model!r} is outside model_root "
                    f"{root_path}: give the folder relative to model_root, or move model_root"
                )
                return
            if Path(host) == root_path:
                problems.append(
                    f"service '{x.name}', field 'model': {svc.model!r} is model_root itself: "
                    "name the model's folder under it"
                )
                return
    elif root is None:
        problems.append(
            f"service '{x.name}', field 'model': {svc.model!r} is a local folder but "
            "defaults.model_root is not set; set model_root, or model_source: hub"
        )
        return
    else:
        root_path = Path(stack.host_path(root))
        host = f"{str(root_path).rstrip('/')}/{svc.model}"
        inside = f"{MODEL_MOUNT}/{svc.model}"
        real = Path(host).resolve()
        if Path(host).exists() and not real.is_relative_to(root_path.resolve()):
            problems.append(
                f"service '{x.name}', field 'model': {svc.model!r} leads outside model_root "
                f"(a symbolic link to {real}); mount that folder as model_root instead"
            )
            return
    x.model_arg, x.host_path = inside, host


def _inspect_model(x: _Draft, problems: list[str], warnings: list[str],
                   cached: Path | None = None) -> None:  # fmt: skip
    folder = Path(x.host_path) if x.host_path else cached  # cached: `kit pull` put it there
    if folder is None:
        warnings.append(
            f"{x.name}: model {x.svc.model!r} comes from the hub; shape and fit not checked"
        )
        return
    try:
        info = read_model(folder)
    except ModelUnreadable as exc:
        warnings.append(
            f"{x.name}: model folder not readable here ({exc}); shape and fit not checked"
        )
        return
    x.info = info
    where = f"service '{x.name}'"
    if info.num_attention_heads and info.num_attention_heads % x.tp:
        problems.append(
            f"{where}, field 'tensor_parallel_size': the model has {info.num_attention_heads} "
            f"attention heads, not divisible by tensor parallel size {x.tp}; choose a TP that "
            f"divides {info.num_attention_heads}"
        )
    if info.needs_remote_code and not x.svc.trust_remote_code:
        problems.append(
            f"{where}, field 'trust_remote_code': the model ships custom code (auto_map in "
            "config.json); vLLM refuses to load it unless trust_remote_code: true"
        )
    mml = x.svc.max_model_len
    if mml and info.max_position_embeddings and mml > info.max_position_embeddings:
        problems.append(
            f"{where}, field 'max_model_len': {mml} exceeds the model's "
            f"max_position_embeddings {info.max_position_embeddings}"
        )


def _place(
    stack: Stack,
    drafts: list[_Draft],
    problems: list[str],
    notes: list[str],
    warnings: list[str],
) -> None:
    """Deterministic placement for services given a GPU count.

    Largest first; a contiguous window of neighbouring ids; prefer windows with no service
    yet, then the least shared, then aligned starts (0, n, 2n, ...), then the lowest id.
    """
    host = stack.host.gpus
    load: dict[int, int] = defaultdict(int)
    for x in drafts:
        if not x.auto:
            for g in x.gpus:
                load[g] += 1
    for x in sorted((x for x in drafts if x.auto), key=lambda x: (-x.n_gpus, x.name)):
        n = x.n_gpus
        windows = [tuple(range(s, s + n)) for s in range(host - n + 1)]
        if not windows:  # already reported: more GPUs than the host has
            continue

        def score(w: tuple[int, ...], n: int = n) -> tuple[int, int, int, int]:
            busy = sum(1 for g in w if load[g])
            return (busy, sum(load[g] for g in w), 0 if w[0] % n == 0 else 1, w[0])

        best = min(windows, key=score)
        x.gpus = best
        for g in best:
            load[g] += 1
        shared = [g for g in best if load[g] > 1]
        msg = f"placed on GPU{'s' if n > 1 else ''} {_ids(best)} (asked for {n})"
        if shared:
            msg += f"; no free window of {n}, shares GPU {_ids(tuple(shared))}"
            others = sorted({y.name for y in drafts if y is not x and set(y.gpus) & set(shared)})
            warnings.append(
                f"{x.name}: automatic placement found no {n} free GPU{'s' if n > 1 else ''}; it "
                f"shares GPU {_ids(tuple(shared))} with {', '.join(others)} (memory fractions are "
                "split, and they start one after another): give explicit gpus to avoid it"
            )
        x.notes.append(msg)


def _fill_fractions(
    stack: Stack, drafts: list[_Draft], problems: list[str], notes: list[str]
) -> None:
    mem, headroom = stack.host.memory_gib, stack.defaults.headroom
    on_gpu: dict[int, list[_Draft]] = defaultdict(list)
    for x in drafts:
        for g in x.gpus:
            on_gpu[g].append(x)

    def shared(x: _Draft) -> list[str]:
        return sorted({y.name for g in x.gpus for y in on_gpu[g] if y is not x})

    def fair_share(x: _Draft) -> float:
        """What the set fractions leave under the headroom, split among the services still
        without one, on x's tightest GPU (rounded down to 0.01)."""
        room = []
        for g in x.gpus:
            fixed = sum(y.fraction for y in on_gpu[g] if y.fraction is not None)
            waiting = sum(1 for y in on_gpu[g] if y.fraction is None)
            room.append((headroom - fixed) / max(1, waiting))
        return math.floor(min(room) * 100 + 1e-9) / 100

    # 1. services alone on their GPUs take vLLM's default
    default = vv.default_gpu_memory_utilization(stack.defaults.version)
    for x in drafts:
        if x.fraction is None and not shared(x):
            x.fraction, x.fraction_source = min(default, headroom), "vllm default"
    # 2. embed/rerank on shared GPUs get what their model needs, but never more than a fair
    #    share of what the fixed fractions leave on each of their GPUs (a too-small share
    #    then shows up in the fit check, which says by how much)
    pooling = [x for x in drafts if x.fraction is None and kinds.kind(x.svc.kind).fill_reserve_gib]
    fair = {x.name: fair_share(x) for x in pooling}  # before any is set: the split is even
    for x in pooling:
        k = kinds.kind(x.svc.kind)
        assert k.fill_reserve_gib is not None and k.fill_runtime_gib is not None
        need_gib = k.fill_reserve_gib
        why = f"model not readable here: at least {need_gib:g} GiB"
        if x.info and x.info.weights_bytes:
            w = x.info.weights_bytes / GIB / (x.tp * x.pp)
            need_gib = w + k.fill_runtime_gib
            why = f"weights {w:.1f} GiB + {k.fill_runtime_gib:g} GiB runtime"
        want = max(MIN_FRACTION, math.ceil(need_gib / mem * 100) / 100)
        if fair[x.name] < want:
            why += f"; capped at its fair share {fair[x.name]:.2f} of GPU {_ids(x.gpus)}"
        x.fraction = max(MIN_FRACTION, min(want, fair[x.name]))
        x.fraction_source = "filled"
        x.notes.append(
            f"gpu_memory_utilization not set; the kit chose {x.fraction:.2f} "
            f"({why}) on GPU {_ids(x.gpus)}, shared with {', '.join(shared(x))}"
        )
    # 3. chat services on shared GPUs split what is left under the headroom
    pending = [x for x in drafts if x.fraction is None]
    chosen: dict[str, float] = {}
    for x in pending:
        left = fair_share(x)
        if left < MIN_FRACTION:
            problems.append(
                f"service '{x.name}', field 'gpu_memory_utilization': its GPUs "
                f"{_ids(x.gpus)} have only {max(left, 0):.2f} left under headroom "
                f"{headroom:.2f}; lower the fractions of {', '.join(shared(x))}"
            )
            left = MIN_FRACTION
        chosen[x.name] = left
        x.notes.append(
            f"gpu_memory_utilization not set; the kit chose {left:.2f}, what is left under "
            f"headroom {headroom:.2f} beside {', '.join(shared(x))}"
        )
    for x in pending:  # assign after all are computed, so the split is symmetric
        x.fraction, x.fraction_source = chosen[x.name], "filled"
    # 4. every GPU's sum stays under the headroom
    for g in sorted(on_gpu):
        users = on_gpu[g]
        total = sum(x.fraction or 0 for x in users)
        if len(users) > 1 and total > headroom + 1e-9:
            parts = ", ".join(f"{x.name} {x.fraction:.2f}" for x in users)
            problems.append(
                f"service '{users[-1].name}', field 'gpu_memory_utilization': GPU {g} is "
                f"shared by {parts}: total {total:.2f} exceeds headroom {headroom:.2f} by "
                f"{total - headroom:.2f}; lower one of them"
            )


def _fit(stack: Stack, x: _Draft, problems: list[str]) -> FitEstimate | None:
    if x.info is None or x.fraction is None:
        return None
    tokens = x.svc.max_model_len or x.info.max_position_embeddings or 0
    kv_dtype = x.extra_flags.get("--kv-cache-dtype") or ""
    kv_bytes = 1 if "fp8" in kv_dtype else None
    est = estimate_fit(
        x.info,
        kind=x.svc.kind,
        tp=x.tp,
        pp=x.pp,
        tokens=tokens,
        gpu_memory_gib=stack.host.memory_gib,
        fraction=x.fraction,
        dtype_bytes=DTYPE_BYTES.get(x.svc.dtype),
        kv_dtype_bytes=kv_bytes,
    )
    if est is not None and not est.fits:
        problems.append(
            f"service '{x.name}', field 'model': does not fit: needs {est.describe()} "
            f"({stack.host.memory_gib:g} GiB x {x.fraction:.2f}); {est.excess_gib:.1f} GiB "
            "too much per GPU. Use more GPUs (tensor_parallel_size), a smaller "
            "max_model_len, or a higher gpu_memory_utilization"
        )
    return est


def _start_order(stack: Stack, drafts: list[_Draft]) -> list[_Draft]:
    mem = stack.host.memory_gib
    return sorted(drafts, key=lambda x: (-(x.fraction or 0) * len(x.gpus) * mem, x.name))


def _dependencies(order: list[_Draft]) -> dict[str, tuple[str, ...]]:
    """Each service waits for the previous service on each GPU it shares (vLLM checks free
    memory when it starts, so services on one GPU must start one after another)."""
    last_on: dict[int, str] = {}
    deps: dict[str, tuple[str, ...]] = {}
    for x in order:
        before = sorted({last_on[g] for g in x.gpus if g in last_on})
        deps[x.name] = tuple(before)
        for g in x.gpus:
            last_on[g] = x.name
    return deps


def _finish(
    stack: Stack,
    x: _Draft,
    deps: tuple[str, ...],
    fit: FitEstimate | None,
    version: vv.Version,
) -> ServicePlan:
    svc = x.svc
    assert x.fraction is not None
    args = serve_args(
        model_arg=x.model_arg,
        served_name=x.served_name,
        port=CONTAINER_PORT,
        tp=x.tp,
        pp=x.pp,
        fraction=x.fraction,
        svc=svc,
        version=version,
        extra=x.extra,
        dp=x.dp,
    )
    weights_gib = None
    if x.info and x.info.weights_bytes:
        weights_gib = x.info.weights_bytes / GIB
    k = kinds.kind(svc.kind)
    if svc.startup_timeout:
        timeout = svc.startup_timeout
    elif weights_gib is not None:
        timeout = int(k.startup_base_s + kinds.STARTUP_PER_GIB * weights_gib)
    else:
        timeout = k.startup_unknown_s
    env = {**stack.defaults.env, **svc.env}
    return ServicePlan(
        name=x.name,
        kind=svc.kind,
        served_name=x.served_name,
        model=svc.model,
        model_arg=x.model_arg,
        model_host_path=x.host_path,
        gpus=tuple(x.gpus),
        auto_placed=x.auto,
        tp=x.tp,
        pp=x.pp,
        fraction=x.fraction,
        fraction_source=x.fraction_source,
        max_model_len=svc.max_model_len,
        port=svc.port or 0,
        engine_args=args,
        depends_on=deps,
        env=env,
        startup_timeout=timeout,
        reasoning_field=vv.reasoning_field(version) if svc.reasoning_parser else None,
        fit=fit,
        weights_gib=weights_gib,
        replica_of=x.replica_of,
        published=svc.port is not None,
        dp=x.dp,
    )


def _host_warnings(stack: Stack) -> list[str]:
    h = stack.host
    usable = gpu_models.usable_gib(h.gpu_model or "")
    if h.gpu_memory_gib is not None and usable is not None and h.gpu_memory_gib > usable + 0.05:
        return [
            f"host.gpu_memory_gib {h.gpu_memory_gib:g} is more than a {gpu_models.canonical(h.gpu_model or '')} "
            f"offers vLLM ({usable:g} GiB usable): the fit check takes the stack's figure as "
            "usable GiB; omit gpu_memory_gib to use the card's"
        ]
    return []


def _exposure_warnings(stack: Stack, plans: tuple[ServicePlan, ...]) -> list[str]:
    out: list[str] = []
    bind = stack.defaults.bind_address
    if bind in ("0.0.0.0", "::"):
        ports = ", ".join(f"{s.port} ({s.name})" for s in plans if s.published)
        key = (
            f"an API key is required (env file {stack.defaults.api_key_env_file})"
            if stack.defaults.api_key_env_file
            else "NO API key is set: anyone who reaches this host can use the models"
        )
        out.append(
            f"bind_address {bind} publishes ports {ports} on every interface of this host; "
            f"{key}. Use 127.0.0.1 unless other machines must connect"
        )
    for s in plans:
        if s.published and s.port < PRIVILEGED_PORTS:
            out.append(
                f"{s.name}: port {s.port} is below {PRIVILEGED_PORTS} (a privileged port that "
                "system services use); choose a port of 1024 or more"
            )
    return out


_ids = gpu_ids
