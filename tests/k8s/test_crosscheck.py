"""The manifests against the code, so neither can drift: the command parses with the real CLI, env vars
are real settings, ports and probe paths are the server's, and the shutdown budget covers the drain."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from modelport.runtimes import runtime_class
from modelport.serving.dataplane import DataPlane
from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from tests.k8s import dockerfiles
from tests.k8s.conftest import Variant, image
from tests.k8s.manifests import (
    all_of,
    container_command,
    container_env,
    effective_settings,
    named_ports,
    one,
    pod_spec,
    resolve_port,
    server_container,
    unknown_settings,
)
from tests.k8s.tools import ROOT, Doc
from tests.serving import fakes

# After the drain the server still stops gRPC (grace 5 s) and unloads its models; the --workers
# supervisor allows the same drain + 10 s before it kills a worker.
SHUTDOWN_SLACK_S = 10
# KServe does not set the pod's grace period: Kubernetes' default applies.
DEFAULT_GRACE_S = 30
# KServe model format names -> the artifact formats modelport serves under them
KSERVE_FORMATS = {
    "modelport": ("onnx", "ort", "torchscript", "pt2", "savedmodel", "tflite"),
    "onnx": ("onnx", "ort"),
    "pytorch": ("torchscript", "pt2"),
    "tensorflow": ("savedmodel",),
    "tflite": ("tflite",),
}


def _image_env(dockerfile: str) -> dict[str, str]:
    return dockerfiles.env(dockerfiles.instructions(ROOT / dockerfile))


def _entrypoint(variant: Variant) -> list[str]:
    (entry,) = [i for i in dockerfiles.final_stage(image(variant)) if i.keyword == "ENTRYPOINT"]
    return dockerfiles.exec_form(entry.value)


def _settings(docs: list[Doc], variant: Variant) -> ServerSettings:
    container = server_container(docs)
    env = container_env(container, docs, _image_env(variant.dockerfile))
    return effective_settings(container_command(container, _entrypoint(variant)), env)


def _cpus(quantity: str | int) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_env_names_are_settings(docs: list[Doc], variant: Variant) -> None:
    env = container_env(server_container(docs), docs, _image_env(variant.dockerfile))
    assert unknown_settings(env) == []
    server_config = {source["configMapRef"]["name"] for source in server_container(docs)["envFrom"]}
    (config,) = [c for c in all_of(docs, "ConfigMap") if c["metadata"]["name"] in server_config]
    assert [name for name in config["data"] if not name.startswith("MODELPORT_")] == []


def test_command_parses_with_the_cli(docs: list[Doc], variant: Variant) -> None:
    settings = _settings(docs, variant)  # parse errors and invalid env values raise here
    mounts = {m["name"]: m["mountPath"] for m in server_container(docs)["volumeMounts"]}
    if "models-from-s3" in variant.components:
        assert str(settings.repository).startswith("s3://") and settings.cache_dir == mounts["cache"]
        assert settings.poll_interval_s > 0, "new versions in the bucket are picked up"
    else:
        assert settings.repository == Path(mounts["models"])
    assert settings.host == "0.0.0.0"  # a pod is reached on its own IP, not on loopback


def test_ports_are_the_servers(docs: list[Doc], variant: Variant) -> None:
    settings = _settings(docs, variant)
    container = server_container(docs)
    assert named_ports(container) == {"http": settings.http_port, "grpc": settings.grpc_port}
    service = {p["name"]: p for p in one(docs, "Service")["spec"]["ports"]}
    assert resolve_port(service["http"]["targetPort"], container) == settings.http_port
    assert resolve_port(service["grpc"]["targetPort"], container) == settings.grpc_port
    assert service["grpc"]["appProtocol"] == "grpc"
    assert resolve_port(service["metrics"]["targetPort"], container) == settings.http_port  # /metrics is on HTTP
    allowed = {
        resolve_port(p["port"], container)
        for rule in one(docs, "NetworkPolicy")["spec"]["ingress"]
        for p in rule["ports"]
    }
    assert allowed == {settings.http_port, settings.grpc_port}
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == settings.http_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert resolve_port(container[probe]["httpGet"]["port"], container) == settings.http_port


def test_termination_grace_covers_prestop_and_drain(docs: list[Doc], variant: Variant) -> None:
    settings = _settings(docs, variant)
    pre_stop = server_container(docs)["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod_spec(docs)["terminationGracePeriodSeconds"]
    assert settings.drain_timeout_s > 0
    assert grace == pre_stop + math.ceil(settings.drain_timeout_s) + SHUTDOWN_SLACK_S


def test_threads_fit_the_cpu_limit(docs: list[Doc], variant: Variant) -> None:
    """intra_op_threads 0 sizes each runtime's pool from the CPU limit (modelport/cpus.py), in every worker and
    instance: set, so that workers x instances x threads fits the limit."""
    settings = _settings(docs, variant)
    cpus = _cpus(server_container(docs)["resources"]["limits"]["cpu"])
    assert settings.intra_op_threads >= 1
    assert settings.workers * settings.instances * settings.intra_op_threads <= cpus


def test_device_matches_the_overlay(docs: list[Doc], variant: Variant) -> None:
    settings = _settings(docs, variant)
    if variant.gpu:
        assert settings.device.startswith("cuda")
        assert settings.providers[0] == "CUDAExecutionProvider"
    else:
        assert settings.device == "cpu"
        assert not any("CUDA" in p or "Tensorrt" in p for p in settings.providers)


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[DataPlane]:
    repo = tmp_path / "repo"
    fakes.write_model(repo, "echo")
    data_plane = build(ServerSettings(repository=repo))
    yield data_plane
    await data_plane.close()


async def test_probes_mean_what_the_kubelet_expects(docs: list[Doc], plane: DataPlane) -> None:
    """Startup and readiness fail while models load and while draining; liveness never fails on
    either (a failing liveness probe would restart a pod that is only busy)."""
    container = server_container(docs)
    paths = {
        probe: container[probe]["httpGet"]["path"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    transport = httpx.ASGITransport(app=create_app(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://pod") as http:

        async def codes() -> dict[str, int]:
            return {probe: (await http.get(path)).status_code for probe, path in paths.items()}

        assert await codes() == {"startupProbe": 503, "readinessProbe": 503, "livenessProbe": 200}
        await plane.start()
        assert await codes() == {"startupProbe": 200, "readinessProbe": 200, "livenessProbe": 200}
        await plane.drain()
        assert (await codes())["readinessProbe"] == 503
        assert (await codes())["livenessProbe"] == 200


async def test_scraped_metrics_exist(docs: list[Doc], plane: DataPlane) -> None:
    """The scrape paths are served and the HPA's custom metrics are names the server exports."""
    await plane.start()
    transport = httpx.ASGITransport(app=create_app(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://pod") as http:
        annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        paths = {annotations["prometheus.io/path"]}
        paths |= {e["path"] for m in all_of(docs, "ServiceMonitor") for e in m["spec"]["endpoints"]}
        pages = {path: await http.get(path) for path in paths}
    assert {path: page.status_code for path, page in pages.items()} == dict.fromkeys(paths, 200)
    exported = {line.split("{")[0].split(" ")[0] for line in pages["/metrics"].text.splitlines() if line[:1] != "#"}
    wanted = {
        m["pods"]["metric"]["name"]
        for m in one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
        if m["type"] == "Pods"
    }
    assert wanted <= exported
    assert "modelport_queue_depth" in exported  # the documented custom-metric variant's metric


def _runtime_image_env(runtime: Doc) -> dict[str, str]:
    (container,) = runtime["spec"]["containers"]
    return _image_env("Dockerfile.gpu" if container["image"].endswith("-gpu") else "Dockerfile")


def test_kserve_runtimes_run_the_server(kserve_docs: list[Doc]) -> None:
    for runtime in all_of(kserve_docs, "ClusterServingRuntime"):
        (container,) = runtime["spec"]["containers"]
        env = container_env(container, [], _runtime_image_env(runtime))
        assert unknown_settings(env) == []
        settings = effective_settings(container_command(container), env)
        assert settings.repository == Path("/mnt/models")  # where KServe's storage initializer puts storageUri
        assert settings.host == "0.0.0.0"
        assert settings.http_port == 8080 == container["readinessProbe"]["httpGet"]["port"]  # KServe's default port
        assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert int(runtime["spec"]["annotations"]["prometheus.kserve.io/port"]) == settings.http_port
        assert settings.grpc_port > 0 and "grpc-v2" in runtime["spec"]["protocolVersions"]
        assert settings.drain_timeout_s + SHUTDOWN_SLACK_S <= DEFAULT_GRACE_S
        assert settings.device.startswith("cuda") == ("nvidia.com/gpu" in container["resources"]["limits"])


def test_kserve_formats_are_served(kserve_docs: list[Doc]) -> None:
    for runtime in all_of(kserve_docs, "ClusterServingRuntime"):
        for model_format in runtime["spec"]["supportedModelFormats"]:
            assert model_format["name"] in KSERVE_FORMATS, f"modelport serves no {model_format['name']!r} models"
            for artifact_format in KSERVE_FORMATS[model_format["name"]]:
                assert runtime_class(artifact_format) is not None


def test_inference_service_uses_the_runtime(kserve_docs: list[Doc]) -> None:
    runtimes = {r["metadata"]["name"]: r["spec"] for r in all_of(kserve_docs, "ClusterServingRuntime")}
    model = one(kserve_docs, "InferenceService")["spec"]["predictor"]["model"]
    runtime = runtimes[model["runtime"]]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["protocolVersions"]
    assert model["storageUri"]
