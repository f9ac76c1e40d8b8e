"""A process tree and its peak memory, read from ``/proc`` (Linux).

A server with ``--workers N`` is a supervisor and N children: its memory is the sum over the tree
(the load generator reads the tree's CPU time over its measured window). Where ``/proc`` is
missing the readings are None and the report says so.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["peak_rss_mb", "tree"]

_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # the command name may hold spaces


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    parents: dict[int, list[int]] = {}
    for entry in _PROC.iterdir() if _PROC.is_dir() else ():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def peak_rss_mb(pids: list[int]) -> float | None:
    """The sum of the processes' peak resident set sizes (VmHWM), in MiB."""
    total, seen = 0.0, False
    for pid in pids:
        try:
            lines = (_PROC / str(pid) / "status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
                seen = True
    return total if seen else None
