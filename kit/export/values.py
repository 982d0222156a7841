"""Values for vLLM's production-stack Helm chart (``templates/k8s-values.yaml.j2``).

Each stack service is one ``servingEngineSpec.modelSpec`` entry: image repository and tag,
``modelURL``, ``replicaCount`` (its replicas), ``requestGPU`` (its GPU count), its model volume
(``pvcStorage``), and ``vllmConfig`` with the fields the chart renders itself (tensor parallel
size, max model length, dtype, memory fraction, prefix caching) plus ``extraArgs``: every other
flag of the kit's version-aware command line (served name, runner/convert or --task, parsers,
remote code, the service's extra_args). The chart's router (``routerSpec``) is the one endpoint.
A model over several hosts uses the chart's Ray path (``raySpec``): its head pod and
``replicaCount`` workers, each with the GPUs of one host.
"""

from __future__ import annotations

from typing import Any

from kit.export import common
from kit.plan import Plan, ServicePlan

#: flags the chart writes from vllmConfig / its own template: left out of extraArgs
CHART_FLAGS = {
    "--host": 1, "--port": 1, "--tensor-parallel-size": 1, "--max-model-len": 1, "--dtype": 1,
    "--gpu-memory-utilization": 1,
}  # fmt: skip
#: environment the chart sets itself, or the kit's compose recipes only
CHART_ENV = ("HF_HOME", "VLLM_HOST_IP", "KIT_RAY_START")
#: the chart adds --enable-prefix-caching or --no-enable-prefix-caching always; the values keep
#: vLLM's own default for the kind (on for generation, off for pooling models)


def render(plan: Plan) -> str:
    return common.render_template("k8s-values.yaml.j2", plan, models=[
        _model(plan, s) for s in common.group(plan)])  # fmt: skip


def extra_args(plan: Plan, s: ServicePlan) -> list[str]:
    """The kit's command line minus the model and what the chart renders itself."""
    args = common.serve_args(plan, s)[1:]
    out: list[str] = []
    skip = 0
    for a in args:
        if skip:
            skip -= 1
            continue
        if a in CHART_FLAGS:
            skip = CHART_FLAGS[a]
            continue
        out.append(a)
    return out


def _model(plan: Plan, s: ServicePlan) -> dict[str, Any]:
    repo, tag = common.image_parts(plan.stack.defaults.image)
    ray = bool(s.nodes)
    args = extra_args(plan, s) if not ray else _ray_args(plan, s)
    # the chart writes --enable-prefix-caching or --no-enable-prefix-caching itself, always:
    # vLLM's default for the kind, unless the stack's extra_args say otherwise
    prefix_caching = s.kind == "chat"
    for flag, on in (("--enable-prefix-caching", True), ("--no-enable-prefix-caching", False)):
        if flag in args:
            args.remove(flag)
            prefix_caching = on
    return {
        "comment": common.host_comment(s),
        "name": common.dns_name(common.service_name(s)),
        "repository": repo,
        "tag": tag,
        "model_url": common.model_source(plan, s).arg,
        # the chart's Ray path: replicaCount is its workers (the head is one more pod)
        "replicas": len(s.nodes) - 1 if ray else common.replicas(plan, s),
        "cpu": max(4, 2 * len(s.gpus)),
        "memory": f"{common.weights_memory_gib(s)}Gi",
        "gpus": len(s.gpus),
        "pvc_size": f"{common.storage_gib(s)}Gi",
        "access_modes": ["ReadWriteOnce"] if not ray else ["ReadWriteMany"],
        "shm": common.shm_size(plan) if s.tp * s.pp > 1 else None,
        "tp": s.tp,
        "max_model_len": s.max_model_len,
        "dtype": plan.stack.services[common.service_name(s)].dtype,
        "fraction": s.fraction,
        "prefix_caching": prefix_caching,
        "extra_args": args,
        "env": [e for e in common.env_list(plan, s) if e[0] not in CHART_ENV],
        "ray": ray,
    }


def _ray_args(plan: Plan, s: ServicePlan) -> list[str]:
    """A model over several hosts on the chart's Ray path: the head's command line with the
    Ray executor (whatever recipe the stack chose for compose)."""
    head = list(s.nodes[0].command)
    if "--nnodes" in head:  # native recipe: its flags have no meaning on Ray
        at = head.index("--distributed-executor-backend")
        head = head[:at] + [a for a in head[at + 10 :] if a != "--headless"]
    args = extra_args(plan, _with_args(s, tuple(head)))
    if "--distributed-executor-backend" not in args:
        args += ["--distributed-executor-backend", "ray"]
    return args


def _with_args(s: ServicePlan, args: tuple[str, ...]) -> ServicePlan:
    import dataclasses

    return dataclasses.replace(s, engine_args=args, nodes=())
