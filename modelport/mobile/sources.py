"""Find the repository versions a bundle is built from: ``REPO/NAME[/VERSION]`` -> one per variant."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelport.errors import NotFoundError
from modelport.exporters.rejection import failing_outputs, publish_hint, rejected_versions
from modelport.manifest import MANIFEST_FILE, ModelManifest, read_manifest
from modelport.mobile.options import BUNDLE_VARIANTS, BundleOptions

__all__ = ["VariantSource", "find_sources"]


@dataclass(frozen=True)
class VariantSource:
    """One bundle variant: its name and the published repository version it comes from."""

    name: str
    directory: Path
    manifest: ModelManifest


def find_sources(options: BundleOptions) -> tuple[str, list[VariantSource]]:
    """The model family and the version directories of every requested (or available) variant."""
    repository, family, version = _parse_target(options.target)
    published = _family_versions(repository, family)
    rejected = _family_rejected(repository, family)
    if not published:
        raise NotFoundError(_nothing_published(repository, family, rejected))
    version = version or max(v for _, v in published)
    wanted = list(options.variants) or [b for b, r in BUNDLE_VARIANTS.items() if (r, version) in published]
    if options.ort:
        wanted.append("ort")
    sources = []
    for name in wanted:
        repo_variant = BUNDLE_VARIANTS.get(name, name)
        entry = published.get((repo_variant, version))
        if entry is None:
            raise NotFoundError(_missing(repository, family, name, version, published, rejected))
        sources.append(VariantSource(name, entry.parent, read_manifest(entry.parent)))
    if not sources:
        raise NotFoundError(f"{family} version {version} has no TFLite variant in {repository}")
    return family, sources


def _parse_target(target: Path) -> tuple[Path, str, int | None]:
    """``REPO/NAME``, ``REPO/NAME/VERSION`` (NAME: a family or one of its model names) or a version dir."""
    if (target / MANIFEST_FILE).is_file():
        manifest = read_manifest(target)
        return target.parents[1], manifest.family, manifest.version
    if target.is_dir() and any((p / MANIFEST_FILE).is_file() for p in target.iterdir() if p.is_dir()):
        manifest = read_manifest(next(p for p in sorted(target.iterdir()) if (p / MANIFEST_FILE).is_file()))
        return target.parent, manifest.family, None
    if target.name.isdigit() and not target.parent.is_dir():
        return target.parents[1], target.parent.name, int(target.name)
    if not target.parent.is_dir():
        raise NotFoundError(f"{target.parent} is not a model repository directory")
    return target.parent, target.name, None


def _family_versions(repository: Path, family: str) -> dict[tuple[str, int], Path]:
    """(repository variant, version) -> manifest path, for the family's tflite and ort versions."""
    found = {}
    for manifest_path in sorted(repository.glob(f"*/*/{MANIFEST_FILE}")):
        if manifest_path.parts[-3].startswith(".") or not manifest_path.parent.name.isdigit():
            continue
        manifest = read_manifest(manifest_path.parent)
        if manifest.family == family and manifest.format in ("tflite", "ort"):
            found[(manifest.variant, manifest.version)] = manifest_path
    return found


def _family_rejected(repository: Path, family: str) -> dict[tuple[str, int], tuple[Path, ModelManifest]]:
    """(repository variant, version) -> the rejected version directory and manifest, for the family's tflite/ort."""
    return {
        (m.variant, m.version): (directory, m)
        for directory, m in rejected_versions(repository)
        if m.family == family and m.format in ("tflite", "ort")
    }


def _nothing_published(
    repository: Path, family: str, rejected: dict[tuple[str, int], tuple[Path, ModelManifest]]
) -> str:
    text = f"{repository} holds no TFLite model of {family!r} (looked for {family}-tflite*/<version>/)"
    if rejected:
        directory, manifest = rejected[max(rejected, key=lambda key: key[1])]
        return f"{text}; {_rejection(directory, manifest)}"
    return (
        f"{text}; export one first: modelport export SOURCE --format tflite --repository {repository} --name {family}"
    )


def _rejection(directory: Path, manifest: ModelManifest) -> str:
    """Why an export of this variant was rejected, where it is kept and how to publish it."""
    parity = manifest.parity
    reason = failing_outputs(parity) if parity is not None else "no parity record"
    hint = publish_hint(parity, directory) if parity is not None else f"kept in {directory}, not served"
    return f"{manifest.name} version {manifest.version} was rejected by its parity gate: {reason}; {hint}"


def _missing(
    repository: Path,
    family: str,
    name: str,
    version: int,
    published: dict[tuple[str, int], Path],
    rejected: dict[tuple[str, int], tuple[Path, ModelManifest]],
) -> str:
    have = sorted(b for b, r in BUNDLE_VARIANTS.items() if (r, version) in published)
    kept = rejected.get((BUNDLE_VARIANTS.get(name, name), version))
    if kept is not None:
        return (
            f"{family} version {version} has no {name} variant in {repository} "
            f"(it has: {', '.join(have) or 'none'}): {_rejection(*kept)}"
        )
    quantize = "" if name in ("float32", "ort") else f" --quantize {name}"
    fmt = "ort" if name == "ort" else "tflite"
    hint = f"modelport export SOURCE --format {fmt}{quantize} --repository {repository} --name {family}"
    return (
        f"{family} version {version} has no {name} variant in {repository} "
        f"(it has: {', '.join(have) or 'none'}); to make it: {hint}"
    )
