"""Stack file loading: every shape rule gives a clear error naming stack, service and field."""

from __future__ import annotations

import pytest

from kit.errors import KitError, StackError
from kit.spec import load_stack, parse_stack


def problems(path) -> list[str]:
    with pytest.raises(StackError) as info:
        load_stack(path)
    assert str(path) in str(info.value), "the error names the stack file"
    return info.value.problems


def test_minimal_stack_loads_with_defaults(stack_file):
    stack = load_stack(stack_file())
    assert stack.name == "t"
    assert stack.host.gpus == 8
    assert stack.defaults.bind_address == "127.0.0.1"
    assert stack.defaults.headroom == 0.95
    svc = stack.services["llm"]
    assert svc.gpus == (0, 1, 2, 3)
    assert svc.pipeline_parallel_size == 1


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"defaults": {"image": "vllm/vllm-openai:latest"}}, "moving tag 'latest'"),
        ({"defaults": {"image": "vllm/vllm-openai"}}, "has no tag"),
        ({"defaults": {"vllm_version": 0.11}}, "quoted string"),
        ({"defaults": {"vllm_version": "eleven"}}, "not a vLLM version"),
        ({"defaults": {"bind_address": "localhost"}}, "must be an IP address"),
        ({"defaults": {"headroom": 1.5}}, "less than or equal to 1"),
        ({"defaults": {"hf_endpoint": "hf-mirror.com"}}, "http(s) URL"),
        ({"defaults": {"shm_size": "64g"}}, "set ipc: private"),
        ({"defaults": {"env": {"VLLM_API_KEY": "s3cret"}}}, "must not be written in the stack"),
        (
            {"host": {"gpu_memory_gib": None}},
            "set gpu_memory_gib (usable GiB per GPU) or gpu_model",
        ),
        ({"host": {"gpus": 0}}, "greater than or equal to 1"),
        ({"hots": {"gpus": 8}}, "unknown field"),
    ],
)
def test_stack_level_field_errors(stack_file, patch, expected):
    found = problems(stack_file(patch))
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("service", "field", "expected"),
    [
        ({"kind": "generate"}, "kind", "use one of 'chat', 'embed', 'rerank'"),
        ({"port": 70000}, "port", "less than or equal to 65535"),
        ({"gpus": True}, "gpus", "must be a count"),
        ({"gpus": [1, 1]}, "gpus", "repeat"),
        ({"gpus": []}, "gpus", "empty"),
        ({"gpus": 0}, "gpus", "at least 1"),
        ({"gpu_memory_utilization": 1.2}, "gpu_memory_utilization", "less than or equal to 1"),
        ({"extra_args": [["nested"]]}, "extra_args", "list of strings"),
        ({"served_name": "has space"}, "served_name", "without spaces"),
        ({"model": "../../etc"}, "model", "must not contain '..'"),
        ({"temperature": 0.1}, "temperature", "unknown field"),
    ],
)
def test_service_field_errors_name_service_and_field(stack_file, service, field, expected):
    found = problems(stack_file({"services": {"llm": service}}))
    assert any(p.startswith(f"service 'llm', field '{field}'") and expected in p for p in found), (
        found
    )


def test_all_problems_reported_at_once(stack_file):
    found = problems(
        stack_file({"defaults": {"image": "x:latest"}, "services": {"llm": {"port": 0}}})
    )
    assert len(found) == 2


def test_bad_service_name(stack_file):
    found = problems(
        stack_file(services={"LLM!": {"kind": "chat", "model": "m", "gpus": 1, "port": 1}})
    )
    assert any("service name 'LLM!'" in p for p in found)


def test_no_services(stack_file):
    assert any("at least one service" in p for p in problems(stack_file(services={})))


def test_yaml_syntax_error_has_line(stack_file):
    path = stack_file(raw="host:\n  gpus: 8\n services: [\n")
    found = problems(path)
    assert "not valid YAML at line" in found[0]


@pytest.mark.parametrize("raw", ["", "- a\n- b\n", "just text\n"])
def test_top_level_must_be_mapping(stack_file, raw):
    assert "must be a mapping" in problems(stack_file(raw=raw))[0]


def test_extra_args_mapping_becomes_flags(stack_file):
    stack = load_stack(
        stack_file(
            {
                "services": {
                    "llm": {
                        "extra_args": {
                            "max-num-seqs": 64,
                            "enable-prefix-caching": True,
                            "x": False,
                        }
                    }
                }
            }
        )
    )
    assert stack.services["llm"].extra_args == ("--max-num-seqs", "64", "--enable-prefix-caching")


def test_stack_by_name_and_unknown_name(tmp_path, stack_file):
    stack_file(name="mine")
    assert load_stack("mine", stacks_dir=tmp_path).name == "mine"
    with pytest.raises(KitError, match="stacks there: mine"):
        load_stack("other", stacks_dir=tmp_path)


def test_name_from_file_is_made_compose_safe(stack_file):
    stack = load_stack(stack_file(name="Bad Name.v2"))
    assert stack.name == "bad-name-v2" and stack.name_from_file == "Bad Name.v2.yaml"


def test_parse_stack_never_leaks_exceptions_on_odd_yaml():
    with pytest.raises(StackError):
        parse_stack("a: 2001-02-30\n")  # yaml raises ValueError for the bad date
