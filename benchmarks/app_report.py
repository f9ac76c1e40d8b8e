"""The application-serving benchmark's report: the systems' labels, the answer check, the table and the targets."""

from __future__ import annotations

from typing import Any

from serving_report import fmt

SYSTEMS = ("torchserve", "mar", "declarative", "v2-bytes")
LABELS = {
    "torchserve": "(a) torchserve",
    "mar": "(b) modelport mar",
    "declarative": "(c) mp declarative",
    "v2-bytes": "(d) mp v2 BYTES",
}
PROB_TOLERANCE = 1e-4  # relative, on probabilities: the handler's float32 softmax vs the processors'
# (what, of which system, against which, how, the ratio it must reach, at which concurrency: None = every one)
TARGETS = (
    ("rps", "mar", "torchserve", ">=", 2.0, "max"),
    ("p99_ms", "mar", "torchserve", "<=", 1.0, None),
    ("rps", "declarative", "mar", ">=", 0.9, None),
)


def compare(expected: dict[str, float], got: Any) -> tuple[str | None, float | None]:
    """What is wrong with ``got`` (None: the same classes in the same order as ``expected``, with probabilities
    within ``PROB_TOLERANCE``), and the largest relative difference of its probabilities."""
    if not isinstance(got, dict) or list(got) != list(expected):
        return f"labels {list(got) if isinstance(got, dict) else got!r} != {list(expected)}", None
    worst = max(abs(float(got[k]) - float(expected[k])) / abs(float(expected[k])) for k in expected)
    return (None if worst <= PROB_TOLERANCE else f"probabilities differ by up to {worst:.2e} (relative)"), worst


def cell_line(cell: dict[str, Any]) -> str:
    """One cell as the run prints it."""
    line = f"c={cell['concurrency']:<3d} {LABELS[cell['system']]:19s} {fmt(cell.get('rps'), '8.1f')} req/s"
    line += f"  p50 {fmt(cell.get('p50_ms'), '7.2f')} ms  p99 {fmt(cell.get('p99_ms'), '7.2f')} ms"
    line += f"  CPU {fmt(cell.get('cpu_ms_per_request'), '6.2f')} ms/req, {fmt(cell.get('cpu_share'), '4.2f')} core"
    return line + f"  runq wait {fmt(cell.get('runqueue_wait_share'), '4.2f')}  errors {cell['errors']}"


def report_table(cells: list[dict[str, Any]]) -> str:
    """Every cell, with its req/s, p99 and CPU per request as ratios to TorchServe's at the same concurrency."""
    head = f"{'conc':>4s} {'system':19s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>6s}"
    head += f" {'CPU ms/req':>10s} {'x rps(a)':>8s} {'x p99(a)':>8s} {'x CPU(a)':>8s}"
    lines = [head, "-" * len(head)]
    for cell in cells:
        base = _cell(cells, "torchserve", cell["concurrency"])
        lines.append(
            f"{cell['concurrency']:4d} {LABELS[cell['system']]:19s} {fmt(cell['rps'], '8.1f')}"
            f" {fmt(cell.get('p50_ms'), '8.2f')} {fmt(cell.get('p99_ms'), '8.2f')} {cell['errors']:6d}"
            f" {fmt(cell.get('cpu_ms_per_request'), '10.2f')} {fmt(_ratio(cell, base, 'rps'), '8.2f')}"
            f" {fmt(_ratio(cell, base, 'p99_ms'), '8.2f')} {fmt(_ratio(cell, base, 'cpu_ms_per_request'), '8.2f')}"
            + (f"  ! {cell['error']}" if cell.get("error") else "")
        )
    return "\n".join(lines)


def targets(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target at each concurrency it applies to: the ratio and whether it passed (None: not measured)."""
    levels = sorted({c["concurrency"] for c in cells})
    judged = []
    for metric, system, base, comparison, goal, where in TARGETS:
        for concurrency in levels[-1:] if where == "max" else levels:
            cell, against = _cell(cells, system, concurrency), _cell(cells, base, concurrency)
            ratio = None if cell is None or cell.get("error") else _ratio(cell, against, metric)
            passed = None if ratio is None else (ratio >= goal if comparison == ">=" else ratio <= goal)
            judged.append(
                {"metric": metric, "system": system, "against": base, "concurrency": concurrency}
                | {"comparison": comparison, "goal": goal, "ratio": ratio, "passed": passed}
            )
    return judged


def target_lines(judged: list[dict[str, Any]]) -> str:
    """One PASS/FAIL line per judged target."""
    lines = []
    for t in judged:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[t["passed"]]
        lines.append(
            f"{verdict} c={t['concurrency']:<3d} {t['metric']:7s} {LABELS[t['system']]} / {LABELS[t['against']]}"
            f" = {fmt(t['ratio'], '.2f')} (target {t['comparison']} {t['goal']:g})"
        )
    return "\n".join(lines)


def _cell(cells: list[dict[str, Any]], system: str, concurrency: int) -> dict[str, Any] | None:
    return next((c for c in cells if c["system"] == system and c["concurrency"] == concurrency), None)


def _ratio(cell: dict[str, Any] | None, base: dict[str, Any] | None, key: str) -> float | None:
    value, against = (cell or {}).get(key), (base or {}).get(key)
    return value / against if value and against and not (base or {}).get("error") else None


def ceiling_line(alone: dict[str, Any], cells: list[dict[str, Any]]) -> str:
    """What the handler alone leaves to win: its in-process ceiling on one core against TorchServe's req/s at the
    highest concurrency (the bound of any ``(b)/(a)`` throughput ratio on this machine)."""
    if "error" in alone:
        return f"handler alone: not measured ({alone['error'].splitlines()[-1]})"
    line = f"handler alone, no server: {alone['cpu_ms_per_request']:.2f} ms CPU a request, at most"
    line += f" {alone['ceiling_rps']:.0f} req/s on one core"
    levels = sorted({c["concurrency"] for c in cells})
    reference = _cell(cells, "torchserve", levels[-1]) if levels else None
    if reference is None or not reference.get("rps") or reference.get("error"):
        return line
    return (
        f"{line}; {LABELS['torchserve']} at c={levels[-1]}: {reference['rps']:.0f} req/s, so no server running"
        f" this handler on one core can exceed {alone['ceiling_rps'] / reference['rps']:.2f}x its throughput"
    )
