"""``kit export k8s STACK --format production-stack|manifests``: the stack for Kubernetes.

The export reads the same validated :class:`~kit.plan.Plan` as ``kit render`` (so every check
and every version-aware flag applies) and lays it out with Jinja templates
(``templates/k8s-*.j2``, layout only):

- :mod:`kit.export.values`: values for vLLM's production-stack Helm chart
  (``servingEngineSpec.modelSpec``, ``routerSpec``);
- :mod:`kit.export.manifests`: plain manifests (PersistentVolumeClaim, Service, Deployment per
  service; a LeaderWorkerSet for a model over several hosts).

:mod:`kit.export.common` holds what both share: names, the model's source on a cluster,
volumes, probes from the plan's startup budget, and what does not map (host GPU ids, ports,
folders). :mod:`kit.export.k8s` renders a format and checks the result against the upstream
schemas (:mod:`kit.export.upstream`: the chart's values.schema.json, LWS's CRD) before it is
written. Validation in tests, the core objects too: :mod:`kit.export.validate`.
"""

from __future__ import annotations

from kit.export.k8s import FORMATS, export

__all__ = ["FORMATS", "export"]
