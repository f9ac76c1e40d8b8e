"""The serving benchmark's report: ratios, the printed tables and the project's targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from serving_config import LABELS

_MEDIAN = ("rps", "p50_ms", "p99_ms")
_SUMMED = ("requests", "seconds", "non_2xx", "socket_errors")


def median_cell(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell from its interleaved rounds: the median req/s, p50 and p99 of the rounds that ran, counts
    summed, every round kept under ``rounds``. A round that could not run makes the cell's ``error``
    (and ``errors`` -1); the medians are then over the other rounds."""
    ran = [run for run in runs if not run.get("error")]
    cell: dict[str, Any] = {"system": runs[0]["system"], "concurrency": runs[0]["concurrency"]}
    for key in _MEDIAN:
        cell[key] = float(statistics.median(run[key] for run in ran)) if ran else (0.0 if key == "rps" else None)
    cell.update({key: sum(run[key] for run in ran) for key in _SUMMED if ran})
    cell["errors"] = sum(run["errors"] for run in ran) if len(ran) == len(runs) else -1
    for key in ("cpu_us", "own_cpu_us"):  # the server's CPU time per request served (tree; its process alone)
        if any(key in run for run in ran):
            cell[key] = float(statistics.median(run[key] for run in ran if key in run))
    if any("peak_pss_mb" in run for run in ran):  # memory: the highest of the rounds, not the median
        cell["peak_pss_mb"] = max(run["peak_pss_mb"] for run in ran if "peak_pss_mb" in run)
    if ran:
        cell["loadgen"] = ran[0]["loadgen"]
    failed = [f"round {i}: {run['error']}" for i, run in enumerate(runs, 1) if run.get("error")]
    if failed:
        cell["error"] = "; ".join(failed)
    cell["rounds"] = [{k: v for k, v in run.items() if k not in ("system", "concurrency")} for run in runs]
    return cell


