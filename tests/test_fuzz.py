"""Property: any YAML at all gives a valid stack or a clean StackError, never a traceback."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit.errors import StackError
from kit.plan import build_plan
from kit.spec import Stack, parse_stack
from stackutil import BASE_STACK

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["chat", "embed", "rerank", "0.11.0", "x:latest", "127.0.0.1"]),
)  # fmt: skip
keys = st.sampled_from(
    ["host", "defaults", "services", "name", "gpus", "gpu_memory_gib", "image", "vllm_version",
     "kind", "model", "port", "tensor_parallel_size", "extra_args", "env", "llm", "x"]
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(keys | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=20,
)


def check(text: str) -> None:
    try:
        stack = parse_stack(text, source="fuzz.yaml", default_name="fuzz")
    except StackError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        return
    assert isinstance(stack, Stack)
    try:
        build_plan(stack, inspect_models=False)
    except StackError as exc:
        assert exc.problems


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(values)
def test_random_yaml_documents(doc):
    check(yaml.safe_dump(doc))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text(text):
    check(text)


def _mutations():
    def mutate(path_and_value):
        import copy

        path, value = path_and_value
        doc = copy.deepcopy(BASE_STACK)
        node = doc
        for k in path[:-1]:
            node = node.setdefault(k, {}) if isinstance(node, dict) else node
        if isinstance(node, dict):
            node[path[-1]] = value
        return doc

    paths = st.sampled_from(
        [("host", "gpus"), ("host", "gpu_memory_gib"), ("defaults", "image"),
         ("defaults", "vllm_version"), ("defaults", "headroom"), ("services", "llm", "gpus"),
         ("services", "llm", "port"),
         ("services", "llm", "tensor_parallel_size"), ("services", "llm", "kind"),
         ("services", "llm", "extra_args"), ("services", "llm", "gpu_memory_utilization")]
    )  # fmt: skip
    return st.tuples(paths, values).map(mutate)


@settings(max_examples=300, deadline=None)
@given(_mutations())
def test_mutated_valid_stack(doc):
    check(yaml.safe_dump(doc))
