"""Training jobs without Docker: the ``jobs:`` section, validation before anything starts,
placement, the rendered TRL config and compose file, LoRA serving flags, the log parser,
diagnoses, the TRL key table and ``kit eval``'s scoring."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from kit import record
from kit import trl_versions as tv
from kit.cli import cli
from kit.errors import KitError, StackError
from kit.eval import read_heldout, score
from kit.plan import build_plan
from kit.render import render_compose
from kit.spec import load_stack
from kit.train import serving
from kit.train.config import render_config
from kit.train.container import render_job_compose
from kit.train.data import check_data
from kit.train.diagnose import diagnose
from kit.train.model_check import read_architecture
from kit.train.preempt import Busy, busy_services, refuse
from kit.train.progress import LogParser, TrainProgress
from kit.vllm_versions import Version

MARKER = "Zanzibar!"


def tiny_llama(folder: Path, *, layers: int = 2, hidden: int = 64, vocab: int = 1000) -> Path:
    """A model folder: config.json, tokenizer stand-in and a safetensors HEADER (no weights:
    the kit reads only the header)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": hidden * 4,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "torch_dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    tensors: dict[str, Any] = {"model.embed_tokens.weight": [vocab, hidden]}
    for i in range(layers):
        p = f"model.layers.{i}"
        for m in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[f"{p}.self_attn.{m}.weight"] = [hidden, hidden]
        tensors[f"{p}.mlp.gate_proj.weight"] = [hidden * 4, hidden]
        tensors[f"{p}.mlp.up_proj.weight"] = [hidden * 4, hidden]
        tensors[f"{p}.mlp.down_proj.weight"] = [hidden, hidden * 4]
        tensors[f"{p}.input_layernorm.weight"] = [hidden]
    header = {k: {"dtype": "BF16", "shape": v, "data_offsets": [0, 0]} for k, v in tensors.items()}
    raw = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    return folder


def sft_line(q: str, a: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def train_stack(tmp_path: Path):
    """A stack with a chat service on GPU 0 and an SFT job; ``make(patch)`` writes it."""
    models = tmp_path / "models"
    tiny_llama(models / "tiny")
    tiny_llama(models / "other", layers=3)
    write_jsonl(tmp_path / "sft.jsonl", [sft_line(f"q{i}?", f"{MARKER} a{i}") for i in range(8)])
    write_jsonl(
        tmp_path / "dpo.jsonl",
        [{"prompt": f"q{i}?", "chosen": f"{MARKER} a", "rejected": "a"} for i in range(4)],
    )
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"p{i}?"} for i in range(4)])
    base: dict[str, Any] = {
        "name": "tr",
        "host": {"gpus": 4, "gpu_memory_gib": 80},
        "defaults": {
            "image": "vllm/vllm-openai:v0.32.0",
            "model_root": str(models),
            "adapters_root": str(tmp_path / "adapters"),
            "train_image": "example/kit-train:trl-1.16.0",
        },
        "services": {
            "chat": {"kind": "chat", "model": "tiny", "gpus": [0], "port": 19290},
            "embed": {"kind": "embed", "model": "tiny", "gpus": [1], "port": 19291},
        },
        "jobs": {
            "sft": {
                "method": "sft",
                "service": "chat",
                "data": "sft.jsonl",
                "steps": 30,
                "output": "tiny-marker",
                "serve": "chat",
            }
        },
    }

    def make(patch: dict[str, Any] | None = None) -> Path:
        data = json.loads(json.dumps(base))
        for key, value in (patch or {}).items():
            if key == "jobs":
                data["jobs"] = value
            else:
                data[key] = value
        path = tmp_path / "tr.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return make


def problems_of(path: Path) -> list[str]:
    with pytest.raises(StackError) as err:
        build_plan(load_stack(path))
    return err.value.problems


# --- the stack file --------------------------------------------------------------------------


