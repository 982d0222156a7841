"""Plain Kubernetes manifests of a plan (``templates/k8s-manifests.yaml.j2``): per service a
PersistentVolumeClaim for its model, a ClusterIP Service on the stack's port and a Deployment
(``nvidia.com/gpu`` limits, startup probe from the plan's budget); a model over several hosts
becomes a LeaderWorkerSet of one group of ``hosts`` pods running vLLM's recipe of the plan."""

from __future__ import annotations

from typing import Any

from kit import multinode
from kit.export import common
from kit.plan import CONTAINER_PORT, Plan, ServicePlan

LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
#: what LeaderWorkerSet puts in every pod's environment
LWS_LEADER = "$(LWS_LEADER_ADDRESS)"
LWS_INDEX = "$(LWS_WORKER_INDEX)"


def render(plan: Plan) -> str:
    return common.render_template("k8s-manifests.yaml.j2", plan, services=[
        _service(plan, s) for s in common.group(plan)])  # fmt: skip


def _labels(plan: Plan, s: ServicePlan) -> list[tuple[str, str]]:
    return sorted({
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": common.dns_name(plan.stack.name),
        "app.kubernetes.io/managed-by": "kit",
        "kit.stack": plan.stack.name,
        "kit.service": common.service_name(s),
        "kit.kind": s.kind,
    }.items())  # fmt: skip


def _service(plan: Plan, s: ServicePlan) -> dict[str, Any]:
    name = common.dns_name(plan.stack.name, common.service_name(s))
    source = common.model_source(plan, s)
    labels = _labels(plan, s)
    ctx: dict[str, Any] = {
        "name": name,
        "labels": labels,
        "selector": [(k, v) for k, v in labels if k in ("kit.stack", "kit.service")],
        "replicas": common.replicas(plan, s),
        "service_port": s.port or CONTAINER_PORT,
        "container_port": CONTAINER_PORT,
        "pvc": {
            "name": f"{name}-model"[:63],
            "size": f"{common.storage_gib(s)}Gi",
            "access_modes": ["ReadWriteOnce"] if not s.nodes else ["ReadWriteMany"],
            "comment": source.note or "",
        },
        "lws": None,
    }
    secret = common.secret(plan)
    pod = {
        "comment": common.host_comment(s),
        "image": plan.stack.defaults.image,
        "command": ["vllm", "serve"],
        "args": common.serve_args(plan, s),
        "env": common.env_list(plan, s),
        "field_env": [],
        "secret": secret["name"] if secret else None,
        "port": CONTAINER_PORT,
        "gpus": len(s.gpus),
        "probes": {"period": common.PROBE_PERIOD_S, "startup_failures": common.startup_failures(s)},
        "pvc": ctx["pvc"]["name"],
        "mount": source.mount,
        "mount_read_only": source.read_only,
        "shm": common.shm_size(plan),
    }
    if not s.nodes:
        ctx["pod"] = pod
        return ctx
    ctx["selector"] = [(LWS_NAME, name), ("role", "leader")]
    ctx["lws"] = _lws(plan, s, name, pod)
    return ctx


def _lws(plan: Plan, s: ServicePlan, name: str, pod: dict[str, Any]) -> dict[str, Any]:
    """A LeaderWorkerSet group: the leader runs what the head host runs, the workers what the
    other hosts run, with LWS's addresses instead of the hosts'."""
    head, worker = s.nodes[0], s.nodes[1]
    field_env = [("VLLM_HOST_IP", "status.podIP")]
    env = [
        (k, v) for k, v in common.env_list(plan, s) if k not in ("VLLM_HOST_IP", "KIT_RAY_START")
    ]
    env = [e for e in env if e[0] not in multinode.SOCKET_IFNAME_ENV]
    if s.recipe == "native":
        master = {"--master-addr": LWS_LEADER, "--master-port": str(_native_port(head.command))}
        leader_args = _replace(common.serve_args(plan, s, head.command), master)
        worker_args = _replace(common.serve_args(plan, s, worker.command),
                               {**master, "--node-rank": LWS_INDEX})  # fmt: skip
        leader = {"command": ["vllm", "serve"], "args": leader_args}
        workers = {"command": ["vllm", "serve"], "args": worker_args, "probes": None, "port": None}
    else:
        gcs = multinode.RAY_GCS_PORT
        serve = common.serve_args(plan, s, head.command)
        leader = {
            "command": ["/bin/sh", "-c",
                        f"ray start --head --port={gcs} --num-gpus={len(s.gpus)} "
                        f"--disable-usage-stats && exec vllm serve \"$@\"", "vllm"],
            "args": serve,
        }  # fmt: skip
        workers = {
            "command": ["ray", "start"],
            "args": ["--block", f"--address={LWS_LEADER}:{gcs}", f"--num-gpus={len(s.gpus)}",
                     "--disable-usage-stats"],
            "probes": None, "port": None,
        }  # fmt: skip
    roles = []
    for key, role, override in (("leaderTemplate", "leader", leader),
                                ("workerTemplate", "worker", workers)):  # fmt: skip
        roles.append({
            "key": key,
            "labels": [("role", role), *_labels(plan, s)],
            "pod": {**pod, "env": env, "field_env": field_env, **override,
                    "comment": f"{s.recipe} {role}: {common.host_comment(s)}"},
        })  # fmt: skip
    return {
        "size": len(s.nodes),
        "roles": roles,
        "comment": (
            f"one model over {len(s.nodes)} hosts ({', '.join(p.host for p in s.nodes)}): a "
            f"group of {len(s.nodes)} pods, TP {s.tp} x PP {s.pp}, vLLM's {s.recipe} recipe"
        ),
    }


def _native_port(command: tuple[str, ...]) -> int:
    return int(command[command.index("--master-port") + 1])


def _replace(args: list[str], values: dict[str, str]) -> list[str]:
    out = list(args)
    for flag, value in values.items():
        out[out.index(flag) + 1] = value
    return out
