"""Planning rules: GPU ranges, TP x PP, model shape and fit, sharing, placement, order."""

from __future__ import annotations

import pytest

from kit.errors import StackError
from kit.plan import build_plan
from kit.spec import load_stack
from stackutil import write_model


def plan_of(path):
    return build_plan(load_stack(path))


def plan_problems(path) -> list[str]:
    with pytest.raises(StackError) as info:
        plan_of(path)
    assert str(path) in str(info.value)
    return info.value.problems


def one(found: list[str], *needles: str) -> str:
    hits = [p for p in found if all(n in p for n in needles)]
    assert hits, f"no problem with {needles} in {found}"
    return hits[0]


SVC = {"kind": "chat", "model": "org/m", "port": 9001}


def test_gpu_ids_outside_host(stack_file):
    p = one(plan_problems(stack_file({"services": {"llm": {"gpus": [6, 7, 8, 9]}}})), "gpus")
    assert p.startswith("service 'llm', field 'gpus'")
    assert "8, 9 outside the host's 8 GPUs (valid ids 0-7)" in p


def test_count_larger_than_host(stack_file):
    one(plan_problems(stack_file({"services": {"llm": {"gpus": 9}}})), "asks for 9 GPUs", "has 8")


def test_tp_times_pp_must_equal_gpus(stack_file):
    p = one(
        plan_problems(
            stack_file(
                {"services": {"llm": {"tensor_parallel_size": 2, "pipeline_parallel_size": 1}}}
            )
        ),
        "field 'tensor_parallel_size'",
    )
    assert "2 x pipeline_parallel_size 1 = 2, but the service gets 4 GPUs" in p


def test_tp_defaults_to_gpus_over_pp(stack_file):
    plan = plan_of(stack_file({"services": {"llm": {"pipeline_parallel_size": 2}}}))
    s = plan.service("llm")
    assert (s.tp, s.pp) == (2, 2)
    assert "--pipeline-parallel-size" in s.engine_args


def test_heads_not_divisible_by_tp(stack_file, tmp_path):
    write_model(tmp_path / "models" / "org" / "m", heads=14, kv_heads=2)
    path = stack_file(
        {
            "defaults": {"model_root": str(tmp_path / "models")},
            "services": {"llm": {"model": "org/m"}},
        }
    )
    p = one(plan_problems(path), "attention heads")
    assert p.startswith("service 'llm', field 'tensor_parallel_size'")
    assert "14 attention heads, not divisible by tensor parallel size 4" in p


def test_model_too_big_says_by_how_much(stack_file, tmp_path):
    # 300 GiB of weights over 4 x 80 GiB at 0.9 = 75 GiB each for 72 needed: no room
    write_model(tmp_path / "models" / "big", weights_gib=300)
    path = stack_file(
        {
            "defaults": {"model_root": str(tmp_path / "models")},
            "services": {"llm": {"model": "big"}},
        }
    )
    p = one(plan_problems(path), "does not fit")
    assert p.startswith("service 'llm', field 'model'")
    # weights 75.0 + KV (2*32 layers*2 kv heads/gpu*128*2 bytes*32768 tokens = 1 GiB) + 2 = 78
    assert "weights 75.0" in p and "KV cache for 32768 tokens 1.0" in p
    assert "against 72.0 GiB" in p and "6.0 GiB too much per GPU" in p


def test_model_that_fits_has_estimate(stack_file, tmp_path):
    write_model(tmp_path / "models" / "ok", weights_gib=16)
    path = stack_file(
        {
            "defaults": {"model_root": str(tmp_path / "models")},
            "services": {"llm": {"model": "ok", "max_model_len": 8192}},
        }
    )
    fit = plan_of(path).service("llm").fit
    assert fit is not None and fit.fits
    assert fit.weights_gib == pytest.approx(4.0)
    assert fit.kv_gib == pytest.approx(0.25)  # 2*32*2*128*2*8192


