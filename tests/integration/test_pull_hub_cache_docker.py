"""Docker tier: a `model_source: hub` model pulled into the host's HF cache is found inside a
container through the rendered compose file's HF_HOME bind mount and environment.

The real Docker engine runs the engine DOUBLE image (it has python3, not vLLM and not
huggingface_hub), with the mount and variables exactly as rendered, and follows the library's
offline lookup there: ``refs/main`` -> ``snapshots/<commit>/`` -> relative links into
``blobs/``. The library itself resolves the same folder in tests/test_pull_hub_cache.py.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid

import pytest
import yaml
from hubdouble import HubDouble
from test_pull import WANTED, model_files, plan_of
from test_pull_hub_cache import REPO, stack

from kit.pull import run
from kit.render import render_compose

# the library's offline resolution of a repo id, step by step (inside the container)
LOOKUP = """
import hashlib, json, os
repo = os.path.join(os.environ["HF_HOME"], "hub", "models--" + "{repo}".replace("/", "--"))
commit = open(os.path.join(repo, "refs", "main")).read()
snap = os.path.join(repo, "snapshots", commit)
print(json.dumps({{
    "offline": os.environ.get("HF_HUB_OFFLINE"),
    "commit": commit,
    "files": {{n: hashlib.sha256(open(os.path.join(snap, n), "rb").read()).hexdigest()
              for n in sorted(os.listdir(snap))}},
}}))
"""


@pytest.fixture
def hub():
    with HubDouble(port=29190, storage_port=29191) as double:  # this port range
        yield double


def test_the_container_finds_the_pulled_files_through_the_rendered_mount(
    hub, tmp_path, docker_engine
):
    files = model_files(1)
    commit = hub.add_repo(REPO, files)
    path = stack(tmp_path, hub, pull=REPO)
    run(plan_of(path))
    svc = yaml.safe_load(render_compose(plan_of(path)))["services"]["chat"]
    args = [
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "--name",
        f"kit-pull-{uuid.uuid4().hex[:8]}",
    ]
    for v in svc["volumes"]:
        if v["type"] == "bind":
            args += ["--mount", f"type=bind,source={v['source']},target={v['target']},readonly"]
    for key, value in svc["environment"].items():
        args += ["-e", f"{key}={value}"]
    args += ["--entrypoint", "python3", docker_engine, "-c", LOOKUP.format(repo=REPO)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["offline"] == "1" and seen["commit"] == commit
    assert seen["files"] == {n: hashlib.sha256(files[n]).hexdigest() for n in sorted(WANTED)}
