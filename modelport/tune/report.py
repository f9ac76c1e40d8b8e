"""What a tune leaves: the table, tune.json, tune.html, the winner's config.yaml and the Kubernetes patch."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from modelport.serving.settings import CONFIG_FILE
from modelport.tune.k8s import write_k8s_patch
from modelport.tune.measure import base_config
from modelport.tune.options import TuneOptions
from modelport.tune.result import TUNE_FILE, Measurement, TuneResult
from modelport.tune.table import render_table, verdict

__all__ = ["apply_config", "config_yaml", "write_outputs", "write_partial"]


def _document(options: TuneOptions, measurements: list[Measurement]) -> dict[str, Any]:
    return {
        "family": options.family,
        "repository": str(options.repository),
        "slos": [slo.text for slo in options.parsed_slos],
        "objective": options.objective,
        "search": options.search,
        "protocol": options.protocol,
        "data": options.data,
        "cpus": list(options.cpus),
        "levels": list(options.levels),
        "level_s": options.level_s,
        "warmup_s": options.warmup_s,
        "candidates": [m.to_json() for m in measurements],
    }


def write_partial(options: TuneOptions, measurements: list[Measurement]) -> None:
    """tune.json as it stands after each candidate (``--resume`` continues from it)."""
    _write_json(options.out / TUNE_FILE, {**_document(options, measurements), "best": None, "default": None})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2, default=str) + "\n")
    partial.replace(path)


def write_outputs(result: TuneResult, say: Callable[[str], None]) -> None:
    """tune.json, tune.html, the table, the winner's YAML (applied or printed) and the k8s patch."""
    from modelport.tune.html import write_html

    o = result.options
    data = _document(o, list(result.measurements))
    data.update(_summary(result))
    _write_json(o.out / TUNE_FILE, data)
    write_html(result, o.out / "tune.html")
    say("\n" + render_table(result))
    if result.best is not None:
        text = config_yaml(result)
        default_won = result.default is not None and result.best.candidate == result.default.candidate
        kept = "not applied" if o.apply else "nothing to apply (--apply writes nothing)"
        if default_won:  # nothing to change: the model's own config.yaml stays as the user wrote it
            say(f"\n{kept}: the default configuration won; its YAML is:\n{text}")
        elif result.confirmed_loss:
            say(f"\n{kept}: the winner lost to the default in the confirming rounds; the YAML was:\n{text}")
        elif o.apply:
            say(f"\nwrote {apply_config(result, text)} (the winner's variant {result.best.candidate.variant})")
        else:
            say(f"\nthe winner's {result.best.candidate.variant}/{CONFIG_FILE} (--apply writes it):\n{text}")
        if o.target_rps is not None:
            say(f"kustomize patch for {o.target_rps:g} req/s: {write_k8s_patch(result)}")
    say(f"tune report: {o.out / 'tune.html'} (also {TUNE_FILE})")


def _summary(result: TuneResult) -> dict[str, Any]:
    c = result.confirmation
    return {
        "best": result.best.to_json() if result.best else None,
        "default": result.default.to_json() if result.default else None,
        "confirmation": {
            "rounds": len(c.best),
            "best_rps": c.best_rps,
            "default_rps": c.default_rps,
            "ratio": c.ratio,
            "best_runs": [m.to_json() for m in c.best],
            "default_runs": [m.to_json() for m in c.default],
        }
        if c
        else None,
        "search_s": result.search_s,
        "stopped": result.stopped,
        "excluded": list(result.space.excluded),
        "loadgen_cpus": list(result.loadgen_cpus),
        "verdict": verdict(result),
    }


def config_yaml(result: TuneResult) -> str:
    """The winner's config.yaml: the model's own keys plus the tuned ones, with what measured them."""
    assert result.best is not None
    best, o = result.best, result.options
    variant = result.space.variants[best.candidate.variant]
    config = {**base_config(variant.directory), **best.candidate.config}
    c = result.confirmation
    measured = (
        f"# confirmed: {c.best_rps:.0f} req/s vs {c.default_rps:.0f} req/s for the default\n" if c is not None else ""
    )
    head = (
        f"# written by `modelport tune` on {datetime.now(UTC).date().isoformat()}: the best of "
        f"{len(result.measurements)} candidate(s), {best.max_rps_under_slo:.0f} req/s under {', '.join(o.slos)}\n"
        f"# measured over {o.protocol} on CPUs {o.cpu_list} ({len(o.cpus)} CPU(s)); see {o.out / TUNE_FILE}\n"
        f"{measured}# serve with --workers {best.candidate.workers} (a server flag, not a config.yaml key)\n"
    )
    return head + yaml.safe_dump(config, sort_keys=False)


def apply_config(result: TuneResult, text: str) -> Path:
    """Write the winner's config.yaml beside its variant's versions in the repository."""
    assert result.best is not None
    path = result.space.variants[result.best.candidate.variant].directory / CONFIG_FILE
    path.write_text(text)
    return path
