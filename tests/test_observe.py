"""The engines' /metrics: names per vLLM version, parsing, rates and TTFT quantiles, the
series `kit bench` records (against the engine double over real HTTP) and `kit top`'s rows."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from doubleutil import Double, write_model
from kit import vllm_versions as vv
from kit.cli import cli
from kit.observe import Sample, parse_metrics, rates
from kit.plan import build_plan
from kit.spec import parse_stack
from kit.top import rows

V0_METRICS = """# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage.
vllm:gpu_cache_usage_perc{model_name="m"} 0.25
vllm:num_requests_running{model_name="m"} 3.0
vllm:num_requests_waiting{model_name="m"} 1.0
vllm:num_preemptions_total{model_name="m"} 2.0
vllm:generation_tokens_total{model_name="m"} 100.0
"""
V1_METRICS = """vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.99
vllm:num_requests_running{engine="0",model_name="m"} 4.0
vllm:generation_tokens_total{engine="0",model_name="m"} 250.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="m"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="m"} 6.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 6.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 1.2
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 6.0
"""


def test_kv_cache_metric_name_follows_the_version():
    assert vv.metric_names("kv_cache_usage", vv.V("0.8.5")) == ("vllm:gpu_cache_usage_perc",)
    assert vv.metric_names("kv_cache_usage", vv.V("0.11.0"))[0] == "vllm:kv_cache_usage_perc"
    old = Sample.from_metrics(0, "c", "s", parse_metrics(V0_METRICS), vv.V("0.8.5"))
    assert (old.kv_cache_usage, old.running, old.waiting, old.preemptions) == (0.25, 3, 1, 2)
    new = Sample.from_metrics(0, "c", "s", parse_metrics(V1_METRICS), vv.V("0.32.0"))
    assert new.kv_cache_usage == 0.75  # the version's own name, summed over engines
    assert new.waiting is None  # absent: shown as unknown, not as 0


def test_rates_and_ttft_quantile_over_an_interval():
    m = parse_metrics(V1_METRICS)
    a = Sample.from_metrics(10.0, "c", "s", {**m, "vllm:generation_tokens_total": 50.0,
                                               "vllm:time_to_first_token_seconds_count": 0.0,
                                               "vllm:time_to_first_token_seconds_sum": 0.0}
                            | {k: 0.0 for k in m if "_bucket" in k}, vv.V("0.32.0"))  # fmt: skip
    b = Sample.from_metrics(12.0, "c", "s", m, vv.V("0.32.0"))
    r = rates(a, b)
    assert r.generation_tps == pytest.approx(100.0)
    assert r.ttft_mean_ms == pytest.approx(200.0)
    # 6 requests: 2 under 100 ms, 4 between 100 and 500 ms -> p50 (rank 3) at 200 ms
    assert r.ttft_p50_ms == pytest.approx(200.0)


def test_bench_records_server_series_and_top_reads_them(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    model = write_model(tmp_path / "models", "m")
    double = Double(model, "--served-model-name", "m").wait_ready()
    try:
        stack = {
            "name": "obs", "host": {"gpus": 1, "gpu_memory_gib": 24},
            "defaults": {"image": "vllm/vllm-openai:v0.11.0", "model_root": str(tmp_path / "models")},
            "services": {"m": {"kind": "chat", "model": "m", "gpus": [0], "port": double.port}},
        }  # fmt: skip
        path = tmp_path / "obs.yaml"
        path.write_text(yaml.safe_dump(stack))
        plan = build_plan(parse_stack(path.read_text(), source=str(path), default_name="obs.yaml"))
        from kit import record

        record.write(tmp_path / "state" / "projects" / "obs", plan)
        res = CliRunner().invoke(cli, ["bench", str(path), "m", "-p", "4", "-n", "40",
                                       "--max-tokens", "8", "--results", str(tmp_path / "r")])  # fmt: skip
        assert res.exit_code == 0, res.output
        folder = next((tmp_path / "r").rglob("server.jsonl")).parent
        series = [json.loads(x) for x in (folder / "server.jsonl").read_text().splitlines()]
        assert len(series) >= 2 and {s["container"] for s in series} == {"m"}
        assert series[-1]["generation_tokens"] >= 40 * 8  # the double's own counter
        assert (folder / "server.png").stat().st_size > 1000
        # kit top's rows from two scrapes around some traffic
        from kit.observe import Scraper

        scraper = Scraper(plan)
        before = {"m": scraper.scrape(plan.service("m"), now=0.0)}
        res = CliRunner().invoke(cli, ["bench", str(path), "m", "-p", "2", "-n", "10",
                                       "--max-tokens", "8", "--no-plots",
                                       "--results", str(tmp_path / "r2")])  # fmt: skip
        after = {"m": scraper.scrape(plan.service("m"), now=2.0)}
        (row,) = rows(plan, before, after)
        assert row.up and row.generation_tps == pytest.approx(10 * 8 / 2.0)
    finally:
        double.stop()