def test_job_is_planned_placed_and_its_service_serves_adapters(train_stack):
    plan = build_plan(load_stack(train_stack()))
    (job,) = plan.jobs
    assert job.method == "sft" and job.trl_command == "sft"
    assert job.gpus == (2,)  # a count of 1, placed on the first GPU no service uses
    assert job.data_lines == 8 and job.total_steps == 30
    assert job.base_from == "service chat" and job.base_host_path.endswith("/tiny")
    assert job.adapter_host_path.endswith("/adapters/tiny-marker")
    chat = plan.service("chat")
    args = chat.engine_args
    assert args[-5:] == ("--enable-lora", "--max-lora-rank", "8", "--max-loras", "1")
    assert "--lora-modules" not in args  # no finished adapter yet
    assert chat.adapters_host_path is not None
    assert "--enable-lora" not in plan.service("embed").engine_args
    assert any(n.startswith("job sft: placed on GPU 2") for n in plan.notes)


def test_finished_adapters_are_listed_and_mounted_read_only(train_stack, tmp_path):
    adapter = tmp_path / "adapters" / "tiny-marker"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (adapter / "adapter_model.safetensors").write_bytes(b"x")
    plan = build_plan(load_stack(train_stack()))
    args = plan.service("chat").engine_args
    assert args[args.index("--lora-modules") + 1] == "tiny-marker=/adapters/tiny-marker"
    compose = yaml.safe_load(render_compose(plan))
    vols = compose["services"]["chat"]["volumes"]
    assert {"type": "bind", "source": str(tmp_path / "adapters"), "target": "/adapters",
            "read_only": True} in vols  # fmt: skip


def test_job_on_a_service_gpu_is_noted_for_preempt(train_stack):
    path = train_stack({"jobs": {"j": {"method": "sft", "base": "tiny", "data": "sft.jsonl",
                                       "gpus": [0], "output": "o"}}})  # fmt: skip
    plan = build_plan(load_stack(path))
    assert any("used by chat" in n and "--preempt" in n for n in plan.notes)


def test_shape_errors_name_the_job_and_field(train_stack):
    path = train_stack(
        {
            "jobs": {
                "both": {"method": "sft", "base": "tiny", "service": "chat", "data": "x",
                         "output": "a"},
                "noteacher": {"method": "distill", "base": "tiny", "data": "x", "output": "b"},
                "badname": {"method": "sft", "base": "tiny", "data": "x", "output": "a b"},
                "fullora": {"method": "sft", "base": "tiny", "data": "x", "output": "c",
                            "full": True, "lora": {"r": 4}},
                "nomethod": {"method": "ppo", "base": "tiny", "data": "x", "output": "d"},
            }
        }
    )  # fmt: skip
    with pytest.raises(StackError) as err:
        load_stack(path)
    text = "\n".join(err.value.problems)
    assert "job 'both': give the base model either as base" in text
    assert "job 'noteacher': a distill job needs teacher" in text
    assert "job 'badname', field 'output'" in text
    assert "job 'fullora': full: true trains every weight" in text
    assert "job 'nomethod', field 'method'" in text


def test_two_jobs_writing_one_adapter_are_refused(train_stack):
    job = {"method": "sft", "base": "tiny", "data": "sft.jsonl", "output": "same"}
    with pytest.raises(StackError, match="both write the adapter 'same'"):
        load_stack(train_stack({"jobs": {"a": job, "b": job}}))


# --- validation before anything starts -----------------------------------------------------


def test_bad_data_line_is_refused_with_its_number(train_stack, tmp_path):
    rows = [sft_line("q", "a"), sft_line("q", "a"),
            {"messages": [{"role": "user", "content": "only a question"}]}]  # fmt: skip
    write_jsonl(tmp_path / "sft.jsonl", rows)
    (p,) = problems_of(train_stack())
    assert p.startswith("job 'sft', field 'data'")
    assert 'line 3: "messages" has no assistant message' in p


