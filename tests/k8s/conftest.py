"""Every deployable combination of k8s/, rendered once per session, and the images' Dockerfiles."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.k8s import dockerfiles, tools
from tests.k8s.tools import K8S, ROOT, Doc

COMPONENTS = ("servicemonitor", "queue-depth-hpa", "models-from-image", "observability", "models-from-s3")
_TOGETHER = COMPONENTS[:4]  # the repository comes from an image or from S3, not both


@dataclass(frozen=True)
class Variant:
    """An overlay, optionally with components, and the Dockerfile its image is built from."""

    name: str
    overlay: str
    components: tuple[str, ...]
    dockerfile: str

    @property
    def gpu(self) -> bool:
        return self.overlay.endswith("gpu")


VARIANTS = (
    Variant("cpu", "overlays/cpu", (), "Dockerfile"),
    Variant("gpu", "overlays/gpu", (), "Dockerfile.gpu"),
    Variant("cpu+components", "overlays/cpu", _TOGETHER, "Dockerfile"),
    Variant("gpu+components", "overlays/gpu", _TOGETHER, "Dockerfile.gpu"),
    Variant("cpu+models-from-s3", "overlays/cpu", ("models-from-s3",), "Dockerfile"),
)

_RENDERED: dict[str, list[Doc]] = {}


def render(variant: Variant, workdir: Path) -> list[Doc]:
    """The variant's manifests as ``kubectl kustomize`` renders them (cached per session)."""
    if variant.name not in _RENDERED:
        overlay = K8S / variant.overlay
        if variant.components:
            components = tuple(K8S / "components" / c for c in variant.components)
            _RENDERED[variant.name] = tools.kustomize_with(overlay, components, workdir / variant.name)
        else:
            _RENDERED[variant.name] = tools.kustomize(overlay)
    return _RENDERED[variant.name]


@pytest.fixture(params=VARIANTS, ids=[v.name for v in VARIANTS])
def variant(request: pytest.FixtureRequest) -> Variant:
    chosen: Variant = request.param
    return chosen


@pytest.fixture
def docs(variant: Variant, tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    return render(variant, tmp_path_factory.getbasetemp() / "kustomize")


@pytest.fixture(scope="session")
def kserve_docs() -> list[Doc]:
    """The ClusterServingRuntimes (rendered, images set) and the example InferenceService."""
    runtimes = tools.kustomize(K8S / "kserve")
    example = yaml.safe_load((K8S / "kserve" / "inferenceservice.yaml").read_text())
    return [*runtimes, example]


def image(variant: Variant) -> list[dockerfiles.Instruction]:
    return dockerfiles.instructions(ROOT / variant.dockerfile)
