#!/usr/bin/env python3
"""Regenerate the upstream schemas ``kit export k8s`` validates its output against.

Usage: scripts/vendor-k8s-schemas.py VALUES_SCHEMA_JSON LWS_CRD_YAML

- VALUES_SCHEMA_JSON: ``helm/values.schema.json`` of vllm-project/production-stack at a
  release tag; copied byte for byte to ``kit/data/k8s/production-stack-values.schema.json``.
- LWS_CRD_YAML: ``config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml`` of
  kubernetes-sigs/lws at a release tag; its ``v1`` ``openAPIV3Schema`` is written as compact
  JSON (sorted keys) to ``kit/data/k8s/leaderworkerset-v1.schema.json``.

Prints each input's sha256: record them, with the tag and commit, in kit/data/k8s/SOURCE.md.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parent.parent / "kit" / "data" / "k8s"


def main(values_schema: Path, lws_crd: Path) -> None:
    json.loads(values_schema.read_text(encoding="utf-8"))  # refuse a file that is not JSON
    shutil.copyfile(values_schema, OUT / "production-stack-values.schema.json")
    crd = yaml.load(lws_crd.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    (v1,) = (v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = v1["schema"]["openAPIV3Schema"]
    text = json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n"
    (OUT / "leaderworkerset-v1.schema.json").write_text(text, encoding="utf-8")
    for path in (values_schema, lws_crd):
        print(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
