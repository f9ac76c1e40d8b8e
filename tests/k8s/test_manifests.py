"""k8s/ renders with kubectl kustomize and validates strictly; the pods are hardened and wired together."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tests.k8s import tools
from tests.k8s.conftest import COMPONENTS, VARIANTS, Variant
from tests.k8s.manifests import all_of, one, pod_spec, server_container
from tests.k8s.tools import K8S, K8S_VERSIONS, Doc

CORE_KINDS = {
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
}


def test_every_overlay_and_component_is_checked() -> None:
    overlays = {p.parent.relative_to(K8S).as_posix() for p in K8S.glob("overlays/*/kustomization.yaml")}
    components = {p.parent.name for p in K8S.glob("components/*/kustomization.yaml")}
    assert overlays == {v.overlay for v in VARIANTS}
    assert components == set(COMPONENTS)
    assert {c for v in VARIANTS for c in v.components} == components


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_renders_and_validates_strictly(docs: list[Doc], variant: Variant, version: str) -> None:
    errors = [error for doc in docs for error in tools.validate(doc, version)]
    assert errors == []
    expected = sorted(CORE_KINDS)
    if not {"models-from-image", "models-from-s3"} & set(variant.components):
        expected.append("PersistentVolumeClaim")
    if "servicemonitor" in variant.components:
        expected.append("ServiceMonitor")
    if "observability" in variant.components:
        expected += ["PrometheusRule", "ConfigMap"]  # the alerts and the Grafana dashboard
    assert sorted(doc["kind"] for doc in docs) == sorted(expected)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kserve_resources_validate(kserve_docs: list[Doc], version: str) -> None:
    assert [doc["kind"] for doc in kserve_docs] == ["ClusterServingRuntime"] * 2 + ["InferenceService"]
    assert [error for doc in kserve_docs for error in tools.validate(doc, version)] == []


def test_validation_can_fail(kserve_docs: list[Doc], tmp_path: Path) -> None:
    """The checks reject what a cluster would: unknown fields, fields newer than the version, unknown kinds."""
    deployment = copy.deepcopy(one(tools.kustomize(K8S / "overlays" / "cpu"), "Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert tools.k8s_errors(deployment, "1.28.0") != []  # preStop `sleep` did not exist yet
    container["livenesProbe"] = container.pop("livenessProbe")
    assert "'livenesProbe' was unexpected" in tools.k8s_errors(deployment, K8S_VERSIONS[0])[0]

    runtime = copy.deepcopy(kserve_docs[0])
    runtime["spec"]["protocolVersions"].append("v3")
    runtime["spec"]["containers"][0]["imagePullPolicy"] = 7
    runtime["spec"]["supportedModelFormats"][0]["autoselect"] = True
    assert len(tools.custom_errors(runtime, K8S_VERSIONS[0])) == 3
    unknown = {"apiVersion": "example.kserve.io/v1", "kind": "Thing", "metadata": {"name": "x"}}
    assert "no schema" in tools.validate(unknown, K8S_VERSIONS[0])[0]

    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(AssertionError, match="kubectl kustomize"):
        tools.kustomize(tmp_path)


def _security(container: Doc, pod: Doc) -> dict[str, object]:
    """A container's effective security settings (container fields override the pod's)."""
    return {**pod.get("securityContext", {}), **container.get("securityContext", {})}


def test_pods_are_hardened(docs: list[Doc]) -> None:
    pod = pod_spec(docs)
    assert pod["automountServiceAccountToken"] is False
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    for container in [*pod["containers"], *pod.get("initContainers", [])]:
        security = _security(container, pod)
        assert security["runAsNonRoot"] is True, container["name"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
        assert int(security.get("runAsUser", 0)) > 0, container["name"]
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])


def test_writable_paths_are_empty_dirs(docs: list[Doc]) -> None:
    """The root filesystem is read-only: HOME, TMPDIR (and the object-store cache) must be on a mounted emptyDir."""
    pod = pod_spec(docs)
    container = server_container(docs)
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    writable = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs and not m.get("readOnly")}
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    for name in ("HOME", "TMPDIR", *(["MODELPORT_CACHE_DIR"] if "MODELPORT_CACHE_DIR" in env else [])):
        assert any(env[name] == path or env[name].startswith(path + "/") for path in writable), name


def test_models_volume(docs: list[Doc], variant: Variant) -> None:
    if "models-from-s3" in variant.components:
        _models_from_s3(docs)
        return
    pod = pod_spec(docs)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = {m["name"]: m for m in server_container(docs)["volumeMounts"]}["models"]
    assert mount["readOnly"] is True
    if "models-from-image" in variant.components:
        assert "persistentVolumeClaim" not in volumes["models"] and "emptyDir" in volumes["models"]
        (copy_init,) = pod["initContainers"]
        target = {m["name"]: m["mountPath"] for m in copy_init["volumeMounts"]}["models"]
        assert copy_init["command"][-1].rstrip("/") == target
        assert all_of(docs, "PersistentVolumeClaim") == []
    else:
        claim = volumes["models"]["persistentVolumeClaim"]
        assert claim["readOnly"] is True
        assert claim["claimName"] == one(docs, "PersistentVolumeClaim")["metadata"]["name"]


def _models_from_s3(docs: list[Doc]) -> None:
    """No volume for the repository: an emptyDir cache, and the credentials from a Secret by the SDK's names."""
    pod, container = pod_spec(docs), server_container(docs)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "models" not in volumes and "emptyDir" in volumes["cache"]
    assert [m["name"] for m in container["volumeMounts"] if m["name"] in ("models", "cache")] == ["cache"]
    assert all_of(docs, "PersistentVolumeClaim") == []
    env = {e["name"]: e for e in container["env"]}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        assert env[name]["valueFrom"]["secretKeyRef"]["key"] == name and "value" not in env[name]
    assert not any("AWS" in arg for arg in container["args"]), "no credentials on the command line"


def test_resources_select_the_pods(docs: list[Doc]) -> None:
    deployment = one(docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one(docs, "Service")

    def selects(selector: dict[str, str], target: dict[str, str]) -> bool:
        return bool(selector) and all(target.get(k) == v for k, v in selector.items())

    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    assert selects(service["spec"]["selector"], labels)
    assert selects(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    assert selects(one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"], labels)
    for constraint in pod_spec(docs).get("topologySpreadConstraints", []):
        assert selects(constraint["labelSelector"]["matchLabels"], labels)
    target = one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    for monitor in all_of(docs, "ServiceMonitor"):
        assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])


def test_gpu_overlay_asks_for_gpus(docs: list[Doc], variant: Variant) -> None:
    pod = pod_spec(docs)
    limits = server_container(docs)["resources"]["limits"]
    image = server_container(docs)["image"]
    if variant.gpu:
        assert int(limits["nvidia.com/gpu"]) >= 1
        assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in pod["tolerations"])
        assert pod["nodeSelector"]
        assert image.endswith("-gpu")
    else:
        assert "nvidia.com/gpu" not in limits
        assert "tolerations" not in pod and "nodeSelector" not in pod
        assert not image.endswith("-gpu")
    assert image != "modelport"  # the overlay sets a registry path
