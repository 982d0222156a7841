"""The counters behind /metrics (vLLM's `vllm:*` names, in Prometheus text format)."""

from __future__ import annotations

from collections.abc import Iterable


class Metrics:
    def __init__(self) -> None:
        self.running = 0  # requests being answered
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success: dict[str, int] = {}  # finished requests by finish reason
        self.http_requests = 0

    def finish(
        self, prompt_tokens: int, completion_tokens: int, reasons: Iterable[str], each: int = 1
    ) -> None:
        """Count answered requests: the tokens once, `each` success per reason."""
        self.prompt_tokens += prompt_tokens
        self.generation_tokens += completion_tokens
        for reason in reasons:
            self.success[reason] = self.success.get(reason, 0) + each

    def text(self, model_name: str) -> str:
        name = model_name.replace("\\", "\\\\").replace('"', '\\"')
        lbl = f'engine="0",model_name="{name}"'
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{lbl}}} {float(self.running)}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{lbl}}} 0.0",
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{{{lbl}}} {min(self.running * 0.01, 1.0)}",
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{{{lbl}}} {float(self.prompt_tokens)}",
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{lbl}}} {float(self.generation_tokens)}",
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
        ]
        for reason in sorted(set(self.success) | {"stop", "length", "abort"}):
            lines.append(
                f'vllm:request_success_total{{{lbl},finished_reason="{reason}"}} {float(self.success.get(reason, 0))}'
            )
        lines += [
            "# HELP kit_double_http_requests_total HTTP requests seen by the engine double.",
            "# TYPE kit_double_http_requests_total counter",
            f"kit_double_http_requests_total {float(self.http_requests)}",
        ]
        return "\n".join(lines) + "\n"
