"""Dockerfile and Dockerfile.gpu: hadolint-clean, multi-stage, non-root, and consistent with the code
(entrypoint, settings, ports, extras, health check). No Docker engine here: nothing is built."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from modelport.serving.settings import ServerSettings
from tests.k8s import dockerfiles, tools
from tests.k8s.dockerfiles import Instruction, exec_form, final_stage
from tests.k8s.manifests import effective_settings, pod_spec, unknown_settings
from tests.k8s.tools import K8S, ROOT
from tests.serving import certificates, fakes
from tests.serving.processes import free_port, serving

DOCKERFILES = ("Dockerfile", "Dockerfile.gpu")
MODELS = "/models"  # the documented mount path of the model repository
# the extra that brings each artifact format's framework
FRAMEWORK_EXTRAS = {
    "onnx": "cpu|gpu",
    "ort": "cpu|gpu",
    "torchscript": "torch",
    "pt2": "torch",
    "savedmodel": "tf",
    "tflite": "tflite",
}


def _read(name: str) -> list[Instruction]:
    return dockerfiles.instructions(ROOT / name)


def _last(items: list[Instruction], keyword: str) -> Instruction:
    return [i for i in final_stage(items) if i.keyword == keyword][-1]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_clean(name: str) -> None:
    assert tools.hadolint(ROOT / name) == []


def test_hadolint_finds_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    lines = ["FROM python:latest", "RUN apt-get update && apt-get install curl", "RUN pip install numpy", "CMD serve"]
    bad.write_text("\n".join(lines) + "\n")
    codes = {finding["code"] for finding in tools.hadolint(bad)}
    assert {"DL3007", "DL3008", "DL3013", "DL3025"} <= codes


@pytest.mark.parametrize("name", DOCKERFILES)
def test_entrypoint_is_modelport_serve(name: str) -> None:
    items = _read(name)
    command = exec_form(_last(items, "ENTRYPOINT").value) + exec_form(_last(items, "CMD").value)
    settings = effective_settings(command, dockerfiles.env(items))
    assert settings.repository == Path(MODELS)
    assert settings.host == "0.0.0.0"
    assert unknown_settings(dockerfiles.env(items)) == []
    expose = {int(port) for port in _last(items, "EXPOSE").value.split()}
    assert expose == {settings.http_port, settings.grpc_port}
    assert {"http": settings.http_port, "grpc": settings.grpc_port} == {
        p["name"]: p["containerPort"]
        for p in pod_spec(tools.kustomize(K8S / "overlays" / "cpu"))["containers"][0]["ports"]
    }


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runs_as_the_manifests_non_root_user(name: str) -> None:
    user, _, group = _last(_read(name), "USER").value.partition(":")
    assert user.isdigit() and int(user) > 0 and group.isdigit()  # numeric: runAsNonRoot can verify it
    security = pod_spec(tools.kustomize(K8S / "overlays" / "cpu"))["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (int(user), int(group))


@pytest.mark.parametrize("name", DOCKERFILES)
def test_multi_stage_with_a_lean_final_stage(name: str) -> None:
    items = _read(name)
    froms = [i for i in items if i.keyword == "FROM"]
    assert len(froms) >= 2
    runs = [i.value for i in final_stage(items) if i.keyword == "RUN"]
    assert not [r for r in runs if re.search(r"\b(pip|apt-get|apt|uv|gcc|make)\b", r)]  # nothing is built here
    copies = [i.value for i in final_stage(items) if i.keyword == "COPY"]
    assert copies and all(c.startswith("--from=build ") for c in copies)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_images_are_pinned(name: str) -> None:
    items = _read(name)
    defaults = dockerfiles.args(items)
    aliases = {i.value.split()[-1] for i in items if i.keyword == "FROM" and " AS " in i.value.upper()}
    for item in items:
        if item.keyword != "FROM":
            continue
        base = dockerfiles.substitute(item.value.split()[0], defaults)
        if base in aliases:
            continue
        assert "@sha256:" in base or re.search(r":[\w.-]*\d[\w.-]*$", base), f"{name}: {base} is not pinned"
        assert not base.endswith(":latest")


@pytest.mark.parametrize(("name", "runtime", "other"), [("Dockerfile", "cpu", "gpu"), ("Dockerfile.gpu", "gpu", "cpu")])
def test_extras_are_real_and_exclusive(name: str, runtime: str, other: str) -> None:
    extras = set(dockerfiles.args(_read(name))["EXTRAS"].split(","))
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras <= set(declared)
    assert runtime in extras and other not in extras and "all" not in extras  # onnxruntime vs onnxruntime-gpu
    assert ("tf-cuda" in extras) == (runtime == "gpu")  # TensorFlow's CUDA libraries: GPU image only
    assert "s3" in extras, "k8s/components/models-from-s3 serves s3:// repositories with this image"
    assert {"gcs", "azure"} <= extras, "the README's gs:// and az:// repositories need gcsfs and adlfs in the image"
    for artifact_format, needs in FRAMEWORK_EXTRAS.items():
        assert set(needs.split("|")) & extras, f"{name} cannot serve {artifact_format}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_build_context_holds_what_the_build_copies(name: str) -> None:
    ignore = ROOT / ".dockerignore"
    sources = [i.value.split()[:-1] for i in _read(name) if i.keyword == "COPY" and not i.value.startswith("--from")]
    for path in [p for group in sources for p in group]:
        assert not dockerfiles.ignored(path, ignore), f"{path} is excluded by .dockerignore"
        assert (ROOT / path).exists()
    assert not dockerfiles.ignored("modelport/serving/rest.py", ignore)
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "demo-out/repo", "modelport/__pycache__/x.pyc"):
        assert dockerfiles.ignored(path, ignore), path


@pytest.mark.parametrize("name", DOCKERFILES)
def test_healthcheck_probes_a_real_server(name: str, tmp_path: Path) -> None:
    """The HEALTHCHECK command itself, run against a live server (exit 0) and a closed port (exit 1)."""
    command = dockerfiles.healthcheck(_read(name))
    assert command[0] == "python" and "/v2/health/live" in command[-1]
    assert f"'{ServerSettings.model_fields['http_port'].default}'" in command[-1]  # the default port

    def check(port: int) -> int:
        env = {**os.environ, "MODELPORT_HTTP_PORT": str(port)}
        return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30).returncode

    fakes.write_model(tmp_path / "repo", "echo")
    with serving(tmp_path / "repo") as server:
        assert check(int(server.url.rsplit(":", 1)[1])) == 0
    assert check(free_port()) != 0
    # a server given its certificate through MODELPORT_TLS_*: the check spoke http to it and failed
    ca = certificates.authority(tmp_path, "ca")
    pair = certificates.issued(tmp_path, ca, "server", server=True)
    tls = {"MODELPORT_TLS_CERTFILE": str(pair.cert), "MODELPORT_TLS_KEYFILE": str(pair.key)}
    with serving(tmp_path / "repo", env=tls, tls_ca=ca.cert) as server:
        port = server.url.rsplit(":", 1)[1]
        env = {**os.environ, "MODELPORT_HTTP_PORT": port, **tls}
        done = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