@pytest.mark.parametrize(
    ("method", "lines", "expected"),
    [
        ("sft", ['{"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]}'],
         'line 1: "messages"[1].content must be a string'),
        ("sft", ['{"messages": []}'], "line 1: \"messages\" must be a non-empty list"),
        ("sft", ["not json"], "line 1: not valid JSON"),
        ("dpo", ['{"prompt": "q", "chosen": "a", "rejected": "b"}', '{"prompt": "q", "chosen": "a"}'],
         "line 2: 'rejected' is missing"),
        ("dpo", ['{"prompt": "q", "chosen": "a", "rejected": "a"}'],
         "line 1: chosen and rejected are the same"),
        ("distill", ['{"prompt": "q"}', '{"messages": [{"role": "assistant", "content": "x"}]}'],
         "line 2: \"messages\" must end with a user message"),
        ("distill", [""], "has no lines"),
    ],
)  # fmt: skip
def test_data_shapes_per_method(tmp_path, method, lines, expected):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    check = check_data(path, method)
    assert check.problem is not None and expected in check.problem


def test_conversational_dpo_lines_pass(tmp_path):
    row = {"prompt": [{"role": "user", "content": "q"}],
           "chosen": [{"role": "assistant", "content": f"{MARKER} a"}],
           "rejected": [{"role": "assistant", "content": "a"}]}  # fmt: skip
    assert check_data(write_jsonl(tmp_path / "d.jsonl", [row] * 3), "dpo").problem is None


def test_unknown_target_module_is_refused_with_the_models_modules(train_stack):
    path = train_stack({"jobs": {"sft": {"method": "sft", "service": "chat", "data": "sft.jsonl",
                                         "output": "o", "lora": {"target_modules":
                                                                 ["q_proj", "query_key_value"]}}}})  # fmt: skip
    (p,) = problems_of(path)
    assert "job 'sft', field 'lora.target_modules': 'query_key_value' is not a module" in p
    assert "down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj" in p


def test_too_large_job_is_refused_with_the_estimate(train_stack):
    path = train_stack()
    data = yaml.safe_load(path.read_text())
    data["jobs"]["sft"] |= {"batch_size": 64, "max_length": 8192}
    path.write_text(yaml.safe_dump(data))
    (p,) = problems_of(path)
    assert p.startswith("job 'sft', field 'batch_size': does not fit: needs about")
    assert "activations" in p and "GiB too much per GPU" in p


def test_full_fine_tune_counts_optimizer_state(train_stack, tmp_path):
    arch = read_architecture(tmp_path / "models" / "tiny")
    from kit.train.memory import estimate

    kw: dict[str, Any] = dict(method="sft", lora_r=8, target_modules=("q_proj", "v_proj"),
                              dtype="bfloat16", batch_size=1, max_length=128, gpu_memory_gib=80)  # fmt: skip
    full = estimate(arch, full=True, **kw)
    lora = estimate(arch, full=False, **kw)
    assert full.trainable_params == arch.params
    assert lora.trainable_params == 2 * 2 * 8 * (64 + 64)  # 2 layers x q,v x r(in+out)
    # bf16: gradients 2 + Adam's two float32 moments 8 + a float32 master copy 4 bytes
    assert full.state_gib == pytest.approx(arch.params * 14 / 1024**3)
    assert full.needed_gib > lora.needed_gib


def test_teacher_serve_and_base_are_checked(train_stack):
    path = train_stack({"jobs": {
        "d": {"method": "distill", "service": "chat", "teacher": "embed", "data": "prompts.jsonl",
              "output": "s", "serve": "nothere"},
        "o": {"method": "sft", "base": "other", "data": "sft.jsonl", "output": "o",
              "serve": "chat"},
        "t": {"method": "distill", "service": "chat", "teacher": "chat",
              "teacher_model": "unknown", "data": "prompts.jsonl", "output": "t"},
    }})  # fmt: skip
    text = "\n".join(problems_of(path))
    assert "job 'd', field 'teacher': service 'embed' is kind 'embed', not a chat service" in text
    assert "job 'd', field 'serve': no service 'nothere' in the stack" in text
    assert (
        "job 'o', field 'serve': service 'chat' serves" in text and "an adapter only fits" in text
    )
    assert "job 't', field 'teacher_model': service 'chat' serves chat, o, not 'unknown'" in text