def median_raw(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """(a) from its rounds: per batch size, the median items/s, p50 and p99; calls and seconds summed."""
    merged: dict[str, Any] = {}
    for batch in runs[0]:
        each = [run[batch] for run in runs]
        merged[batch] = {
            key: float(statistics.median(r[key] for r in each)) for key in ("items_per_s", "p50_ms", "p99_ms")
        }
        merged[batch].update(calls=sum(r["calls"] for r in each), seconds=sum(r["seconds"] for r in each))
        merged[batch]["rounds"] = each
    return merged


def add_ratios(result: dict[str, Any]) -> None:
    """Each cell's items/s as a ratio to (a) batch-32 (and batch-1) and to (b) at the same concurrency, and
    its server's peak PSS during the cell as a ratio to (b)'s."""
    raw = result["raw"]
    floor = {c["concurrency"]: c["rps"] for c in result["cells"] if c["system"] == "floor" and c["rps"] > 0}
    floor_pss = {
        c["concurrency"]: c["peak_pss_mb"] for c in result["cells"] if c["system"] == "floor" and c.get("peak_pss_mb")
    }
    for cell in result["cells"]:
        items = cell["rps"]  # one item per request
        cell["items_per_s"] = items
        cell["ratio_to_raw_b32"] = items / raw["32"]["items_per_s"] if "32" in raw else None
        cell["ratio_to_raw_b1"] = items / raw["1"]["items_per_s"] if "1" in raw else None
        cell["ratio_to_floor"] = items / floor[cell["concurrency"]] if cell["concurrency"] in floor else None
        pss, base = cell.get("peak_pss_mb"), floor_pss.get(cell["concurrency"])
        cell["pss_ratio_to_floor"] = pss / base if pss and base else None


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``, or a dash as wide (missing or NaN)."""
    missing = value is None or value != value
    return format("-", ">" + spec.split(".")[0]) if missing else format(value, spec)


def table(results: dict[str, Any]) -> str:
    """The printed table: one row per (model, concurrency, system), with (a) rows first (medians over rounds)."""
    head = f"{'model':9s} {'conc':>4s} {'system':15s} {'req/s':>9s} {'items/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s}"
    head += f" {'errors':>6s} {'x(a)b32':>8s} {'x(b)':>6s} {'CPU us':>7s} {'PSS MiB':>8s} {'xPSS(b)':>8s}"
    lines = [head, "-" * len(head)]
    for name, result in results.items():
        b32 = result["raw"].get("32", {}).get("items_per_s")
        for batch, raw in result["raw"].items():
            lines.append(
                f"{name:9s} {'-':>4s} {LABELS['raw-b' + batch]:15s} {raw['items_per_s'] / int(batch):9.1f}"
                f" {raw['items_per_s']:9.1f} {raw['p50_ms']:8.2f} {raw['p99_ms']:8.2f} {0:6d}"
                f" {fmt(raw['items_per_s'] / b32 if b32 else None, '8.3g')} {'-':>6s} {'-':>7s} {'-':>8s} {'-':>8s}"
            )
        for cell in result["cells"]:
            lines.append(
                f"{name:9s} {cell['concurrency']:4d} {LABELS[cell['system']]:15s} {fmt(cell['rps'], '9.1f')}"
                f" {fmt(cell.get('items_per_s'), '9.1f')} {fmt(cell.get('p50_ms'), '8.2f')}"
                f" {fmt(cell.get('p99_ms'), '8.2f')} {cell['errors']:6d}"
                f" {fmt(cell.get('ratio_to_raw_b32'), '8.3g')} {fmt(cell.get('ratio_to_floor'), '6.2f')}"
                f" {fmt(cell.get('cpu_us'), '7.1f')}"
                f" {fmt(cell.get('peak_pss_mb'), '8.1f')} {fmt(cell.get('pss_ratio_to_floor'), '8.2f')}"
                + (f"  ! {cell['error']}" if cell.get("error") else "")
            )
    return "\n".join(lines)


def server_table(results: dict[str, Any]) -> str:
    """Startup (process start -> first valid response), PSS once started (idle) and at its highest under load
    (sampled), and peak RSS (VmHWM, shared pages counted in full) per server."""
    lines = [f"{'model':9s} {'server':13s} {'startup s':>9s} {'idle PSS MiB':>12s} {'peak PSS MiB':>12s}"]
    lines[0] += f" {'peak RSS MiB':>12s}"
    for name, result in results.items():
        for server, info in result["servers"].items():
            lines.append(
                f"{name:9s} {server:13s} {fmt(info['startup_s'], '9.2f')} {fmt(info.get('idle_pss_mb'), '12.1f')}"
                f" {fmt(info.get('peak_pss_mb'), '12.1f')} {fmt(info['peak_rss_mb'], '12.1f')}"
                + (f"  ! {info['error']}" if info.get("error") else "")
            )
    return "\n".join(lines)


_LOWER_IS_BETTER = {"p99_ms": "p99", "peak_pss_mb": "peak PSS"}


@dataclass(frozen=True)
class Target:
    """``system``'s metric over ``baseline``'s at one concurrency: at least (items/s) or at most (p99, peak PSS)
    ``threshold``."""

    model: str
    concurrency: int
    system: str
    baseline: str  # a system, or raw-b32: (a) at batch 32, items/s
    threshold: float
    metric: str = "items_per_s"  # or p99_ms, peak_pss_mb: lower is better, so the ratio must stay <= threshold

    @property
    def comparison(self) -> str:
        return "<=" if self.metric in _LOWER_IS_BETTER else ">="


# issue 14's targets (every request carries one item, so a cell's items/s is its req/s)
TARGETS = (
    Target("mlp", 32, "v2-json", "floor", 1.5),
    Target("mlp", 32, "v2-binary", "floor", 1.8),
    Target("mlp", 32, "v2-json", "floor", 1.0, metric="p99_ms"),
    Target("mlp", 1, "v2-json", "floor", 1.0),
    Target("resnet18", 32, "v2-json", "raw-b32", 0.9),
    Target("resnet18", 32, "v2-binary", "raw-b32", 0.95),
    Target("resnet18", 32, "v2-json", "floor", 1.5, metric="peak_pss_mb"),
    Target("resnet18", 32, "v2-binary", "floor", 1.5, metric="peak_pss_mb"),
    # issue 18: tracing every request costs at most 15% of the throughput with tracing off
    Target("mlp", 32, "v2-json-trace100", "v2-json", 0.85),
    Target("mlp", 32, "v2-json-trace100-own", "v2-json", 0.85),
)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The project's tracked targets, evaluated where this run measured both sides."""
    out = []
    for t in TARGETS:
        entry: dict[str, Any] = {"model": t.model, "concurrency": t.concurrency, "system": t.system}
        entry.update(baseline=t.baseline, metric=t.metric, comparison=t.comparison, threshold=t.threshold)
        entry.update(ratio=None, passed=None, round_by_round=False)
        result = results.get(t.model)
        if result is not None:
            entry["ratio"], entry["round_by_round"] = _ratio(result, t)
        if entry["ratio"] is not None:
            entry["passed"] = entry["ratio"] <= t.threshold if t.comparison == "<=" else entry["ratio"] >= t.threshold
        out.append(entry)
    return out


def _ratio(result: dict[str, Any], target: Target) -> tuple[float | None, bool]:
    """``target.system``'s metric over its baseline's, and whether round by round (:func:`paired_ratio`, where
    both are servers measured in the same rounds) or from the cells' medians (memory: their highest samples)."""
    cells = {c["system"]: c for c in result["cells"] if c["concurrency"] == target.concurrency and not c.get("error")}
    metric = "rps" if target.metric == "items_per_s" else target.metric
    if target.baseline == "raw-b32":
        base = result["raw"].get("32", {}).get(target.metric)
    else:
        base = cells.get(target.baseline, {}).get(metric)
        if metric in _MEDIAN and target.system in cells and target.baseline in cells:
            paired = paired_ratio(cells[target.system], cells[target.baseline], metric)
            if paired is not None:
                return paired, True
    value = cells.get(target.system, {}).get(metric)
    if value is None or not base or value != value or base != base:
        return None, False
    return float(value / base), False


def paired_ratio(cell: dict[str, Any], base: dict[str, Any], key: str) -> float | None:
    """The median, over the rounds, of ``cell``'s ``key`` over ``base``'s in the same round; None unless every
    round of both ran and measured it.

    The rounds interleave the systems, so a round's two runs follow each other within seconds: a shared host
    whose speed drifts from minute to minute moves both alike, and their ratio keeps what the medians of
    separate runs lose (on a host whose tracing-off runs spread 129-228 us a request, the cells' medians read
    tracing's cost at 0.76x while the rounds' ratios and an instruction count agreed on 0.89x-0.90x)."""
    rounds, bases = cell.get("rounds"), base.get("rounds")
    if not rounds or not bases or len(rounds) != len(bases):
        return None
    ratios = []
    for run, reference in zip(rounds, bases, strict=True):
        value, against = run.get(key), reference.get(key)
        if run.get("error") or reference.get("error") or value is None or not against:
            return None
        ratios.append(value / against)
    return float(statistics.median(ratios))


def target_lines(entries: list[dict[str, Any]]) -> str:
    """PASS/FAIL/SKIP lines."""
    lines = []
    for t in entries:
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[t["passed"]]
        measured = "not measured" if t["ratio"] is None else f"{t['ratio']:.3f}x"
        measured += " (the median of the rounds' ratios)" if t.get("round_by_round") else ""
        base = "(a) batch-32" if t["baseline"] == "raw-b32" else LABELS[t["baseline"]]
        what = _LOWER_IS_BETTER.get(t["metric"], "items/s")
        lines.append(
            f"{verdict}  {t['model']} c={t['concurrency']}: {LABELS[t['system']]} {what} {t['comparison']}"
            f" {t['threshold']}x {base}: {measured}"
        )
    return "\n".join(lines)


def baseline_lines(results: dict[str, Any]) -> str:
    """With ``--baseline``: each system's req/s and peak PSS over its baseline's, cell by cell ("" without)."""
    lines = []
    for name, result in results.items():
        cells = {(c["concurrency"], c["system"]): c for c in result["cells"] if not c.get("error")}
        for (concurrency, system), base in sorted(cells.items()):
            after = cells.get((concurrency, system.removesuffix("-base")))
            if not system.endswith("-base") or after is None:
                continue
            rps = after["rps"] / base["rps"] if base["rps"] else None
            pss = after["peak_pss_mb"] / base["peak_pss_mb"] if base.get("peak_pss_mb") else None
            cpu = after["cpu_us"] / base["cpu_us"] if after.get("cpu_us") and base.get("cpu_us") else None
            lines.append(
                f"{name} c={concurrency}: {LABELS[after['system']]} / {LABELS[system]}: req/s x{fmt(rps, '.3f')},"
                f" CPU us/request x{fmt(cpu, '.3f')}, peak PSS x{fmt(pss, '.3f')}"
            )
    return "\n".join(lines)


def tracing_lines(results: dict[str, Any]) -> str:
    """With the traced systems: their req/s, p50 and p99 over (c)'s (tracing off), cell by cell, and the spans
    each one's sink received ("" without them)."""
    lines = []
    for name, result in results.items():
        cells = {(c["concurrency"], c["system"]): c for c in result["cells"] if not c.get("error")}
        for (concurrency, system), traced in sorted(cells.items()):
            off = cells.get((concurrency, "v2-json"))
            if not system.startswith("v2-json-trace") or off is None:
                continue
            ratios = [_ratio_of(traced, off, key) for key in ("rps", "p50_ms", "p99_ms")]
            # the server process's own CPU per request (not its exporter's): the throughput its core allows
            own, capacity = traced.get("own_cpu_us"), _ratio_of(off, traced, "own_cpu_us")
            line = (
                f"{name} c={concurrency}: {LABELS[system]} / {LABELS['v2-json']}: req/s x{fmt(ratios[0], '.3f')},"
                f" p50 x{fmt(ratios[1], '.3f')}, p99 x{fmt(ratios[2], '.3f')}; server process alone"
                f" {fmt(own, '.1f')} CPU us/request (off {fmt(off.get('own_cpu_us'), '.1f')}):"
                f" x{fmt(capacity, '.3f')} of off's capacity on its core"
            )
            paired_rps, paired_capacity = paired_ratio(traced, off, "rps"), paired_ratio(off, traced, "own_cpu_us")
            if paired_rps is not None:  # each round's traced run over the off run beside it, the median
                line += f"; round by round: req/s x{paired_rps:.3f}, capacity x{fmt(paired_capacity, '.3f')}"
            lines.append(line)
        for server, info in result.get("servers", {}).items():
            if "spans_exported" in info:
                lines.append(f"{name} {server}: {fmt(info['spans_exported'], 'd')} spans received by its OTLP sink")
    return "\n".join(lines)


def _ratio_of(cell: dict[str, Any], base: dict[str, Any], key: str) -> float | None:
    value, reference = cell.get(key), base.get(key)
    return float(value / reference) if value is not None and reference else None


def profile_lines(results: dict[str, Any]) -> str:
    """Where the py-spy profiles went and how they were recorded ("" without --profile)."""
    lines = []
    for name, result in results.items():
        profile = result.get("profile")
        if profile is None:
            continue
        if profile.get("error"):
            lines.append(f"{name}: no profile: {profile['error']}")
            continue
        how = "py-spy attached to the running server (--pid)"
        if profile["method"] == "launch":
            how = f"server started under py-spy record (not attached: {profile['why_not_attach']})"
        lines.append(f"{name} profiles, {how}:")
        lines += [f"  {f['file']}" + (f"  ! {f['error']}" if f.get("error") else "") for f in profile["files"]]
    return "\n".join(lines)
