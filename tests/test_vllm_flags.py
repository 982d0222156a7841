"""kit.vllm_flags: `vllm serve` flags as the pinned vLLM's real parser reads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dockerutil import in_ci
from kit import vllm_flags as vf
from kit.spec import load_stack
from kit.vllm_versions import Version, translate_legacy

REPO = Path(__file__).resolve().parents[1]
V = Version.parse
NEW = V("0.32.0")
REAL_IMAGE = os.environ.get("KIT_REAL_IMAGE", "kit-real-vllm-cpu:0.32.0")


def parse(args: str | list[str], version: str = "0.32.0") -> vf.ParsedArgs:
    return vf.parse_serve_args(args.split() if isinstance(args, str) else args, V(version))


def one(args: str | list[str], version: str = "0.32.0") -> vf.FlagUse:
    p = parse(args, version)
    assert p.ok, p.problems
    assert len(p.items) == 1, p.items
    return p.items[0]


# --- the table ---------------------------------------------------------------------------------


def test_table_versions_and_sizes():
    assert vf.table_versions() == (
        "0.8.5", "0.9.2", "0.10.1.1", "0.11.0", "0.13.0", "0.16.0", "0.20.0", "0.32.0"
    )  # fmt: skip
    sizes = [len(vf.flags_in(V(r))) for r in vf.table_versions()]
    assert sizes == sorted(sizes) and sizes[0] > 100 and sizes[-1] > 300


def test_rows_between_and_after_table_versions():
    assert vf.table_row(V("0.12.0")) == "0.11.0"
    assert vf.table_row(V("0.10.1")) == "0.10.1.1"
    assert vf.table_row(V("0.33.0")) == "0.32.0"
    assert vf.table_row(V("0.8.0")) == "0.8.5"
    assert not parse("--enforce-eager", "0.12.0").exact_row
    assert parse("--enforce-eager", "0.11.0").exact_row


def test_takes_value_and_lookup():
    assert vf.takes_value("--max-model-len", NEW)
    assert not vf.takes_value("--enforce-eager", NEW)
    assert vf.takes_value("-tp", NEW) and vf.takes_value("--gpu_memory_utilization", NEW)
    spec = vf.lookup("--no-enable-prefix-caching", NEW)
    assert spec is not None and spec.flag == "--enable-prefix-caching"
    assert spec.negations == ("--no-enable-prefix-caching",)
    with pytest.raises(ValueError, match="no flag --swap-space"):
        vf.takes_value("--swap-space", NEW)


def test_flags_that_changed_between_versions():
    assert vf.lookup("--swap-space", V("0.16.0")) is not None
    assert vf.lookup("--swap-space", V("0.20.0")) is None
    assert vf.lookup("--task", V("0.11.0")) is not None and vf.lookup("--task", V("0.13.0")) is None
    assert vf.lookup("--enable-reasoning", V("0.9.2")) is not None
    assert vf.lookup("--enable-reasoning", V("0.10.1")) is None
    assert (
        vf.lookup("--runner", V("0.9.2")) is None and vf.lookup("--runner", V("0.10.1")) is not None
    )
    # store_true in 0.8.5, BooleanOptionalAction later
    assert vf.lookup("--no-enforce-eager", V("0.8.5")) is None
    assert vf.lookup("--no-enforce-eager", V("0.9.2")) is not None
    # -O: alias of --compilation-config up to 0.11, gone from 0.13 (vLLM rewrites -O3 itself)
    assert vf.lookup("-O", V("0.11.0")).flag == "--compilation-config"  # type: ignore[union-attr]
    assert vf.lookup("-O", NEW) is None
    assert vf.flag_history("--swap-space") == [("0.8.5", "0.16.0")]


# --- spellings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", vf.table_versions())
@pytest.mark.parametrize(
    "args",
    [
        "--gpu_memory_utilization 0.5",
        "--gpu-memory-utilization=0.5",
        "--gpu_memory_utilization=0.5",
        "--gpu-memory-util 0.5",  # argparse's allow_abbrev is on in every version
    ],
)
def test_spellings_resolve_to_one_flag(args, version):
    use = one(args, version)
    assert (use.flag, use.values) == ("--gpu-memory-utilization", ("0.5",))
    assert use.abbreviated == ("util " in args)


@pytest.mark.parametrize("version", vf.table_versions())
def test_short_aliases(version):
    use = one("-tp 2", version)
    assert (use.flag, use.value, use.spelling, use.indices) == (
        "--tensor-parallel-size",
        "2",
        "-tp",
        (0, 1),
    )
    assert one("-tp=2", version).value == "2"
    assert one("-q fp8", version).flag == "--quantization"
    assert one("-qfp8", version).value == "fp8"  # a single-dash option with its value attached


def test_normalize():
    assert vf.normalize("--gpu_memory_utilization=0.5_x") == "--gpu-memory-utilization=0.5_x"
    assert (
        vf.normalize("--compilation_config.cudagraph_mode") == "--compilation-config.cudagraph_mode"
    )
    assert vf.normalize("--a_b.c_d", V("0.8.5")) == "--a-b.c-d"  # 0.8.5: the whole name
    assert vf.normalize("-O3") == "--optimization-level=3"
    assert vf.normalize("-O3", V("0.11.0")) == "-O.level=3"
    assert vf.normalize("-O3", V("0.8.5")) == "-O3"  # argparse: -O with an attached value
    assert vf.normalize("-tp_x") == "-tp_x"  # single-dash tokens are left alone


@pytest.mark.parametrize(
    ("version", "flag", "subkey", "value"),
    [
        ("0.32.0", "--optimization-level", None, "3"),
        ("0.13.0", "--optimization-level", None, "3"),
        ("0.11.0", "--compilation-config", "level", "3"),
        ("0.8.5", "--compilation-config", None, "3"),
    ],
)
def test_dash_o(version, flag, subkey, value):
    for args in ("-O3", "-O 3", "-O=3"):
        use = one(args, version)
        assert (use.flag, use.subkey, use.value) == (flag, subkey, value), args


def test_dotted_json_keys():
    use = one("--compilation_config.cudagraph_mode=FULL")
    assert (use.flag, use.subkey, use.value) == ("--compilation-config", "cudagraph_mode", "FULL")
    use = one("--speculative-config.num_speculative_tokens 3")
    assert (use.subkey, use.value, use.indices) == ("num_speculative_tokens", "3", (0, 1))
    assert (
        "unknown flag --compilation-config.level"
        in parse("--compilation-config.level 3", "0.8.5").problems[0]
    )
    assert "IndexError" in parse("--compilation-config.level").problems[0]
    assert "takes no value" in parse("--enforce-eager.x 1").problems[0]


# --- values ------------------------------------------------------------------------------------


def test_value_and_no_value():
    p = parse("--enforce-eager --max-model-len 4096 --served-model-name a b --hf-token")
    assert p.ok, p.problems
    got = [(u.flag, u.values) for u in p.items]
    assert got == [
        ("--enforce-eager", ()),
        ("--max-model-len", ("4096",)),
        ("--served-model-name", ("a", "b")),  # nargs '+'
        ("--hf-token", ()),  # nargs '?'
    ]
    assert p.get("--max-model-len").value == "4096"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("--max-model-len", "--max-model-len needs a value; it is the last token"),
        ("--max-model-len --enforce-eager", "the next token '--enforce-eager' is read as a flag"),
        ("--served-model-name", "--served-model-name needs at least one value"),
        (
            "--enforce-eager true",
            "bare token 'true' is not the value of any flag (--enforce-eager takes no value)",
        ),
        ("--enforce-eager=true", "--enforce-eager takes no value"),
        ("--dtype float8", "--dtype: invalid choice 'float8'"),
    ],
)
def test_value_problems(args, message):
    p = parse(args)
    assert any(message in m for m in p.problems), p.problems


@pytest.mark.parametrize("version", vf.table_versions())
def test_negative_numbers_are_values(version):
    assert one("--seed -1", version).value == "-1"
    assert one("--seed=-1", version).value == "-1"
    assert one("--gpu-memory-utilization=-0.5", version).value == "-0.5"


def test_negative_decimal_is_a_dotted_key_for_vllm():
    # vLLM 0.9.2+ reads any '-' token with a '.' as a dotted JSON option (here "-0" . "5")
    p = parse("--gpu-memory-utilization -0.5 --enforce-eager")
    assert not p.ok and any("reads it as the option -0" in m for m in p.problems)
    assert one("--gpu-memory-utilization -0.5", "0.8.5").value == "-0.5"
    assert "must be attached" in parse("--max-model-len -5e3").problems[1]


def test_positional_refused():
    p = parse("--enforce-eager stray")
    assert p.problems == (
        "bare token 'stray' is not the value of any flag (--enforce-eager takes no value)",
    )
    assert parse("-1").problems == ("bare token '-1' is not the value of any flag",)
    assert "'--' ends the flags: x would be positional" in parse("-- x").problems


# --- unknown flags -------------------------------------------------------------------------------


def test_unknown_flag_with_suggestion():
    (msg,) = parse("--enable-prefix-cachng").problems
    assert msg.startswith("unknown flag --enable-prefix-cachng for vLLM 0.32.0")
    assert "did you mean --enable-prefix-caching" in msg
    assert "(with 3)" in parse("--no-such-flag 3").problems[0]


def test_ambiguous_prefix():
    (msg,) = parse("--max 5").problems
    assert msg.startswith("ambiguous flag --max: could match --max-")


def test_flag_from_a_later_version_refused_for_an_older_one():
    assert parse("--runner pooling --convert embed", "0.10.1").ok
    (msg,) = parse("--runner pooling", "0.9.2").problems
    assert "unknown flag --runner for vLLM 0.9.2" in msg
    assert "exists from vLLM 0.10.1.1 (absent from 0.9.2)" in msg
    (msg,) = parse("--optimization-level 3", "0.12.0").problems
    assert "nearest older table version" in msg and "exists from vLLM 0.13.0" in msg


@pytest.mark.parametrize(
    ("args", "ok_until", "gone_in"),
    [
        ("--task embed", "0.11.0", "0.13.0"),
        ("--enable-reasoning", "0.9.2", "0.10.1.1"),
        ("--swap-space 4", "0.16.0", "0.20.0"),
        ("--disable-log-requests", "0.16.0", "0.20.0"),
        ("--device cuda", "0.9.2", "0.10.1.1"),
    ],
)
def test_removed_flags_per_version(args, ok_until, gone_in):
    assert parse(args, ok_until).ok
    (msg,) = parse(args, gone_in).problems
    assert f"removed: last in vLLM {ok_until}, absent from {gone_in}" in msg


def test_model_flag():
    assert "refuses --model" in parse("--model /m", "0.11.0").problems[0]
    assert "drop --model" in parse("--model /m").problems[0]


# --- BooleanOptionalAction -----------------------------------------------------------------------


def test_boolean_optional_negations():
    use = one("--no-enable-prefix-caching")
    assert (use.flag, use.negated, use.values) == ("--enable-prefix-caching", True, ())
    assert not one("--enable-prefix-caching").negated
    assert one("--no-enable-prefix-caching", "0.8.5").negated  # a BooleanOptionalAction already
    (msg,) = parse("--no-enforce-eager", "0.8.5").problems  # store_true in 0.8.5
    assert "unknown flag --no-enforce-eager for vLLM 0.8.5" in msg
    assert "exists from vLLM 0.9.2" in msg


# --- the shipped stacks ------------------------------------------------------------------------


@pytest.mark.parametrize("stack", sorted(p.stem for p in (REPO / "stacks").glob("*.yaml")))
def test_shipped_stacks_extra_args_parse(stack):
    st = load_stack(REPO / "stacks" / f"{stack}.yaml")
    v = st.defaults.version
    for name, svc in st.services.items():
        t = translate_legacy(svc.extra_args, svc.kind, v)
        assert not t.errors, (name, t.errors)
        p = vf.parse_serve_args(t.args, v)
        assert p.ok, (name, p.problems)


# --- the table against the real parser -----------------------------------------------------------


@pytest.mark.real
def test_table_matches_the_real_0_32_parser():
    """The committed table for 0.32.0 equals what the real parser in the image says now."""
    if subprocess.run(["docker", "image", "inspect", REAL_IMAGE], capture_output=True).returncode:
        why = f"image {REAL_IMAGE} missing (run `make real-image`)"
        if in_ci():
            pytest.fail(f"the real-engine tier is required in CI: {why}")
        pytest.skip(why)
    done = subprocess.run(
        [sys.executable, str(REPO / "realengine" / "dump_serve_flags.py"), "--image", REAL_IMAGE],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    real = json.loads(done.stdout)
    assert real["vllm"].split("+")[0] == "0.32.0"
    assert real["allow_abbrev"] and not real["negative_number_optionals"]
    got = {
        o["flag"]: vf.FlagSpec(
            flag=o["flag"],
            aliases=tuple(o["aliases"]),
            negations=tuple(o["negations"]),
            nargs=o["nargs"],
            choices=tuple(o["choices"]) if o["choices"] is not None else None,
        )
        for o in real["options"]
    }
    table = vf.flags_in(NEW)
    data = json.loads((REPO / "kit" / "data" / "vllm_serve_flags.json").read_text())
    for flag in data["parsers"]["0.32.0"].get("unstable_choices", []):  # seed-dependent: dropped
        got[flag] = vf.FlagSpec(**{**got[flag].__dict__, "choices": None})
    stale = sorted(set(got) ^ set(table)) + sorted(
        f for f in set(got) & set(table) if got[f] != table[f]
    )
    assert not stale, (
        "kit/data/vllm_serve_flags.json is stale for 0.32.0 (regenerate: see "
        f"realengine/dump_serve_flags.py): {stale[:20]}"
    )
