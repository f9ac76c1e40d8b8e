"""One small adapter per tool ``make k8s-check`` uses: kubectl kustomize, hadolint, kubernetes-validate
(strict, pinned Kubernetes versions) and JSON Schemas for the custom resources it does not know."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

# The oldest Kubernetes the manifests support (native preStop `sleep` is on by default since 1.30)
# and the newest the pinned kubernetes-validate ships schemas for.
K8S_VERSIONS = ("1.33.0", "1.37.0")

Doc = dict[str, Any]


def tool(name: str) -> str:
    """A command-line tool from this interpreter's environment (the dev extra installs them), else PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found beside {sys.executable} or on PATH: run `make install`")
    return found


def _run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def kustomize(directory: Path) -> list[Doc]:
    """Render a kustomization with ``kubectl kustomize``; a failure raises with kubectl's message."""
    result = _run([tool("kubectl"), "kustomize", str(directory)])
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kustomize_with(resource: Path, components: tuple[Path, ...], workdir: Path) -> list[Doc]:
    """Render ``resource`` with ``components`` added, the way a user's own overlay would."""
    relative = [os.path.relpath(path, workdir) for path in (resource, *components)]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": relative[:1],
        "components": relative[1:],
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return kustomize(workdir)


def hadolint(dockerfile: Path) -> list[Doc]:
    """hadolint's findings for a Dockerfile (JSON records with code, level, line, message)."""
    result = _run([tool("hadolint"), "--no-color", "--format", "json", str(dockerfile)], cwd=ROOT)
    if result.returncode not in (0, 1) or not result.stdout.strip():
        raise AssertionError(f"hadolint {dockerfile} failed ({result.returncode}): {result.stderr.strip()}")
    findings: list[Doc] = json.loads(result.stdout)
    return findings


def k8s_errors(doc: Doc, version: str) -> list[str]:
    """kubernetes-validate in strict mode (unknown fields are errors) against one Kubernetes version."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top level)"
        return [f"{_name(doc)} at {where}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{_name(doc)}: {exc.message}"]
    return []


def custom_schema(doc: Doc) -> Path:
    """The JSON Schema file for a custom resource, named ``<kind>-<api group>-<version>.json``."""
    return SCHEMAS / f"{doc['kind'].lower()}-{doc['apiVersion'].replace('/', '-')}.json"


def custom_errors(doc: Doc, version: str) -> list[str]:
    """Every error of a custom resource against its schema; its core types (Container, ObjectMeta,
    Toleration...) are checked with the strict Kubernetes schema of ``version``."""
    path = custom_schema(doc)
    if not path.exists():
        return [f"{_name(doc)}: no schema for {doc['apiVersion']} {doc['kind']} (expected {path.name})"]
    validator = jsonschema.Draft202012Validator(json.loads(path.read_text()), registry=_k8s_registry(version))
    return [
        f"{_name(doc)} at {'/'.join(str(p) for p in error.absolute_path) or '(top level)'}: {error.message}"
        for error in validator.iter_errors(doc)
    ]


def is_custom(doc: Doc) -> bool:
    """Resources whose API group kubernetes-validate has no schema for (CRDs)."""
    return doc["apiVersion"].split("/")[0].endswith((".coreos.com", ".kserve.io"))


def validate(doc: Doc, version: str) -> list[str]:
    """Errors of one rendered document: Kubernetes kinds strictly, custom resources by their schema."""
    return custom_errors(doc, version) if is_custom(doc) else k8s_errors(doc, version)


@functools.cache
def _k8s_registry(version: str) -> Registry[Any]:
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
    definitions = json.loads((folder / "_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry()


def _name(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
