"""Adversarial stacks: each loophole a user (or old notes) could slip through is refused with a
message naming the stack file, the service and the field, and nothing is rendered."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kit.cli import cli
from kit.command import OWNED_FLAGS
from kit.errors import StackError
from kit.plan import build_plan
from kit.spec import load_stack, parse_stack
from kit.vllm_flags import parse_serve_args
from kit.vllm_versions import Version
from stackutil import BASE_STACK, deep_merge

HF_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWx"
SK_TOKEN = "sk-" + "proj1234567890abcdefXYZ"


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def plan_problems(path: Path) -> list[str]:
    with pytest.raises(StackError) as info:
        build_plan(load_stack(path))
    assert str(path) in str(info.value), "the error names the stack file"
    return info.value.problems


def extra(stack_file, args, *, kind: str = "chat", version: str = "0.11.0") -> Path:
    svc = {"kind": kind, "extra_args": args}
    patch = {"services": {"llm": svc}}
    if version != "0.11.0":
        patch["defaults"] = {"image": f"vllm/vllm-openai:v{version}", "vllm_version": version}
    return stack_file(patch)


def one_problem(found: list[str], *needles: str) -> str:
    hits = [p for p in found if all(n in p for n in needles)]
    assert hits, f"no problem with {needles} in {found}"
    return hits[0]


# --- engine-owned flags, in every spelling vLLM accepts ---------------------------------------


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--gpu-memory-utilization", "0.5"], "gpu_memory_utilization"),
        (["--gpu_memory_utilization", "0.5"], "gpu_memory_utilization"),
        (["--gpu-memory-utilization=0.5"], "gpu_memory_utilization"),
        (["--gpu_memory_utilization=0.5"], "gpu_memory_utilization"),
        (["-tp", "2"], "tensor_parallel_size"),
        (["--tensor_parallel_size=4"], "tensor_parallel_size"),
        (["-pp", "2"], "pipeline_parallel_size"),
        (["--max_model_len", "4096"], "max_model_len"),
        (["--served_model_name", "other"], "served_name"),
        (["--port=9"], "port"),
        (["--host", "1.2.3.4"], "port"),
        (["--dtype", "half"], "dtype"),
        (["--trust_remote_code"], "trust_remote_code"),
        (["--model", "/elsewhere"], "model"),
        (["--reasoning_parser", "deepseek_r1"], "reasoning_parser"),
        (["--tool-call-parser=hermes"], "tool_call_parser"),
    ],
)
def test_owned_flags_refused_in_every_spelling(stack_file, args, field):
    found = plan_problems(extra(stack_file, args))
    msg = one_problem(found, "service 'llm', field 'extra_args'", f"'{field}'")
    assert "set by the kit" in msg


def test_owned_flag_as_mapping_form_is_refused(stack_file):
    path = stack_file({"services": {"llm": {"extra_args": {"gpu_memory_utilization": 0.3}}}})
    one_problem(plan_problems(path), "'gpu_memory_utilization'", "set by the kit")


def test_same_extra_flag_twice_is_refused(stack_file):
    found = plan_problems(extra(stack_file, ["--max-num-seqs", "8", "--max_num_seqs=16"]))
    one_problem(found, "field 'extra_args'", "given twice")


# --- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["--api-key", "abc"], ["--api_key=abc"], ["--hf-token", "x"], ["--hf_token=x"]],
)
def test_secret_flags_refused_with_env_file_field(stack_file, args):
    msg = one_problem(plan_problems(extra(stack_file, args)), "field 'extra_args'", "secret")
    assert "defaults.api_key_env_file" in msg


@pytest.mark.parametrize("token", [HF_TOKEN, SK_TOKEN])
def test_token_shaped_values_refused_and_never_echoed(stack_file, token, tmp_path):
    path = extra(stack_file, ["--served-model-name-suffix-not-a-flag", token])
    res = run("render", str(path), "-o", str(tmp_path / "c.yml"))
    assert res.exit_code == 2
    assert "access token" in res.stderr and "api_key_env_file" in res.stderr
    assert token not in res.output and token[5:] not in res.stderr
    assert not (tmp_path / "c.yml").exists()


@pytest.mark.parametrize("where", ["defaults", "service"])
def test_token_shaped_env_values_refused(stack_file, where):
    env = {"env": {"MY_TOKEN": HF_TOKEN}}
    patch = {"defaults": env} if where == "defaults" else {"services": {"llm": env}}
    with pytest.raises(StackError) as info:
        load_stack(stack_file(patch))
    assert "must not be written in the stack" in str(info.value)
    assert HF_TOKEN not in str(info.value)


# --- duplicate keys -----------------------------------------------------------------------------


def test_service_defined_twice_gives_both_lines(stack_file):
    raw = yaml.safe_dump(BASE_STACK, sort_keys=False) + (
        "  llm:\n    kind: embed\n    model: org/e\n    gpus: [5]\n    port: 9100\n"
    )
    with pytest.raises(StackError) as info:
        load_stack(stack_file(raw=raw))
    line_first = raw.splitlines().index("  llm:") + 1
    line_second = len(raw.splitlines()) - 4
    msg = info.value.problems[0]
    assert "'llm' appears twice" in msg and f"lines {line_first} and {line_second}" in msg


def test_field_given_twice_is_refused(stack_file):
    raw = yaml.safe_dump(BASE_STACK, sort_keys=False).replace(
        "    port: 9001\n", "    port: 9001\n    port: 9002\n"
    )
    with pytest.raises(StackError) as info:
        load_stack(stack_file(raw=raw))
    assert "'port' appears twice" in info.value.problems[0]


# --- image tag vs vllm_version ------------------------------------------------------------------


def test_tag_version_contradicting_vllm_version_is_refused(stack_file):
    path = stack_file({"defaults": {"image": "vllm/vllm-openai:v0.8.5", "vllm_version": "0.11.0"}})
    with pytest.raises(StackError) as info:
        load_stack(path)
    one_problem(info.value.problems, "field 'defaults.vllm_version'", "contradicts the image tag")


def test_vllm_version_taken_from_the_tag_when_omitted(stack_file):
    stack = load_stack(
        stack_file({"defaults": {"image": "vllm/vllm-openai:v0.10.1.1", "vllm_version": None}})
    )
    assert stack.defaults.vllm_version == "0.10.1.1"


@pytest.mark.parametrize(
    "image", ["registry.local/vllm:prod", "vllm/vllm-openai@sha256:" + "a" * 64]
)
def test_tag_without_version_requires_vllm_version(stack_file, image):
    with pytest.raises(StackError) as info:
        load_stack(stack_file({"defaults": {"image": image, "vllm_version": None}}))
    one_problem(info.value.problems, "field 'defaults.vllm_version'", "names no vLLM version")
    assert load_stack(stack_file({"defaults": {"image": image, "vllm_version": "0.11.0"}}))


# --- GPU visibility in env ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "var",
    [
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
    ],
)
@pytest.mark.parametrize("where", ["defaults", "service"])
def test_gpu_visibility_env_contradicts_pinning(stack_file, var, where):
    env = {"env": {var: "0,1"}}
    patch = {"defaults": env} if where == "defaults" else {"services": {"llm": env}}
    with pytest.raises(StackError) as info:
        load_stack(stack_file(patch))
    field = "field 'defaults.env'" if where == "defaults" else "service 'llm', field 'env'"
    one_problem(info.value.problems, field, var, "gpus field")


# --- flags that contradict the kind -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "args", "needle"),
    [
        ("chat", ["--runner", "pooling"], "contradicts kind 'chat'"),
        ("chat", ["--runner=pooling"], "contradicts kind 'chat'"),
        ("chat", ["--convert", "embed"], "contradicts kind 'chat'"),
        ("chat", ["--task", "embed"], "means kind 'embed'"),
        ("chat", ["--task=embed"], "means kind 'embed'"),
        ("embed", ["--reasoning-parser", "deepseek_r1"], "only chat services"),
        ("embed", ["--enable_auto_tool_choice"], "only chat services"),
        ("rerank", ["--runner", "generate"], "contradicts kind 'rerank'"),
        ("embed", ["--convert=classify"], "contradicts kind 'embed'"),
    ],
)
def test_flags_contradicting_the_kind(stack_file, kind, args, needle):
    one_problem(plan_problems(extra(stack_file, args, kind=kind)), "field 'extra_args'", needle)


def test_flags_agreeing_with_the_kind_are_dropped_with_a_note(stack_file):
    plan = build_plan(load_stack(extra(stack_file, ["--runner", "pooling"], kind="embed")))
    s = plan.services[0]
    assert s.engine_args.count("--runner") == 1
    assert any("--runner pooling dropped" in n for n in plan.notes)


# --- stray tokens and unknown flags -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["oops"], "'oops'"),
        (["--enforce-eager", "oops"], "'oops'"),
        (["--max-num-seqs"], "--max-num-seqs"),
        (["--gpu-memory-utilisation", "0.5"], "--gpu-memory-utilisation"),
    ],
)
def test_stray_tokens_and_unknown_flags(stack_file, args, needle):
    one_problem(plan_problems(extra(stack_file, args)), "field 'extra_args'", needle)


def test_flag_newer_than_the_pinned_version_is_refused(stack_file):
    found = plan_problems(
        extra(stack_file, ["--max-cudagraph-capture-size", "256"], version="0.8.5")
    )
    one_problem(found, "field 'extra_args'", "--max-cudagraph-capture-size")


def test_known_extra_flags_pass(stack_file):
    path = extra(stack_file, ["--enforce-eager", "--max_num_seqs=64", "--kv-cache-dtype", "fp8"])
    s = build_plan(load_stack(path)).services[0]
    assert s.engine_args[-4:] == ("--enforce-eager", "--max_num_seqs=64", "--kv-cache-dtype", "fp8")


# --- model paths --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["/", "/home", "/data/", ".", "./"])
def test_model_path_that_is_a_tree_root(stack_file, model):
    with pytest.raises(StackError) as info:
        load_stack(stack_file({"services": {"llm": {"model": model}}}))
    one_problem(info.value.problems, "service 'llm', field 'model'")


def test_model_outside_model_root(stack_file, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    path = stack_file(
        {"defaults": {"model_root": str(root)}, "services": {"llm": {"model": "/srv/other/m"}}}
    )
    one_problem(plan_problems(path), "service 'llm', field 'model'", "outside model_root")


def test_model_symlink_leading_outside_model_root(stack_file, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "m").symlink_to(tmp_path / "elsewhere")
    path = stack_file({"defaults": {"model_root": str(root)}, "services": {"llm": {"model": "m"}}})
    one_problem(plan_problems(path), "service 'llm', field 'model'", "leads outside model_root")


# --- unreadable files: exit 2 with the reason ---------------------------------------------------


def test_directory_as_stack_file(tmp_path):
    d = tmp_path / "dir.yaml"
    d.mkdir()
    res = run("plan", str(d))
    assert res.exit_code == 2 and "is a directory" in res.stderr


def test_non_utf8_stack_file(tmp_path):
    f = tmp_path / "latin.yaml"
    f.write_bytes(b"description: caf\xe9\n")
    res = run("plan", str(f))
    assert res.exit_code == 2 and "not UTF-8" in res.stderr and "line 1" in res.stderr


def test_unreadable_stack_file(stack_file, monkeypatch):
    path = stack_file()
    if os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads any file: make the read itself fail as it would for a user
        real = Path.read_bytes

        def denied(self: Path) -> bytes:
            if self == path:
                raise PermissionError(13, "Permission denied")
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", denied)
    res = run("plan", str(path))
    assert res.exit_code == 2 and "permission denied" in res.stderr


# --- names --------------------------------------------------------------------------------------


def test_project_name_derived_from_a_file_name_with_dots(tmp_path):
    f = tmp_path / "llm-v0.11.yaml"
    f.write_text(yaml.safe_dump(BASE_STACK))
    plan = build_plan(load_stack(f))
    assert plan.stack.name == "llm-v0-11"
    assert any("derived from the file name 'llm-v0.11.yaml'" in n for n in plan.notes)
    assert run("render", str(f)).exit_code == 0


def test_explicit_bad_name_is_still_an_error(stack_file):
    with pytest.raises(StackError) as info:
        load_stack(stack_file({"name": "Bad.Name"}))
    one_problem(info.value.problems, "field 'name'")


# --- warnings a user needs to see ---------------------------------------------------------------


def test_every_interface_warning_in_plan_render_and_lint(stack_file, tmp_path, monkeypatch):
    # the real compose binary is checked by the docker-marked lint tests; here only the warning
    monkeypatch.setattr("kit.lint.compose_config_problems", lambda text: [])
    path = stack_file({"defaults": {"bind_address": "0.0.0.0"}})
    for args in (("plan", str(path)), ("render", str(path), "-o", str(tmp_path / "c.yml"))):
        res = run(*args)
        assert res.exit_code == 0, res.output
        assert "0.0.0.0 publishes ports 9001 (llm)" in res.stderr
        assert "NO API key" in res.stderr
    res = run("lint", str(path))
    assert "0.0.0.0 publishes ports" in res.stderr


def test_api_key_named_in_the_every_interface_warning(stack_file, tmp_path):
    path = stack_file(
        {"defaults": {"bind_address": "0.0.0.0", "api_key_env_file": str(tmp_path / "k.env")}}
    )
    warning = next(w for w in build_plan(load_stack(path)).warnings if "0.0.0.0" in w)
    assert "an API key is required" in warning


def test_low_port_and_shared_placement_warnings(stack_file):
    path = stack_file(
        services={
            "big": {"kind": "chat", "model": "a", "gpus": 8, "port": 80},
            "small": {
                "kind": "chat",
                "model": "b",
                "gpus": 2,
                "port": 9002,
                "gpu_memory_utilization": 0.1,
            },
        }
    )
    plan = build_plan(load_stack(path))
    assert any("port 80 is below 1024" in w for w in plan.warnings)
    assert any("small: automatic placement found no 2 free GPUs" in w for w in plan.warnings)


def test_render_shows_notes_on_stderr():
    res = run("render", "source-notes")
    assert res.exit_code == 0
    assert "--enable-reasoning dropped" in res.stderr and "note:" not in res.stdout


# --- fit on real GPUs ---------------------------------------------------------------------------


def test_gpu_model_gives_usable_memory(stack_file):
    stack = load_stack(stack_file({"host": {"gpu_memory_gib": None, "gpu_model": "H100"}}))
    assert stack.host.memory_gib == pytest.approx(79.2)
    stack = load_stack(stack_file({"host": {"gpu_memory_gib": None, "gpu_model": "NVIDIA H200"}}))
    assert 139 < stack.host.memory_gib < 141


def test_unknown_gpu_model_without_memory(stack_file):
    with pytest.raises(StackError) as info:
        load_stack(stack_file({"host": {"gpu_memory_gib": None, "gpu_model": "Z9000"}}))
    one_problem(info.value.problems, "field 'host'", "'Z9000'", "H100")


def test_marketing_size_warned(stack_file):
    plan = build_plan(load_stack(stack_file({"host": {"gpu_memory_gib": 80, "gpu_model": "H100"}})))
    assert any("79.2 GiB usable" in w for w in plan.warnings)


# --- lint exit code -----------------------------------------------------------------------------


def test_lint_failure_exits_3(stack_file, monkeypatch):
    monkeypatch.setattr("kit.lint.compose_config_problems", lambda text: [])
    res = run("lint", str(stack_file({"services": {"llm": {"gpus": [9]}}})))
    assert res.exit_code == 3


# --- property: the command line never sets an owned flag twice, never holds a secret ------------

_SPELLINGS = [f for f in OWNED_FLAGS] + [
    f.replace("-", "_").replace("__", "--", 1) for f in OWNED_FLAGS
]
_TOKENS = st.one_of(
    st.sampled_from(
        [
            *_SPELLINGS,
            "-tp",
            "-pp",
            "--api-key",
            "--hf_token",
            "--enforce-eager",
            "--max-num-seqs",
            "--kv-cache-dtype",
            "fp8",
            "0.5",
            "2",
            "x",
            HF_TOKEN,
            SK_TOKEN,
            "--task",
            "embed",
            "--runner",
            "pooling",
            "--enable-reasoning",
            "--swap-space",
            "4",
            "--gpu-mem",
            "--no-trust-remote-code",
            "--served-model-name",
        ]
    ),
    st.builds(lambda f, v: f"{f}={v}", st.sampled_from(_SPELLINGS), st.sampled_from(["1", "x"])),
).map(lambda t: [t])
#: flags a user may really add: most generated lines mix these with the adversarial tokens, so
#: the property is checked on command lines the kit accepts, not only on refusals
_BENIGN = st.sampled_from(
    [["--enforce-eager"], ["--max-num-seqs", "8"], ["--max_num_batched_tokens=4096"],
     ["--kv-cache-dtype", "fp8"], ["--seed", "-1"], ["--enable-prefix-caching"],
     ["--task", "generate"], ["--enable-reasoning"]]
)  # fmt: skip
_ARGS = st.one_of(
    st.lists(_BENIGN, max_size=4, unique_by=lambda g: g[0]),
    st.lists(st.one_of(_BENIGN, _TOKENS), max_size=4, unique_by=lambda g: g[0]),
).map(lambda groups: [t for g in groups for t in g])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ARGS, st.sampled_from(["chat", "embed", "rerank"]))
def test_rendered_command_never_sets_an_owned_flag_twice_nor_holds_a_secret(args, kind):
    doc = deep_merge(BASE_STACK, {"services": {"llm": {"kind": kind, "extra_args": args}}})
    try:
        plan = build_plan(
            parse_stack(yaml.safe_dump(doc), default_name="p.yaml"), inspect_models=False
        )
    except StackError as exc:
        event("refused: " + exc.problems[0].split(": ", 1)[-1][:50])
        assert not any(HF_TOKEN in p or SK_TOKEN in p for p in exc.problems)
        return
    event("planned")
    argv = plan.services[0].engine_args
    assert HF_TOKEN not in argv and SK_TOKEN not in argv
    parsed = parse_serve_args(argv[1:], Version.parse("0.11.0"))
    assert not parsed.problems, (argv, parsed.problems)
    seen = [item.flag for item in parsed.items]
    for flag in OWNED_FLAGS:
        assert seen.count(flag) <= 1, (flag, argv)
    assert "--api-key" not in seen and "--hf-token" not in seen


def test_prefixes_and_new_aliases_of_owned_flags_are_refused(stack_file):
    # vLLM's parser accepts unique prefixes, and 0.32 added --device-memory-utilization
    found = plan_problems(extra(stack_file, ["--gpu-mem=0.3"]))
    one_problem(found, "--gpu-mem", "'gpu_memory_utilization'")
    found = plan_problems(
        extra(stack_file, ["--device-memory-utilization", "0.3"], version="0.32.0")
    )
    one_problem(found, "--device-memory-utilization", "'gpu_memory_utilization'")


def test_abbreviated_extra_flag_is_a_warning(stack_file):
    plan = build_plan(load_stack(extra(stack_file, ["--max-num-seq", "8"])))
    assert any("abbreviates --max-num-seqs" in w for w in plan.warnings)


def test_flag_of_a_later_row_is_a_warning_between_table_rows(stack_file):
    # 0.12.0 lies between the table's 0.11.0 and 0.13.0 rows: a 0.13 flag may already exist
    path = extra(stack_file, ["--max-cudagraph-capture-size", "256"], version="0.12.0")
    plan = build_plan(load_stack(path))
    assert any("not in the flag table" in w for w in plan.warnings)