def test_rank_must_fit_the_services_max_lora_rank(train_stack):
    path = train_stack()
    data = yaml.safe_load(path.read_text())
    data["services"]["chat"]["max_lora_rank"] = 16
    data["jobs"]["sft"]["lora"] = {"r": 32}
    path.write_text(yaml.safe_dump(data))
    (p,) = problems_of(path)
    assert "job 'sft', field 'lora.r': rank 32 is above the max_lora_rank 16" in p
    data["services"]["chat"]["max_lora_rank"] = 12
    path.write_text(yaml.safe_dump(data))
    assert any("field 'max_lora_rank': vLLM 0.32.0 takes 1, 8, 16" in p for p in problems_of(path))


def test_lora_flags_in_extra_args_are_the_kits_for_a_serving_service(train_stack):
    path = train_stack()
    data = yaml.safe_load(path.read_text())
    data["services"]["chat"]["extra_args"] = ["--max_lora_rank", "64", "--enable-lora"]
    path.write_text(yaml.safe_dump(data))
    text = "\n".join(problems_of(path))
    assert "service 'chat', field 'extra_args': --max_lora_rank is set by the kit" in text
    assert "--enable-lora is set by the kit for a service that serves adapters (job sft)" in text


def test_enable_lora_in_extra_args_is_refused_naming_the_field(train_stack):
    # the LoRA flags are owned flags (kit.command.OWNED_FLAGS): refused in any spelling with the
    # field that sets them, on the service a job serves from; another service may give them
    path = train_stack()
    data = yaml.safe_load(path.read_text())
    data["services"]["chat"]["extra_args"] = ["--enable_lora", "--lora-modules=x=/adapters/x"]
    path.write_text(yaml.safe_dump(data))
    text = "\n".join(problems_of(path))
    assert (
        "service 'chat', field 'extra_args': --enable_lora is set by the kit for a service that "
        "serves adapters (job sft); use the 'jobs.sft.serve' field instead"
    ) in text
    assert (
        "--lora-modules is set by the kit for a service that serves adapters (job sft); use the "
        "'jobs.sft.output' field instead"
    ) in text
    data["services"]["chat"]["extra_args"] = []
    data["services"]["own"] = {"kind": "chat", "model": "tiny", "gpus": [3], "port": 19292,
                               "extra_args": ["--enable_lora", "--max-lora-rank", "16"]}  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    plan = build_plan(load_stack(path))
    assert plan.service("own").engine_args[-3:] == ("--enable_lora", "--max-lora-rank", "16")


def test_adapters_root_is_required_with_jobs(train_stack):
    path = train_stack()
    data = yaml.safe_load(path.read_text())
    del data["defaults"]["adapters_root"]
    path.write_text(yaml.safe_dump(data))
    assert any("defaults.adapters_root" in p for p in problems_of(path))


def test_trl_args_owned_and_unknown_keys_are_refused(train_stack):
    path = train_stack()
    data = yaml.safe_load(path.read_text())
    data["jobs"]["sft"]["trl_args"] = {"learning_rate": 1, "max_seq_length": 512,
                                       "warmup_steps": 2}  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    text = "\n".join(problems_of(path))
    assert "field 'trl_args': 'learning_rate' is set by the kit; use learning_rate" in text
    assert "TRL 1.16.0 no longer reads 'max_seq_length' (gone in 0.20.0): use 'max_length'" in text
    assert "warmup_steps" not in text


def test_an_older_trl_release_lacks_keys_the_kit_renders(train_stack):
    path = train_stack()
    data = yaml.safe_load(path.read_text())
    data["defaults"]["trl_version"] = "0.20.0"
    path.write_text(yaml.safe_dump(data))
    text = "\n".join(problems_of(path))
    assert "TRL 0.20.0 does not read 'dtype' yet (from 0.23.1): use 'torch_dtype'" in text
    assert "TRL 0.20.0 has no config key 'datasets'" in text


