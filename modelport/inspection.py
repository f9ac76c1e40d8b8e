"""``modelport inspect``: what a repository, model or version holds, as a table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelport.errors import ModelportError, NotFoundError
from modelport.exporters.rejection import REJECTED_DIR, failing_outputs, publish_hint
from modelport.exporters.report import format_bytes
from modelport.manifest import MANIFEST_FILE, ModelManifest, read_manifest
from modelport.sizes import artifact_bytes

__all__ = ["VersionEntry", "find_versions", "render_inspection"]


@dataclass(frozen=True)
class VersionEntry:
    """One version directory and its manifest (or why it could not be read)."""

    directory: Path
    manifest: ModelManifest | None
    error: str = ""

    @property
    def size_bytes(self) -> int:
        return artifact_bytes(self.directory)

    @property
    def rejected(self) -> bool:
        """Kept in ``REPO/.rejected/`` after failing its parity gate: never served."""
        return self.directory.parent.parent.name == REJECTED_DIR


def find_versions(path: Path) -> list[VersionEntry]:
    """Versions under ``path``: a repository, a model, one version, or a family (``REPO/NAME`` of an export).

    Rejected versions (``REPO/.rejected/``) are listed with the published ones, marked.
    """
    if not path.exists():
        return _family(path)
    if (path / MANIFEST_FILE).exists():
        return [_entry(path)]
    if _is_model_dir(path):
        rejected = path.parent / REJECTED_DIR / path.name
        entries = _model_entries(path) + (_model_entries(rejected) if rejected.is_dir() else [])
    else:
        entries = _repository_entries(path)
    if not entries:
        raise NotFoundError(f"{path} holds no model versions (expected <model>/<version>/{MANIFEST_FILE})")
    return entries


def _repository_entries(repository: Path) -> list[VersionEntry]:
    entries = []
    for root in (repository, repository / REJECTED_DIR):
        models = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
        entries += [e for m in models for e in _model_entries(m)]
    return entries


def _model_entries(model: Path) -> list[VersionEntry]:
    return [_entry(v) for v in sorted(_versions(model), key=lambda p: int(p.name))]


def _family(path: Path) -> list[VersionEntry]:
    """``REPO/NAME`` where NAME is an export's family (``--name``): every model of it, rejected ones too."""
    if not path.parent.is_dir():
        raise NotFoundError(f"{path} does not exist")
    entries = [
        e
        for e in _repository_entries(path.parent)
        if e.manifest is not None and path.name in (e.manifest.family, e.manifest.name)
    ]
    if not entries:
        raise NotFoundError(f"{path} does not exist, and {path.parent} holds no model or family named {path.name!r}")
    return entries


def _is_model_dir(path: Path) -> bool:
    return any((p / MANIFEST_FILE).exists() for p in _versions(path))


def _versions(model: Path) -> list[Path]:
    return [p for p in model.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0]


def _entry(directory: Path) -> VersionEntry:
    try:
        return VersionEntry(directory, read_manifest(directory))
    except ModelportError as exc:
        return VersionEntry(directory, None, exc.message)


def _parity(manifest: ModelManifest) -> str:
    parity = manifest.parity
    if parity is None:
        return "unchecked"
    worst = max((o.max_abs_error for o in parity.outputs), default=0.0)
    agree = [o.top1_agreement for o in parity.outputs if o.top1_agreement is not None]
    text = f"{'pass' if parity.passed else 'FAIL'} max|err|={worst:.1e}"
    if agree:
        text += f" top1={100 * min(agree):.1f}%"
    if parity.accuracy is not None:
        text += f" acc={100 * parity.accuracy:.1f}%"
    return text + (" (allowed)" if parity.allow_mismatch and not parity.passed else "")


def render_inspection(entries: list[VersionEntry]) -> str:
    """A table of the versions; a single version also lists its tensors and per-output parity."""
    head = ("model", "ver", "format", "variant", "size", "inputs", "outputs", "parity")
    rows = [head]
    for e in entries:
        m = e.manifest
        if m is None:
            rows.append(
                (e.directory.parent.name, e.directory.name, "?", "?", format_bytes(e.size_bytes), "-", "-", e.error)
            )
            continue
        rows.append(
            (
                m.name,
                str(m.version),
                m.format,
                m.variant,
                format_bytes(e.size_bytes),
                " ".join(s.describe_range() for s in m.inputs),
                " ".join(s.describe() for s in m.outputs),
                ("REJECTED " if e.rejected else "") + _parity(m),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if len(entries) == 1 and entries[0].manifest is not None:
        lines += _details(entries[0].manifest)
    return "\n".join(lines + _rejections(entries))


def _rejections(entries: list[VersionEntry]) -> list[str]:
    """Why each rejected version was rejected, where it is kept, and how to publish it."""
    lines = []
    for e in entries:
        if e.rejected and e.manifest is not None and e.manifest.parity is not None:
            parity = e.manifest.parity
            lines.append(
                f"{e.manifest.name}/{e.manifest.version} rejected: {failing_outputs(parity)}; "
                f"{publish_hint(parity, e.directory)}"
            )
    return ["", *lines] if lines else []


def _details(m: ModelManifest) -> list[str]:
    lines = [
        "",
        f"source: {m.source.framework} {m.source.kind} {m.source.location}",
        f"platform: {', '.join(f'{k}={v}' for k, v in sorted(m.platform.items()))}",
        f"max_batch_size: {m.max_batch_size}",
    ]
    if m.quantization:
        lines.append(f"quantization: {m.quantization.method}")
    if m.parity:
        p = m.parity
        batches = f"batch sizes {list(p.batch_sizes)}" if p.batch_sizes else "no batch dimension"
        lines.append(f"parity gate: {p.gate} atol={p.atol:g} rtol={p.rtol:g} {batches}")
        lines += [
            f"  {o.name}: max abs {o.max_abs_error:.3e}, max rel {o.max_rel_error:.3e}"
            + (f", top-1 agreement {100 * o.top1_agreement:.1f}%" if o.top1_agreement is not None else "")
            + (" ok" if o.passed else " FAIL")
            for o in p.outputs
        ]
    return lines