def test_mla_models_cache_a_latent(tmp_path):
    from kit.model_info import read_model

    folder = write_model(
        tmp_path / "ds",
        heads=128,
        kv_heads=128,
        hidden=7168,
        layers=61,
        extra={"kv_lora_rank": 512, "qk_rope_head_dim": 64},
    )
    info = read_model(folder)
    assert info.kv_bytes_per_token(tp=8, pp=1) == 61 * 576 * 2


def test_unreadable_model_is_a_warning(stack_file, tmp_path):
    path = stack_file({"defaults": {"model_root": str(tmp_path / "nowhere")}})
    plan = plan_of(path)
    assert any("llm: model folder not readable here" in w for w in plan.warnings)
    assert plan.service("llm").fit is None


def test_remote_code_needs_trust(stack_file, tmp_path):
    write_model(tmp_path / "models" / "custom", auto_map=True)
    path = stack_file(
        {
            "defaults": {"model_root": str(tmp_path / "models")},
            "services": {"llm": {"model": "custom"}},
        }
    )
    one(plan_problems(path), "field 'trust_remote_code'", "custom code")


def test_max_model_len_above_model(stack_file, tmp_path):
    write_model(tmp_path / "models" / "m", max_pos=4096)
    path = stack_file(
        {
            "defaults": {"model_root": str(tmp_path / "models")},
            "services": {"llm": {"model": "m", "max_model_len": 8192}},
        }
    )
    one(
        plan_problems(path),
        "field 'max_model_len'",
        "exceeds the model's max_position_embeddings 4096",
    )


def test_local_model_without_root(stack_file):
    path = stack_file({"services": {"llm": {"model_source": "local"}}})
    one(plan_problems(path), "field 'model'", "defaults.model_root is not set")


def test_unique_ports_and_names(stack_file):
    path = stack_file(
        services={
            "a": {**SVC, "gpus": [0]},
            "b": {**SVC, "gpus": [1], "served_name": "a"},
        }
    )
    found = plan_problems(path)
    one(found, "service 'b', field 'served_name'", "'a' is already used by service 'a'")
    one(found, "service 'b', field 'port'", "9001 is already used by service 'a'")


def test_sharing_over_headroom(stack_file):
    path = stack_file(
        services={
            "llm": {**SVC, "gpus": [0, 1], "gpu_memory_utilization": 0.9},
            "emb": {
                "kind": "embed",
                "model": "e",
                "gpus": [1],
                "port": 9002,
                "gpu_memory_utilization": 0.1,
            },
        }
    )
    p = one(plan_problems(path), "GPU 1 is shared by")
    assert "field 'gpu_memory_utilization'" in p
    assert "total 1.00 exceeds headroom 0.95 by 0.05" in p


def test_fills_fractions_for_pooling_on_shared_gpu(stack_file, tmp_path):
    write_model(tmp_path / "models" / "e", weights_gib=1.0)
    path = stack_file(
        {"host": {"gpu_memory_gib": 24}, "defaults": {"model_root": str(tmp_path / "models")}},
        services={
            "llm": {**SVC, "model_source": "hub", "gpus": [0, 1], "gpu_memory_utilization": 0.6},
            "emb": {"kind": "embed", "model": "e", "gpus": [1], "port": 9002},
            "rr": {
                "kind": "rerank",
                "model": "r",
                "model_source": "hub",
                "gpus": [1],
                "port": 9003,
            },
        },
    )
    plan = plan_of(path)
    emb, rr = plan.service("emb"), plan.service("rr")
    assert emb.fraction == 0.11 and emb.fraction_source == "filled"  # (1 + 1.5) / 24, rounded up
    assert rr.fraction == 0.17  # unreadable: at least 4 GiB of 24
    assert any("emb: gpu_memory_utilization not set; the kit chose 0.11" in n for n in plan.notes)
    assert sum(f for _, f in plan.gpu_map()[1]) == pytest.approx(0.88)
    assert plan.service("llm").fraction_source == "stack"


