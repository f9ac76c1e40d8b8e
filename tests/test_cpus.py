"""The CPUs a process may use (affinity and cgroup quota), and the runtime thread pools sized from them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modelport import cpus
from modelport.cpus import cgroup_cpu_limit, default_threads, usable_cpus


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2: a Kubernetes limit of 1500m
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu.max": "garbage\n"}, None),
        ({"cpu.max": "100 0\n"}, None),
        ({}, None),
    ],
)
def test_the_cgroup_quota_in_cpus(tmp_path: Path, files: dict[str, str], limit: float | None) -> None:
    assert cgroup_cpu_limit(_write(tmp_path, files)) == limit


def test_the_tightest_quota_of_the_cgroup_and_its_ancestors_counts(tmp_path: Path, monkeypatch) -> None:
    _write(tmp_path, {"pods/pod1/cpu.max": "200000 100000", "pods/pod1/web/cpu.max": "max 100000"})
    real_read = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:
        if str(self) == "/proc/self/cgroup":
            return "0::/pods/pod1/web\n"
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    assert cgroup_cpu_limit(tmp_path) == 2.0


def test_usable_cpus_is_the_affinity_capped_by_the_quota_rounded_up(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1, 2, 3})
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert usable_cpus(tmp_path) == 4 and default_threads(tmp_path) == 4  # pinned to 4 of 8
    _write(tmp_path, {"cpu.max": "150000 100000"})
    assert usable_cpus(tmp_path) == 2 and default_threads(tmp_path) == 2  # a limit of 1.5 CPUs
    _write(tmp_path, {"cpu.max": "10000 100000"})
    assert usable_cpus(tmp_path) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(8)))
    (tmp_path / "cpu.max").write_text("max 100000")
    assert usable_cpus(tmp_path) == 8 and default_threads(tmp_path) == 0, "unrestricted: the framework's default"


@pytest.mark.torch  # onnxruntime with the onnx package
def test_a_server_pinned_to_one_cpu_runs_onnxruntime_without_a_second_thread(tmp_path: Path) -> None:
    # onnxruntime sizes its pool from the host's cores whatever the affinity: two threads on one core
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    script = textwrap.dedent(
        f"""
        import os
        os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})
        import onnxruntime as ort
        from modelport.runtimes.base import RuntimeOptions
        from modelport.runtimes.onnx import session_options
        before = len(os.listdir("/proc/self/task"))
        options = session_options(ort, RuntimeOptions())
        session = ort.InferenceSession({str(tmp_path / "m.onnx")!r}, options, providers=["CPUExecutionProvider"])
        print(options.intra_op_num_threads, len(os.listdir("/proc/self/task")) - before)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    threads, added = done.stdout.split()
    assert int(added) == 0, f"onnxruntime started {added} pool thread(s) for a process on one CPU"
    if (os.cpu_count() or 1) > 1:
        assert int(threads) == 1


def test_the_module_reads_the_real_machine() -> None:
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))
    assert cpus.default_threads() in (0, usable_cpus())
