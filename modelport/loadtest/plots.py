"""matplotlib figures of the reports, rendered headless (Agg) to PNG bytes, without warnings on stderr."""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING, Any

from modelport.errors import DependencyError

if TYPE_CHECKING:
    from modelport.loadtest.results import LevelResult

__all__ = ["batch_sizes", "curves", "pyplot", "throughput_bars", "timeline", "to_png", "where_time_goes"]

Curve = tuple[str, list[float], list[float], list[str]]


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend (a clear error without the loadtest extra)."""
    try:
        import matplotlib
    except ImportError:
        raise DependencyError("the HTML report needs matplotlib: pip install 'modelport[loadtest]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_png(figure: Any) -> bytes:
    """The figure as PNG bytes (laid out tight); the figure is closed."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # e.g. "Tight layout not applied" for long names: the figure is still right
        warnings.simplefilter("ignore", UserWarning)
        figure.tight_layout()
        figure.savefig(buffer, format="png", dpi=90)
    pyplot().close(figure)
    return buffer.getvalue()


def timeline(levels: list[LevelResult]) -> bytes:
    """Latency percentiles and throughput per second, the levels one after another."""
    plt = pyplot()
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    offset = 0.0
    for i, level in enumerate(levels):
        t = [offset + x for x in level.timeline["t"]]
        for name, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            top.plot(t, level.timeline[name], style, color=f"C{name[1]}", label=name if i == 0 else None)
        bottom.plot(t, level.timeline["rps"], color="C0", label="requests/s" if i == 0 else None)
        failures = level.timeline["failures"]
        if any(failures):
            bottom.plot(t, failures, color="C3", label="failures/s")
        end = offset + max(level.duration_s, (level.timeline["t"] or [0])[-1] + 1)
        if i % 2:
            for axis in (top, bottom):
                axis.axvspan(offset, end, color="0.93")
        top.annotate(level.level.label, (offset, 1.0), xycoords=("data", "axes fraction"), fontsize=8, va="top")
        offset = end
    top.set_ylabel("latency (ms)")
    top.legend(loc="upper right")
    bottom.set_ylabel("throughput (req/s)")
    bottom.set_xlabel("seconds since the first level started")
    bottom.legend(loc="upper right")
    return to_png(figure)


def curves(series: list[Curve], title: str) -> bytes:
    """Latency (p50 dashed, p99 solid) against throughput across a sweep, one colour per series."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(11, 5))
    for i, (name, rps, p99, labels) in enumerate(series):
        axis.plot(rps, p99, "o-", color=f"C{i % 10}", label=name)
        for x, y, label in zip(rps, p99, labels, strict=True):
            axis.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axis.set_xlabel("throughput (req/s)")
    axis.set_ylabel("p99 latency (ms)")
    if any(y > 0 for _, _, p99, _ in series for y in p99):
        axis.set_yscale("log")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    if series:  # none when no variant could be load-tested
        axis.legend(fontsize=8, ncol=2)
    return to_png(figure)


def batch_sizes(levels: list[LevelResult]) -> bytes | None:
    """The server's batch-size distribution at each level (share of batches per size bucket)."""
    with_batches = [lv for lv in levels if lv.server and lv.server.get("batch_size")]
    if not with_batches:
        return None
    plt = pyplot()
    buckets = [b for b in with_batches[0].server["batch_size"]["buckets"] if b != "+Inf"]  # type: ignore[index]
    figure, axis = plt.subplots(figsize=(11, 4))
    width = 0.8 / len(with_batches)
    for i, level in enumerate(with_batches):
        histogram = level.server["batch_size"]  # type: ignore[index]
        shares = [histogram["buckets"].get(b, 0.0) / histogram["count"] for b in buckets]
        axis.bar([x + i * width for x in range(len(buckets))], shares, width, label=level.level.label)
    axis.set_xticks([x + 0.4 - width / 2 for x in range(len(buckets))], [f"<= {b}" for b in buckets])
    axis.set_xlabel("rows per executed batch (server)")
    axis.set_ylabel("share of batches")
    axis.legend(fontsize=8)
    return to_png(figure)


def where_time_goes(levels: list[LevelResult]) -> bytes | None:
    """Client p50 beside the server's mean queue and compute time, per level."""
    with_server = [lv for lv in levels if lv.server and lv.server.get("compute_ms")]
    if not with_server:
        return None
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(11, 4))
    x = list(range(len(with_server)))
    queue = [lv.server["queue_ms"]["mean"] if lv.server["queue_ms"] else 0.0 for lv in with_server]  # type: ignore[index]
    compute = [lv.server["compute_ms"]["mean"] for lv in with_server]  # type: ignore[index]
    axis.bar([i - 0.2 for i in x], queue, 0.4, label="server queue (mean)")
    axis.bar([i - 0.2 for i in x], compute, 0.4, bottom=queue, label="server compute per batch (mean)")
    axis.bar([i + 0.2 for i in x], [lv.latency_ms["p50"] for lv in with_server], 0.4, label="client p50")
    axis.set_xticks(x, [lv.level.label for lv in with_server])
    axis.set_ylabel("ms")
    axis.legend(fontsize=8)
    return to_png(figure)


def throughput_bars(names: list[str], values: list[float], sizes: list[float], title: str) -> bytes:
    """Max throughput under the SLO and artifact size per variant, side by side."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 1.5), sharey=True)
    left.barh(names, values, color="C0")
    left.set_xlabel("req/s")
    left.set_title(title, fontsize=10)
    right.barh(names, sizes, color="C1")
    right.set_xlabel("artifact size (KB)")
    left.invert_yaxis()
    return to_png(figure)