def test_chat_on_shared_gpu_gets_what_is_left(stack_file):
    path = stack_file(
        services={
            "llm": {**SVC, "gpus": [0, 1]},
            "emb": {
                "kind": "embed",
                "model": "e",
                "gpus": [1],
                "port": 9002,
                "gpu_memory_utilization": 0.1,
            },
        }
    )
    plan = plan_of(path)
    assert plan.service("llm").fraction == 0.85
    assert plan.service("llm").fraction_source == "filled"
    assert plan.service("emb").fraction == 0.1


def test_alone_on_gpu_gets_vllm_default(stack_file):
    s = plan_of(stack_file()).service("llm")
    assert (s.fraction, s.fraction_source) == (0.9, "vllm default")


def test_start_order_largest_first_and_depends_on_shared_gpus_only(stack_file):
    path = stack_file(
        services={
            "rr": {"kind": "rerank", "model": "r", "gpus": [2], "port": 9003},
            "llm": {**SVC, "gpus": list(range(8)), "gpu_memory_utilization": 0.8},
            "emb": {"kind": "embed", "model": "e", "gpus": [4], "port": 9002},
            "solo": {
                "kind": "embed",
                "model": "s",
                "gpus": [4],
                "port": 9004,
                "gpu_memory_utilization": 0.06,
            },
        }
    )
    plan = plan_of(path)
    assert [s.name for s in plan.services] == ["llm", "solo", "emb", "rr"]
    deps = {s.name: s.depends_on for s in plan.services}
    # rr shares GPU 2 with llm only; emb waits for the previous service on GPU 4
    assert deps == {"llm": (), "solo": ("llm",), "emb": ("solo",), "rr": ("llm",)}


def test_placement_fills_free_gpus_with_neighbouring_ids(stack_file):
    path = stack_file(
        services={
            "fixed": {**SVC, "gpus": [0, 1]},
            "big": {**SVC, "gpus": 4, "port": 9002, "served_name": "big"},
            "e1": {"kind": "embed", "model": "e", "gpus": 1, "port": 9003},
            "e2": {"kind": "embed", "model": "e", "gpus": 1, "port": 9004, "served_name": "e2"},
        }
    )
    plan = plan_of(path)
    gpus = {s.name: s.gpus for s in plan.services}
    assert gpus["big"] == (4, 5, 6, 7)  # the aligned free window of four
    assert gpus["e1"] == (2,) and gpus["e2"] == (3,)
    assert all(s.auto_placed for s in plan.services if s.name != "fixed")
    assert any("big: placed on GPUs 4-7 (asked for 4)" in n for n in plan.notes)
    # deterministic
    assert plan_of(path).services == plan.services


def test_placement_shares_when_no_free_window(stack_file):
    path = stack_file(
        services={
            "llm": {**SVC, "gpus": list(range(8)), "gpu_memory_utilization": 0.8},
            "emb": {"kind": "embed", "model": "e", "gpus": 1, "port": 9002},
        }
    )
    plan = plan_of(path)
    assert plan.service("emb").gpus == (0,)
    assert any("no free window of 1, shares GPU 0" in n for n in plan.notes)


@pytest.mark.parametrize(
    ("svc", "needles"),
    [
        (
            {"reasoning_parser": "nope"},
            ("field 'reasoning_parser'", "unknown parser 'nope'", "deepseek_r1"),
        ),
        (
            {"tool_call_parser": "nope"},
            ("field 'tool_call_parser'", "unknown parser 'nope'", "hermes"),
        ),
        (
            {"extra_args": ["--tensor-parallel-size", "2"]},
            ("field 'extra_args'", "use the 'tensor_parallel_size' field"),
        ),
        (
            {"extra_args": ["--api-key", "x"]},
            ("field 'extra_args'", "carries a secret"),
        ),
        (
            {"extra_args": ["--task", "embed"]},
            ("field 'extra_args'", "means kind 'embed'", "set kind: embed"),
        ),
    ],
)
def test_flag_problems(stack_file, svc, needles):
    one(plan_problems(stack_file({"services": {"llm": svc}})), "service 'llm'", *needles)


