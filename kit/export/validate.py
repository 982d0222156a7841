"""Offline validation of the Kubernetes export (no cluster needed).

- manifests: every core object (PersistentVolumeClaim, Service, Deployment) against the
  Kubernetes OpenAPI schemas of a Kubernetes version, strictly (unknown fields fail), with
  ``kubernetes-validate`` (PyPI: it ships the schemas); a LeaderWorkerSet, a custom resource
  those schemas lack, against LWS's own CRD schema (:mod:`kit.export.upstream`, which
  ``kit export`` also applies before writing) and each of its pod templates as a core/v1
  PodTemplate against the Kubernetes schemas;
- production-stack values: against the chart's own ``values.schema.json``
  (:mod:`kit.export.upstream`, closed).

``kubernetes-validate`` is a test dependency (the dev extra); importing this module without it
raises ImportError with what to install.
"""

from __future__ import annotations

from typing import Any

import yaml

from kit.export import upstream

#: the Kubernetes versions the manifests are checked against (oldest supported, newest shipped)
K8S_VERSIONS = ("1.29.0", "1.37.0")


def values_problems(text: str) -> list[str]:
    return upstream.values_problems(yaml.safe_load(text))


def manifest_problems(text: str, versions: tuple[str, ...] = K8S_VERSIONS) -> list[str]:
    try:
        import kubernetes_validate
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ImportError("pip install kubernetes-validate (the kit's dev extra)") from exc

    def k8s(obj: dict[str, Any], where: str) -> list[str]:
        out = []
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                path = ".".join(str(p) for p in err.absolute_path) or "(top level)"
                out.append(f"{where} (Kubernetes {version}): {path}: {err.message}")
            except kubernetes_validate.SchemaNotFoundError:
                out.append(f"{where}: no Kubernetes {version} schema for {obj.get('kind')}")
        return out

    problems: list[str] = []
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    if not docs:
        return ["no Kubernetes objects in the manifests"]
    for doc in docs:
        where = f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        if doc.get("kind") == "LeaderWorkerSet":
            problems += upstream.lws_problems(doc)
            lwt = doc.get("spec", {}).get("leaderWorkerTemplate", {})
            for key in ("leaderTemplate", "workerTemplate"):
                if key in lwt:
                    pod = {"apiVersion": "v1", "kind": "PodTemplate",
                           "metadata": {"name": f"{doc['metadata']['name']}-{key.lower()}"},
                           "template": lwt[key]}  # fmt: skip
                    problems += k8s(pod, f"{where} {key}")
            continue
        problems += k8s(doc, where)
    return problems
