"""How many CPUs this process may use: its affinity, capped by its cgroup's CPU quota (a container's limit).

Thread pools sized from the machine's cores oversubscribe a process that may use fewer: onnxruntime sizes
its intra-op pool from the host's physical cores whatever the affinity (a server pinned to one core of a
two-core host gets two threads on that core, which wait for each other: ResNet-18 took ~1.8x the time
there, ``taskset -c 0``), and no framework reads a Kubernetes CPU limit (a cgroup ``cpu.max`` quota), so a
pod limited to 2 CPUs on a 64-core node would run 32-thread pools and be throttled. The runtimes take
:func:`default_threads` when no ``--intra-op-threads`` is given.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["cgroup_cpu_limit", "default_threads", "usable_cpus"]

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(root: Path | None = None) -> int:
    """The CPUs this process may run on (its affinity), at most its cgroup's quota rounded up; at least 1."""
    cpus = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(root)
    return max(1, min(cpus, math.ceil(limit)) if limit is not None else cpus)


def default_threads(root: Path | None = None) -> int:
    """Threads for a runtime's pool when none are configured: the usable CPUs when the process may use fewer
    than the machine has (pinned, or in a container with a CPU limit), else 0 (the framework's own default)."""
    usable = usable_cpus(root)
    return usable if usable < (os.cpu_count() or usable) else 0


def cgroup_cpu_limit(root: Path | None = None) -> float | None:
    """The tightest CPU quota (in CPUs) of this process's cgroup and its ancestors, or None when unlimited:
    cgroup v2 ``cpu.max`` (``QUOTA PERIOD`` or ``max PERIOD``), else v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``."""
    limits = [limit for folder in _cgroup_folders(root or CGROUP_ROOT) if (limit := _quota(folder)) is not None]
    return min(limits) if limits else None


def _cgroup_folders(root: Path) -> list[Path]:
    """The folders that may hold this process's CPU quota: its own cgroup's and its ancestors' (v2: the
    ``0::PATH`` line of /proc/self/cgroup; v1: the ``cpu`` controller's), and ``root`` itself (a container
    sees its own cgroup there)."""
    folders = [root, root / "cpu", root / "cpu,cpuacct"]
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return folders
    for line in lines:
        _, controllers, path = line.split(":", 2)
        base = root if controllers == "" else root / controllers if "cpu" in controllers.split(",") else None
        if base is None:
            continue
        folder = base / path.lstrip("/")
        while folder != base and base in folder.parents:
            folders.append(folder)
            folder = folder.parent
    return folders


def _quota(folder: Path) -> float | None:
    """The quota in ``folder`` (CPUs), or None: no quota there, or no such files."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        pass
    try:
        quota_us = int((folder / "cpu.cfs_quota_us").read_text())
        period_us = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None
