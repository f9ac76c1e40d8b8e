"""``modelport compare REPO/NAME``: serve every variant of one model, run the same sweep on each, compare.

``modelport compare REPO --families A,B`` does the same for the variants of several families at once
(a framework shoot-out: one server, one load, one table and plot).

The variants' latest versions are staged (hard links, else copies) into a repository of their
own, served by one ``modelport serve`` subprocess, and load-tested one after another with the
same requests. Parity and accuracy come from each variant's manifest, its size from its artifact
(``modelport.sizes``), load time from the server's metrics, latencies and throughput from the load tests.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from modelport.errors import ModelportError, NotFoundError
from modelport.launcher import Launched, LaunchOptions, launched
from modelport.loadtest.compare_report import render_table, write_compare
from modelport.loadtest.compare_result import CompareResult, Variant, VariantResult, request_specs
from modelport.loadtest.options import CompareOptions, LoadTestOptions
from modelport.loadtest.runner import run_loadtest
from modelport.loadtest.server_metrics import scrape
from modelport.loadtest.wire import http_call, reply_json
from modelport.manifest import MANIFEST_FILE, read_manifest

__all__ = ["CompareResult", "Variant", "VariantResult", "find_variants", "run_compare"]


def find_variants(repository: Path, family: str, wanted: tuple[str, ...] = ()) -> list[Variant]:
    """The latest version of every model in ``repository`` exported from ``family`` (optionally only ``wanted``)."""
    if not repository.is_dir():
        raise NotFoundError(f"model repository {repository} is not a directory")
    found, families = [], set()
    for directory in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = sorted(int(v.name) for v in directory.iterdir() if v.name.isdigit() and (v / MANIFEST_FILE).exists())
        if not versions:
            continue
        manifest = read_manifest(directory / str(versions[-1]))
        families.add(manifest.family)
        if manifest.family == family:
            found.append(Variant(directory, versions[-1], manifest))
    if not found:
        raise NotFoundError(f"no model of family {family!r} in {repository} (families there: {sorted(families)})")
    if wanted:
        known = {v.manifest.variant: v for v in found}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise NotFoundError(f"--formats {unknown} not exported for {family!r}; it has {sorted(known)}")
        found = [known[w] for w in wanted]
    return found


def _stage(variants: list[Variant], staging: Path) -> Path:
    """A repository of only these variants' latest versions (hard links where the filesystem allows)."""
    shutil.rmtree(staging, ignore_errors=True)
    for variant in variants:
        target = staging / variant.name
        shutil.copytree(variant.version_dir, target / str(variant.version), copy_function=_link_or_copy)
        config = variant.directory / "config.yaml"
        if config.exists():
            shutil.copy2(config, target / "config.yaml")
    return staging


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def run_compare(options: CompareOptions, say: Any = print) -> CompareResult:
    """Serve, load-test and compare every selected variant; prints the table, writes compare.{json,csv,html}."""
    variants = [v for f in options.families for v in find_variants(options.repository, f, options.variants)]
    options.out.mkdir(parents=True, exist_ok=True)
    staging = _stage(variants, options.out / "repository")
    flags = (*options.serve_args, *(("--tfserving-grpc",) if options.protocol == "tfserving-grpc" else ()))
    result = CompareResult(options)
    say(f"compare: {len(variants)} variant(s) of {options.family!r}: {', '.join(v.name for v in variants)}")
    serve = LaunchOptions(log=options.out / "server.log", timeout_s=600)
    with launched(staging, "--log-level", "warning", *flags, options=serve) as server:
        for variant in variants:
            say(f"\n==> {variant.name} ({variant.manifest.format})")
            result.rows.append(_test_variant(options, server, variant, say))
    shutil.rmtree(staging, ignore_errors=True)
    write_compare(result)
    say("\n" + render_table(result))
    say(f"\ncompare report: {result.html} (also compare.json, compare.csv; one report.html per variant)")
    for line in result.failed_requests():
        say(f"FAILED REQUESTS: {line}")
    return result


def _test_variant(options: CompareOptions, server: Launched, variant: Variant, say: Any) -> VariantResult:
    row = VariantResult(variant, load_seconds=_load_seconds(server, variant.name))
    ready = http_call(f"{server.url}/v2/models/{variant.name}/ready")
    if ready.status != 200:
        row.error = "not ready: " + str((reply_json(ready) or {}).get("reason", ready.text()))
        say(f"  {row.error}")
        return row
    data = str(variant.version_dir / "golden.npz") if options.data == "golden" else options.data
    grpc = options.protocol.endswith("grpc")
    test = LoadTestOptions(
        url=(server.grpc or "") if grpc else server.url,
        model=variant.name,
        protocol=options.protocol,
        levels=options.levels,
        duration_s=options.duration_s,
        batch_size=options.batch_size,
        inputs=request_specs(variant),  # value ranges and the sizes of dims past the batch, as tune sends them
        data=data,
        slos=options.slos,
        metrics_url=server.url + "/metrics",
        out=options.out / variant.name,
        quiet=options.quiet,
        title=f"{variant.name}: {variant.manifest.format} over {options.protocol}",
    )
    try:
        row.report = run_loadtest(test, say)
    except ModelportError as exc:
        row.error = exc.message
        say(f"  failed: {exc.message}")
    return row


def _load_seconds(server: Launched, model: str) -> float | None:
    try:
        values = scrape(server.url + "/metrics").select("modelport_model_load_seconds", model, None)
    except ModelportError:
        return None
    return max(values.values()) if values else None