def test_kit_train_refuses_bad_data_before_anything_starts(train_stack, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    write_jsonl(tmp_path / "sft.jsonl", [sft_line("q", "a"), {"messages": "nope"}])
    res = CliRunner().invoke(cli, ["train", str(train_stack()), "sft", "--results",
                                   str(tmp_path / "results")])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert 'line 2: "messages" must be a non-empty list' in res.output
    assert not (tmp_path / "results").exists() and not (tmp_path / "state").exists()


def test_kit_train_unknown_job(train_stack, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    res = CliRunner().invoke(cli, ["train", str(train_stack()), "nope"])
    assert res.exit_code == 1 and "has no job 'nope' (jobs: sft)" in res.output


# --- what runs: config, compose, record ------------------------------------------------------


def test_rendered_config_is_valid_for_the_pinned_trl(train_stack, tmp_path):
    path = train_stack({"jobs": {
        "sft": {"method": "sft", "service": "chat", "data": "sft.jsonl", "output": "a",
                "lora": {"r": 16, "target_modules": ["q_proj", "k_proj"]}, "epochs": 2,
                "trl_args": {"warmup_steps": 3}},
        "dpo": {"method": "dpo", "service": "chat", "data": "dpo.jsonl", "output": "b",
                "beta": 0.2, "steps": 5},
    }})  # fmt: skip
    plan = build_plan(load_stack(path))
    sft, dpo = plan.jobs
    cfg = yaml.safe_load(render_config(sft, stack="tr", trl_args={"warmup_steps": 3}))
    assert cfg["model_name_or_path"] == "/base" and cfg["output_dir"] == "/work/out"
    assert cfg["datasets"] == [
        {"path": "json", "data_files": "/data/train.jsonl", "split": "train"}
    ]
    assert cfg["num_train_epochs"] == 2 and "max_steps" not in cfg
    assert cfg["lora_r"] == 16 and cfg["lora_alpha"] == 32 and cfg["use_peft"] is True
    assert cfg["lora_target_modules"] == ["q_proj", "k_proj"] and cfg["warmup_steps"] == 3
    assert cfg["logging_steps"] == 1 and cfg["report_to"] == "none"
    assert "resume_from_checkpoint" not in cfg
    assert sft.total_steps == 4  # 8 examples / batch 4 = 2 steps per epoch, two epochs
    for key in cfg:
        assert tv.key_problem(key, "1.16.0", "sft") is None, key
    d = yaml.safe_load(render_config(dpo, stack="tr", trl_args={}, resume=True))
    assert d["beta"] == 0.2 and d["max_steps"] == 5 and d["resume_from_checkpoint"] is True
    for key in d:
        assert tv.key_problem(key, "1.16.0", "dpo") is None, key


def test_job_compose_pins_gpus_and_mounts(train_stack, tmp_path):
    path = train_stack({"jobs": {"sft": {"method": "sft", "service": "chat", "data": "sft.jsonl",
                                         "output": "a", "gpus": [2, 3]}}})  # fmt: skip
    (job,) = build_plan(load_stack(path)).jobs
    text = render_job_compose("tr", job, "img:1", tmp_path / "run")
    svc = yaml.safe_load(text)["services"]["train-sft"]
    assert svc["entrypoint"] == ["trl", "sft"]
    assert svc["command"] == ["--config", "/run/config.yaml", "--accelerate_config", "multi_gpu",
                              "--num_processes", "2"]  # fmt: skip
    assert svc["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["2", "3"]
    assert svc["network_mode"] == "none" and svc["restart"] == "no"
    targets = {v["target"]: v.get("read_only", False) for v in svc["volumes"]}
    assert targets == {"/base": True, "/work": False, "/run": True, "/data/train.jsonl": True}
    from kit.lint import compose_config_problems, schema_problems

    assert schema_problems(text) == []
    assert compose_config_problems(text) == []


def test_the_record_keeps_jobs(train_stack, tmp_path):
    plan = build_plan(load_stack(train_stack()))
    data = json.loads(json.dumps(record.to_record(plan)))
    back = record.plan_from_record(data)
    assert back.jobs == plan.jobs
    assert back.service("chat").adapters_host_path == plan.service("chat").adapters_host_path


# --- serving helpers -------------------------------------------------------------------------


def test_max_lora_rank_values_follow_the_vllm_version():
    assert serving.rank_for(8, Version.parse("0.11.0")) == 8
    assert serving.rank_for(1, Version.parse("0.11.0")) == 8
    assert serving.rank_for(1, Version.parse("0.13.0")) == 1
    assert serving.rank_for(33, Version.parse("0.32.0")) == 64
    assert serving.rank_for(600, Version.parse("0.32.0")) is None


def test_adapter_lists_on_a_command_line():
    args = ("m", "--enable-lora", "--lora-modules", "a=/adapters/a", "--max-loras", "2")
    added = serving.with_adapter(args, "b")
    assert added == ("m", "--enable-lora", "--lora-modules", "a=/adapters/a", "b=/adapters/b",
                     "--max-loras", "2")  # fmt: skip
    assert serving.with_adapter(added, "b") == added
    assert serving.adapters_in(added) == ["a", "b"]
    assert serving.with_adapter(("m", "--enable-lora"), "c")[-2:] == (
        "--lora-modules",
        "c=/adapters/c",
    )


# --- GPU arbitration --------------------------------------------------------------------------


class _State:
    def __init__(self, status: str) -> None:
        self.status = status


class _Project:
    def __init__(self, states: dict[str, str]) -> None:
        self._states = {k: _State(v) for k, v in states.items()}

    def states(self) -> dict[str, _State]:
        return self._states


def test_busy_services_come_from_the_record_and_the_engine(train_stack):
    plan = build_plan(load_stack(train_stack()))
    project = _Project({"chat": "running", "embed": "exited"})
    busy = busy_services(plan, project, [0, 1])  # type: ignore[arg-type]
    assert [b.service.name for b in busy] == ["chat"]
    assert busy_services(plan, project, [2]) == []  # type: ignore[arg-type]
    err = refuse("sft", [0, 1], busy, "tr")
    assert "job 'sft' needs GPU 0,1, used by running services of 'tr': chat (GPU 0)" in str(err)
    assert "--preempt" in str(err)
    assert isinstance(busy[0], Busy)


# --- live progress and diagnoses ----------------------------------------------------------------

TRAINER_LOG = (
    "Generating train split: 8 examples [00:00, 4329.60 examples/s]\n"
    "  0%|          | 0/3 [00:00<?, ?it/s]"
    " 33%|###       | 1/3 [00:01<00:02,  1.10s/it]"
    "{'loss': '4.073', 'grad_norm': '3.1', 'learning_rate': '0.003', 'num_tokens': '200', 'epoch': '0.5'}\n"
    "{'loss': '3.102', 'grad_norm': '2.1', 'learning_rate': '0.002', 'num_tokens': '400', 'epoch': '1'}\n"
    " 67%|######    | 2/3 [00:02<00:01,  1.10s/it]"
    " 100%|##########| 3/3 [00:03<00:00,  1.10s/it]"
    "{'loss': '2.2', 'grad_norm': '1.9', 'learning_rate': '0.001', 'num_tokens': '600', 'epoch': '1.5'}\n"
    "{'train_runtime': '3.3', 'train_samples_per_second': '3.5', 'train_loss': '3.1', 'epoch': '1.5'}\n"
)


def test_log_parser_reads_steps_loss_and_tokens_per_second():
    now = [0.0]
    seen: list[tuple[int, bool]] = []
    progress = TrainProgress(total=3)
    parser = LogParser(
        progress, clock=lambda: now[0], on_change=lambda p, e: seen.append((p.step, e))
    )
    for i, chunk in enumerate(TRAINER_LOG.encode()[k : k + 37] for k in range(0, 2000, 37)):
        now[0] = i * 0.1
        parser.feed(chunk)
    parser.close()
    assert [e["step"] for e in progress.history] == [1, 2, 3]
    assert [e["loss"] for e in progress.history] == [4.073, 3.102, 2.2]
    assert progress.step == 3 and progress.loss == 2.2 and progress.learning_rate == 0.001
    assert progress.tokens_per_s is not None and progress.tokens_per_s > 0
    assert progress.summary is not None and progress.summary["train_runtime"] == 3.3
    assert progress.eta_s == 0
    assert "step 3/3  loss 2.2000  lr 1.00e-03" in progress.line()
    assert not progress.nan_loss


def test_nan_loss_is_caught_and_resumed_runs_count_on():
    progress = TrainProgress(total=40, step=20)
    parser = LogParser(progress)
    parser.feed("{'loss': 'nan', 'learning_rate': '0.1', 'epoch': '10'}\n")
    assert progress.nan_loss and progress.history[0]["step"] == 21


@pytest.mark.parametrize(
    ("log", "key"),
    [
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB", "oom"),
        ("ValueError: Target modules {'qkv'} not found in the base model.", "modules"),
        ("datasets.exceptions.DatasetGenerationError: An error occurred", "data"),
        ("OSError: /base does not appear to have a file named config.json", "model"),
        ("ValueError: Unknown arguments from config file: ['--foo', '1']", "config"),
    ],
)
def test_training_failures_are_diagnosed(log, key):
    d = diagnose("noise\n" + log + "\nmore")
    assert d.cause is not None and d.cause.key == key
    assert log[:30] in d.describe()


def test_killed_container_is_an_oom_diagnosis():
    assert diagnose("", exit_code=137).cause.key == "oom"  # type: ignore[union-attr]
    assert diagnose("all fine", exit_code=1).cause is None


# --- the TRL key table -------------------------------------------------------------------------


def test_trl_table_knows_the_pinned_release_from_its_real_parser():
    assert tv.TRL_VERSION in tv.versions() and tv.check_version("1.16.0") is None
    assert "not in the kit's table" in (tv.check_version("9.9.9") or "")
    keys = tv.keys("1.16.0", "sft")
    assert {"max_length", "dtype", "datasets", "lora_r", "learning_rate", "max_steps"} <= keys
    assert "beta" in tv.keys("1.16.0", "dpo") and "beta" not in keys
    assert tv.key_problem("torch_dtype", "1.16.0", "sft") == (
        "TRL 1.16.0 no longer reads 'torch_dtype' (gone in 0.29.1): use 'dtype'"
    )
    assert tv.key_problem("torch_dtype", "0.26.2", "sft") is None
    assert "max_prompt_length" in (tv.key_problem("max_prompt_length", "1.16.0", "dpo") or "")
    assert tv.key_problem("learning_rate", "0.19.1", "sft") is None  # TrainingArguments


# --- kit eval's scoring -----------------------------------------------------------------------


def test_metrics_are_as_stated():
    assert score(f"{MARKER} Paris.", MARKER, "contains")
    assert score(f"  {MARKER} Paris.", MARKER, "startswith")
    assert not score(f"Paris. {MARKER}", MARKER, "startswith")
    assert score(" Paris ", "Paris", "exact") and not score("Paris.", "Paris", "exact")


def test_heldout_lines_need_prompt_and_expected(tmp_path):
    ok = write_jsonl(tmp_path / "h.jsonl", [{"prompt": "q", "expected": "x"}])
    assert read_heldout(ok)[0]["expected"] == "x"
    bad = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "q", "expected": "x"}, {"prompt": "q"}])
    with pytest.raises(KitError, match="line 2: held-out lines are"):
        read_heldout(bad)


