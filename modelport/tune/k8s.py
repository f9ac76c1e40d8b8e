"""``--target-rps``: pod resources and replicas for a rate, as a kustomize Component for ``k8s/``.

One pod is what the tune measured: the winner on the tune's CPUs. Its CPU request and limit are
those CPUs, its memory request the measured peak RSS plus 25% (limit: plus 50%), and the replicas
are enough pods at the HPA's 70% CPU target to carry the rate: ``ceil(rps / (0.7 * per-pod rps))``,
with the per-pod rate from the confirming rounds; the HPA's ``minReplicas`` gets that (at least two,
as ``k8s/base`` keeps for availability). The Component patches the Deployment ``modelport``
(container ``modelport``) and the HorizontalPodAutoscaler ``modelport`` of ``k8s/base``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from modelport.tune.result import TuneResult

__all__ = ["HPA_UTILIZATION", "MIN_REPLICAS", "pod_plan", "write_k8s_patch"]

HPA_UTILIZATION = 0.7  # k8s/base/hpa.yaml: averageUtilization 70
MIN_REPLICAS = 2  # k8s/base/hpa.yaml: two pods at least, for availability (with base/pdb.yaml)


def pod_plan(result: TuneResult) -> dict[str, Any]:
    """Per-pod resources, the per-pod rate they were measured at, and the replicas for the target rate."""
    best, options, c = result.best, result.options, result.confirmation
    assert best is not None and options.target_rps is not None
    if result.confirmed_loss and result.default is not None and c is not None:  # the default is what to deploy
        best, per_pod = result.default, c.default_rps
    else:
        per_pod = c.best_rps if c else (best.max_rps_under_slo or 0.0)
    rss = best.rss_mb or 256.0
    cpus = len(options.cpus)
    return {
        "per_pod_rps": per_pod,
        "replicas": max(1, math.ceil(options.target_rps / (HPA_UTILIZATION * per_pod))) if per_pod > 0 else None,
        "requests": {"cpu": str(cpus), "memory": f"{math.ceil(rss * 1.25)}Mi"},
        "limits": {"cpu": str(cpus), "memory": f"{math.ceil(rss * 1.5)}Mi"},
        "workers": best.candidate.workers,
    }


def write_k8s_patch(result: TuneResult) -> Path:
    """``OUT/k8s/``: kustomization.yaml (a Component) with the Deployment and HPA patches; returns its folder."""
    plan = pod_plan(result)
    folder = result.options.out / "k8s"
    folder.mkdir(parents=True, exist_ok=True)
    container = {
        "name": "modelport",
        "resources": {"requests": plan["requests"], "limits": plan["limits"]},
        "env": [{"name": "MODELPORT_WORKERS", "value": str(plan["workers"])}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "modelport"},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }
    replicas = max(MIN_REPLICAS, plan["replicas"] or MIN_REPLICAS)
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "modelport"},
        "spec": {"minReplicas": replicas, "maxReplicas": max(10, 2 * replicas)},
    }
    (folder / "deployment-patch.yaml").write_text(yaml.safe_dump(deployment, sort_keys=False))
    (folder / "hpa-patch.yaml").write_text(yaml.safe_dump(hpa, sort_keys=False))
    head = (
        f"# modelport tune --target-rps {result.options.target_rps:g}: {plan['per_pod_rps']:.0f} req/s per pod "
        f"(measured on {len(result.options.cpus)} CPU(s)) at {100 * HPA_UTILIZATION:.0f}% -> {plan['replicas']} "
        f"replica(s); minReplicas {replicas} (at least {MIN_REPLICAS}, as k8s/base keeps for availability).\n"
        "# Add to an overlay: components: [PATH/TO/THIS/FOLDER]\n"
    )
    component = {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "patches": [{"path": "deployment-patch.yaml"}, {"path": "hpa-patch.yaml"}],
    }
    (folder / "kustomization.yaml").write_text(head + yaml.safe_dump(component, sort_keys=False))
    return folder
