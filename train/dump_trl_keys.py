#!/usr/bin/env python3
"""Regenerate kit/data/trl_config_keys.json: which config keys each TRL release reads.

    python3 train/dump_trl_keys.py WHEELS_DIR [--parser]

WHEELS_DIR holds released TRL wheels (`pip download --no-deps trl==X`). For each one the
fields of TRL's own config dataclasses (SFTConfig, DPOConfig, ModelConfig, ScriptArguments,
DatasetMixtureConfig) are read from its source. With --parser (run where the pinned trl,
peft and transformers are installed, e.g. in the training image) the pinned release's keys are
the real `trl sft` / `trl dpo` parsers' destinations instead, TrainingArguments included.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "kit" / "data" / "trl_config_keys.json"
FILES = {
    "sft": ["trl/trainer/sft_config.py"],
    "dpo": ["trl/trainer/dpo_config.py"],
    "common": ["trl/trainer/model_config.py", "trl/scripts/utils.py"],
}
FIELD = re.compile(r"^    (\w+): [^=\n]+= (?:field\(|[^\n]+$)", re.M)


def vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def scan(wheel: Path) -> dict[str, list[str]]:
    z = zipfile.ZipFile(wheel)
    got: dict[str, set[str]] = {}
    for group, paths in FILES.items():
        keys: set[str] = set()
        for p in paths:
            with contextlib.suppress(KeyError):
                keys |= set(FIELD.findall(z.read(p).decode()))
        got[group] = keys
    return {m: sorted(got[m] | got["common"]) for m in ("sft", "dpo")}


def real_parser() -> tuple[str, dict[str, list[str]]]:
    import trl
    from trl.scripts import dpo, sft

    out = {}
    for name, mod in (("sft", sft), ("dpo", dpo)):
        parser = mod.make_parser()
        out[name] = sorted({a.dest for a in parser._actions if a.dest != "help"})
    return trl.__version__, out


def main() -> None:
    wheels = Path(sys.argv[1])
    versions: dict[str, dict[str, list[str]]] = {}
    for w in sorted(wheels.glob("trl-*.whl")):
        versions[w.name.split("-")[1]] = scan(w)
    source = {v: "source" for v in versions}
    if "--parser" in sys.argv:
        v, keys = real_parser()
        versions[v] = keys
        source[v] = "parser"
    order = sorted(versions, key=vkey)
    data = {
        "schema": 1,
        "generated_by": "train/dump_trl_keys.py",
        "versions": order,
        "source": {v: source[v] for v in order},
        "keys": {v: versions[v] for v in order},
    }
    OUT.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT}: {', '.join(f'{v} ({source[v]})' for v in order)}")


if __name__ == "__main__":
    main()