# --- the runner's file handling ------------------------------------------------------------------


class _Listener:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def message(self, text: str) -> None:
        self.messages.append(text)

    def progress(self, p: TrainProgress, entry: bool) -> None:
        pass


def test_resume_continues_from_the_last_checkpoint_else_starts_clean(train_stack):
    from kit.train.runner import _prepare_work

    (job,) = build_plan(load_stack(train_stack())).jobs
    out = Path(job.work_host_path) / "out"
    for step in (10, 20):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (out / "checkpoint-30").mkdir()  # being written when the job stopped: no state yet
    listener = _Listener()
    assert _prepare_work(job, True, listener) == 20
    assert listener.messages == ["--resume: continuing from checkpoint-20"]
    assert _prepare_work(job, False, listener) == 0 and not out.exists()
    assert _prepare_work(job, True, listener) == 0
    assert listener.messages[-1] == "--resume: no checkpoint yet; starting from the beginning"


def test_the_adapter_is_published_whole_with_its_hash(train_stack):
    from kit.train.results import content_hash
    from kit.train.runner import _publish

    (job,) = build_plan(load_stack(train_stack())).jobs
    out = Path(job.work_host_path) / "out"
    out.mkdir(parents=True)
    with pytest.raises(KitError, match=r"lacks adapter_config\.json, adapter_model\.safetensors"):
        _publish(job)
    (out / "adapter_config.json").write_text('{"r": 8}')
    (out / "adapter_model.safetensors").write_bytes(b"weights")
    (out / "training_args.bin").write_bytes(b"pickle")
    dest, digest = _publish(job)
    assert dest == Path(job.adapter_host_path)
    assert sorted(p.name for p in dest.iterdir()) == ["adapter_config.json",
                                                       "adapter_model.safetensors"]  # fmt: skip
    assert digest == content_hash(dest)
    (out / "adapter_model.safetensors").write_bytes(b"better weights")
    assert _publish(job)[1] != digest  # a second run replaces it
    assert not list(dest.parent.glob(".*.tmp")) and not list(dest.parent.glob(".*.old"))


