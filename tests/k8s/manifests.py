"""Read rendered manifests the way the kubelet and the container would: the pod's containers,
their environment, and the ``ServerSettings`` a container really starts with."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import Any

from modelport.cli import build_parser
from modelport.serving.settings import ServerSettings
from tests.k8s.tools import Doc

PREFIX = "MODELPORT_"


def all_of(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[Doc], kind: str) -> Doc:
    """The single resource of ``kind`` in a render."""
    (found,) = all_of(docs, kind)
    return found


def pod_spec(docs: list[Doc]) -> Doc:
    spec: Doc = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def server_container(docs: list[Doc]) -> Doc:
    (container,) = [c for c in pod_spec(docs)["containers"] if c["name"] == "modelport"]
    return container


def container_env(container: Doc, docs: list[Doc], image_env: dict[str, str]) -> dict[str, str]:
    """What the process sees: the image's ENV, then ``envFrom`` ConfigMaps, then ``env`` (later wins);
    a Secret's key stands as ``<secret NAME/KEY>``."""
    result = dict(image_env)
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in all_of(docs, "ConfigMap")}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        if name not in configmaps:
            raise AssertionError(f"envFrom names ConfigMap {name!r}, which the render does not contain")
        result.update(configmaps[name])
    for item in container.get("env", []):
        secret = item.get("valueFrom", {}).get("secretKeyRef")
        if "value" not in item and secret is None:
            raise AssertionError(f"env {item['name']}: only literal values and Secret keys can be checked here")
        result[item["name"]] = item["value"] if secret is None else f"<secret {secret['name']}/{secret['key']}>"
    return result


def unknown_settings(env: dict[str, str]) -> list[str]:
    """``MODELPORT_*`` names that are not a ``ServerSettings`` field (exact upper case)."""
    fields = {PREFIX + name.upper() for name in ServerSettings.model_fields}
    return sorted(name for name in env if name.startswith(PREFIX) and name not in fields)


def parse_serve(argv: list[str]) -> argparse.Namespace:
    """The real CLI parser on a container's command + args (without the program name)."""
    try:
        parsed = build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"modelport's CLI rejects {argv}") from exc
    if parsed.command != "serve":
        raise AssertionError(f"{argv} is not `modelport serve`")
    return parsed


def effective_settings(command: list[str], env: dict[str, str]) -> ServerSettings:
    """``ServerSettings`` as ``modelport serve`` builds them from this command line and environment."""
    if not command or os.path.basename(command[0]) != "modelport":
        raise AssertionError(f"the container runs {command}, not the modelport CLI")
    parsed = parse_serve(command[1:])
    given = {k: v for k, v in vars(parsed).items() if k in ServerSettings.model_fields}
    with _environment({k: v for k, v in env.items() if k.startswith(PREFIX)}):
        return ServerSettings(**given)


def container_command(container: Doc, image_entrypoint: list[str] | None = None) -> list[str]:
    """``command`` + ``args`` (``command`` unset: the image's ENTRYPOINT)."""
    command: list[str] = container.get("command") or image_entrypoint or []
    arguments: list[str] = container.get("args", [])
    return [*command, *arguments]


def named_ports(container: Doc) -> dict[str, int]:
    return {p["name"]: int(p["containerPort"]) for p in container.get("ports", []) if "name" in p}


def resolve_port(port: Any, container: Doc) -> int:
    """A probe's or Service's port (a number or a container port name) as a number."""
    if isinstance(port, int):
        return port
    ports = named_ports(container)
    if port not in ports:
        raise AssertionError(f"port {port!r} is not a named port of container {container['name']}: {ports}")
    return ports[port]


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Exactly ``values`` as the MODELPORT_* variables while settings are read."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(PREFIX)}
    for key in saved:
        del os.environ[key]
    os.environ.update(values)
    try:
        yield
    finally:
        for key in values:
            os.environ.pop(key, None)
        os.environ.update(saved)