def test_parser_on_pooling_service(stack_file):
    path = stack_file(
        services={
            "e": {"kind": "embed", "model": "e", "gpus": 1, "port": 1, "reasoning_parser": "qwen3"}
        }
    )
    one(plan_problems(path), "only chat services take a parser")


def test_parser_newer_than_pinned_version(stack_file):
    path = stack_file(
        {
            "defaults": {"image": "vllm/vllm-openai:v0.8.5", "vllm_version": "0.8.5"},
            "services": {"llm": {"reasoning_parser": "qwen3"}},
        }
    )
    one(plan_problems(path), "parser 'qwen3' needs vLLM 0.9.0 or newer, the stack pins 0.8.5")


def test_renamed_parser(stack_file):
    path = stack_file({"services": {"llm": {"tool_call_parser": "glm4_moe"}}})
    one(plan_problems(path), "parser 'glm4_moe' was removed in vLLM 0.10.1 (renamed: try glm45")


def test_removed_flag_in_extra_args(stack_file):
    svc = {"llm": {"extra_args": ["--swap-space", "4"]}}
    path = stack_file(
        {
            "defaults": {"image": "vllm/vllm-openai:v0.18.0", "vllm_version": "0.18.0"},
            "services": svc,
        }
    )
    one(plan_problems(path), "field 'extra_args'", "--swap-space was removed in vLLM 0.18.0")
    old = plan_of(
        stack_file(
            {
                "defaults": {"image": "vllm/vllm-openai:v0.17.0", "vllm_version": "0.17.0"},
                "services": svc,
            },
            name="old",
        )
    )
    assert old.service("llm").engine_args[-2:] == ("--swap-space", "4")


def test_default_fraction_follows_version(stack_file):
    plan = plan_of(
        stack_file({"defaults": {"image": "vllm/vllm-openai:v0.20.0", "vllm_version": "0.20.0"}})
    )
    assert plan.service("llm").fraction == 0.92


def test_version_too_old(stack_file):
    one(
        plan_problems(
            stack_file({"defaults": {"image": "vllm/vllm-openai:v0.6.3", "vllm_version": "0.6.3"}})
        ),
        "defaults.vllm_version",
        "older than",
    )


def test_version_newer_than_table_warns(stack_file):
    plan = plan_of(
        stack_file({"defaults": {"image": "vllm/vllm-openai:v9.0.0", "vllm_version": "9.0.0"}})
    )
    assert any("newer than the kit's version table" in w for w in plan.warnings)


def test_filled_fractions_never_overshoot_a_small_gpu(stack_file):
    """Two unreadable pooling models on an 8 GiB GPU: 4 GiB each would sum to 1.00."""
    path = stack_file(
        {"host": {"gpu_memory_gib": 8}},
        services={
            "emb": {"kind": "embed", "model": "e", "model_source": "hub", "gpus": [1], "port": 1},
            "rr": {"kind": "rerank", "model": "r", "model_source": "hub", "gpus": [1], "port": 2},
        },
    )
    plan = plan_of(path)
    assert plan.service("emb").fraction == plan.service("rr").fraction == 0.47
    assert sum(f for _, f in plan.gpu_map()[1]) <= 0.95
    assert any("capped at its fair share 0.47 of GPU 1" in n for n in plan.notes)


def test_two_chat_services_without_fractions_split_a_shared_gpu(stack_file):
    path = stack_file(
        services={
            "a": {**SVC, "gpus": [0]},
            "b": {**SVC, "gpus": [0], "port": 9002, "served_name": "b"},
        }
    )
    plan = plan_of(path)
    assert plan.service("a").fraction == plan.service("b").fraction == 0.47
    assert plan.service("b").depends_on == ("a",)