def test_a_job_without_an_image_is_refused(train_stack, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    path = train_stack()
    data = yaml.safe_load(path.read_text())
    del data["defaults"]["train_image"]
    path.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(cli, ["train", str(path), "sft"])
    assert res.exit_code == 1 and "set defaults.train_image" in res.output


def test_plan_shows_jobs_and_served_adapters(train_stack):
    res = CliRunner().invoke(cli, ["plan", str(train_stack())], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "training jobs (kit train)" in res.output and "tiny-marker" in res.output
    assert "chat: none yet (not trained yet: tiny-marker)" in res.output


def test_interrupted_job_is_removed_and_preempted_services_restored(
    train_stack, tmp_path, monkeypatch
):
    """Ctrl-C (or SIGTERM) while the job trains: its container is removed and the services
    stopped for it are started again, before the error reaches the user."""
    from kit.engine import Project, project_folder
    from kit.train import preempt as pre
    from kit.train import runner
    from kit.train.container import JobContainer

    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    path = train_stack({"jobs": {"sft": {"method": "sft", "service": "chat", "data": "sft.jsonl",
                                         "gpus": [0], "output": "o", "serve": "chat"}}})  # fmt: skip
    plan = build_plan(load_stack(path))
    record.write(project_folder(plan.stack.name), plan)
    calls: list[str] = []
    monkeypatch.setattr(Project, "available", lambda self: None)
    monkeypatch.setattr(pre, "busy_services", lambda p, proj, gpus: [Busy(p.service("chat"), (0,))])
    monkeypatch.setattr(pre, "stop", lambda proj, names: calls.append(f"stop {','.join(names)}"))
    monkeypatch.setattr(pre, "restore", lambda p, proj, names, **kw: calls.append(
        f"restore {','.join(names)}"))  # fmt: skip

    def follow(self):  # type: ignore[no-untyped-def]
        yield b"{'loss': '4.0', 'learning_rate': '0.003', 'epoch': '0.5'}\n"
        raise KeyboardInterrupt

    monkeypatch.setattr(JobContainer, "start", lambda self: calls.append("start job"))
    monkeypatch.setattr(JobContainer, "follow", follow)
    monkeypatch.setattr(JobContainer, "remove", lambda self: calls.append("remove job"))
    with pytest.raises(KitError, match="job 'sft' interrupted: its container was removed; chat"):
        runner.run_train(str(path), "sft", runner.TrainOptions(preempt=True,
                         results_dir=tmp_path / "results"), _Listener())  # fmt: skip
    assert calls == ["stop chat", "start job", "remove job", "restore chat"]
    compose = (project_folder("tr") / "job-sft.yml").read_text()
    assert "train-sft" in compose and '"0"' in compose


def test_busy_gpus_are_refused_without_preempt(train_stack, tmp_path, monkeypatch):
    from kit.engine import Project, project_folder
    from kit.train import preempt as pre
    from kit.train import runner

    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    plan = build_plan(load_stack(train_stack()))
    record.write(project_folder(plan.stack.name), plan)
    monkeypatch.setattr(Project, "available", lambda self: None)
    monkeypatch.setattr(pre, "busy_services", lambda p, proj, gpus: [Busy(p.service("chat"), (2,))])
    with pytest.raises(pre.GpusBusy, match="used by running services of 'tr': chat"):
        runner.run_train(str(train_stack()), "sft", runner.TrainOptions(), _Listener())
    assert not (project_folder("tr") / "job-sft.yml").exists()
