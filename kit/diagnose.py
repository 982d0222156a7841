"""Known ways a vLLM container dies, recognised from its log, each with what to change."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Cause:
    key: str
    #: alternatives, most telling first: the first that matches names the log line shown
    patterns: tuple[re.Pattern[str], ...]
    title: str
    advice: str

    def search(self, log: str) -> re.Match[str] | None:
        for pattern in self.patterns:
            m = pattern.search(log)
            if m:
                return m
        return None


def _c(key: str, pattern: str, title: str, advice: str) -> Cause:
    alternatives = tuple(re.compile(p, re.IGNORECASE | re.MULTILINE) for p in pattern.split("|"))
    return Cause(key, alternatives, title, advice)


#: Most specific first: an OOM trace can follow a free-memory warning, not the other way round.
CAUSES: tuple[Cause, ...] = (
    _c(
        "free_memory",
        r"Free memory on device.*less than desired GPU memory utilization",
        "not enough free GPU memory at start-up",
        "another process holds memory on this GPU (often a service sharing it). Lower this "
        "service's gpu_memory_utilization, or the others' on the same GPU, so the sum stays "
        "under defaults.headroom; `kit plan` shows the sums per GPU",
    ),
    _c(
        "oom",
        r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory",
        "CUDA out of memory",
        "the model, its KV cache and activations do not fit: lower max_model_len or "
        "max-num-seqs, lower gpu_memory_utilization of services sharing the GPU, or use more "
        "GPUs (tensor_parallel_size)",
    ),
    _c(
        "world_size",
        r"World size \(\d+\) is larger than the number of available GPUs|"
        r"larger than the number of available GPUs",
        "tensor x pipeline parallel size exceeds the GPUs the container sees",
        "the container sees fewer GPUs than TP x PP: check the NVIDIA runtime on the host "
        "(`kit doctor`) and that no other tool changes NVIDIA_VISIBLE_DEVICES",
    ),
    _c(
        "heads",
        r"attention heads \(\d+\) must be divisible by tensor parallel size",
        "attention heads not divisible by tensor parallel size",
        "choose a tensor_parallel_size that divides the model's num_attention_heads "
        "(config.json), with as many GPUs",
    ),
    _c(
        "unrecognized_args",
        r"unrecognized arguments?:",
        "the engine does not know a flag",
        "the image's vLLM rejects a flag: make defaults.vllm_version match the image tag so "
        "the kit renders that version's flags, and check extra_args",
    ),
    _c(
        "gated_401",
        r"GatedRepoError|Cannot access gated repo|Access to model .* is restricted|"
        r"401 Client Error|Unauthorized for url|Invalid credentials in Authorization header",
        "the model hub refused the download (401: gated or private repository)",
        "accept the model's licence on the hub and put HF_TOKEN=... in the stack's env file "
        "(defaults.api_key_env_file), or download the model and serve it from model_root",
    ),
    _c(
        "trust_remote_code",
        r"trust_remote_code=True|contains custom code which must be executed",
        "the model needs its own code and trust_remote_code is off",
        "set trust_remote_code: true for this service (only for models you trust)",
    ),
    _c(
        "model_missing",
        r"Repo id must be in the form|is not a local folder and is not a valid model identifier|"
        r"Invalid repository ID or local directory|No such file or directory: '?/models|"
        r"does not appear to have a file named config\.json|HFValidationError",
        "model folder missing or not a model",
        "the path given to vllm serve is not a model folder inside the container: check that "
        "defaults.model_root/model exists on the host and holds config.json (`kit doctor`)",
    ),
    # a model over several hosts (kit.multinode)
    _c(
        "ray_unsupported",
        r"current platform \S+ does not support ray",
        "this vLLM build does not support the Ray executor (vLLM's CPU build refuses it)",
        "run the Ray recipe with a GPU build of vLLM, or use multinode.backend: native",
    ),
    _c(
        "node_lost",
        r"Connection closed by peer|Connection reset by peer|lost its peer|"
        r"has been marked dead because the detector has missed too many heartbeats|"
        r"RayActorError|ActorDiedError|Worker proc \S+ died unexpectedly|"
        r"^\[kit\] node part \S+ on host '\S+' stopped",
        "a node of the model over several hosts was lost",
        "one host's part of the service stopped (killed, out of memory, or the host or network "
        "went away) and the others cannot go on without it: the kit removed the service on "
        "every host; check that host (`kit doctor`) and the network between the hosts, then "
        "`kit up` again",
    ),
    # the gateway (LiteLLM): its messages name config.yaml; else its config loader's frame
    _c(
        "gateway_config",
        r"^\S*Error\b.*config\.yaml|^\S*Exception\b.*config\.yaml|"
        r"litellm/proxy/proxy_server\.py\", line \d+, in load_config",
        "the gateway (LiteLLM) refused its configuration",
        "the log line says which setting: the kit generates it from the stack's gateway: "
        "section (policy, retries, cooldown, timeout; `kit render` shows it as configs: "
        "gateway-config); check those fields, and that gateway.image is the kit's pinned "
        "LiteLLM",
    ),
)


@dataclass(frozen=True)
class Diagnosis:
    cause: Cause | None
    line: str | None  # the log line that matched

    def describe(self) -> str:
        if self.cause is None:
            return "no known cause recognised in the log; read the last lines above"
        line = f'\n    log: "{self.line.strip()[:300]}"' if self.line else ""
        return f"{self.cause.title}{line}\n    fix: {self.cause.advice}"


def diagnose(log: str) -> Diagnosis:
    for cause in CAUSES:
        m = cause.search(log)
        if m:
            start = log.rfind("\n", 0, m.start()) + 1
            end = log.find("\n", m.end())
            return Diagnosis(cause, log[start : end if end != -1 else None])
    return Diagnosis(None, None)


def failure_report(
    subject: str, why: str, log: str, *, tail: int, timed_out: bool = False
) -> tuple[str, Diagnosis]:
    """What the kit prints when a service fails, while loading (:mod:`kit.readiness`) or
    serving (:mod:`kit.multinode_watch`): what happened, the last log lines, the diagnosis."""
    diag = diagnose(log)
    last = "\n".join("    | " + line for line in log.rstrip().splitlines()[-tail:])
    msg = [f"{subject}: {why}"]
    msg.append(f"  last log lines:\n{last}" if last else "  (the container wrote no log)")
    if not timed_out or diag.cause is not None:
        msg.append(f"  diagnosis: {diag.describe()}")
    return "\n".join(msg), diag
