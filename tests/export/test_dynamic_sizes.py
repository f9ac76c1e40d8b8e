"""Golden inputs at the sizes a model takes: ``--dynamic-sizes``.

A model with a dynamic length that needs long inputs (a strided 1-D conv over audio: its kernel is 40 samples)
failed on the golden inputs' default size of 8, and the only way out the error offered was pinning the length,
which loses the dynamic dim. ``--dynamic-sizes`` (``dynamic_sizes`` in the API) draws them at sizes it takes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from modelport.golden import load_golden
from modelport.manifest import read_manifest
from tests.user_cli import run_modelport

pytestmark = [pytest.mark.torch]

AUDIO = """\
import torch


class Audio(torch.nn.Module):
    input_specs = ("wave:float32:-1x1x-1",)
    output_names = ("logits",)

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 4, 40, stride=8)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, wave):
        return self.head(torch.relu(self.conv(wave)).amax(-1))


def make_model():
    torch.manual_seed(0)
    return Audio().eval()
"""


def _export(cwd: Path, *extra: str) -> tuple[int, str]:
    done = run_modelport(
        "export", "audio.py:make_model", "--format", "onnx", "--repository", "repo", "--name", "a", "--quiet", *extra,
        cwd=cwd,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_a_model_that_needs_long_inputs_keeps_its_dynamic_length(tmp_path):
    (tmp_path / "audio.py").write_text(AUDIO)
    code, output = _export(tmp_path)
    assert code == 1, output
    assert "Kernel size can't be greater than actual input size" in output, output
    assert "--dynamic-sizes N,M" in output, output

    code, output = _export(tmp_path, "--dynamic-sizes", "400,333")
    assert code == 0, output
    directory = tmp_path / "repo" / "a-onnx" / "1"
    manifest = read_manifest(directory)
    assert [s.describe() for s in manifest.inputs] == ["wave:float32:-1x1x-1"]
    assert [c.inputs["wave"].shape for c in load_golden(directory / "golden.npz")] == [(1, 1, 400), (3, 1, 333)]

    import onnxruntime
    import torch

    wave = np.random.default_rng(0).standard_normal((2, 1, 1000)).astype(np.float32)  # a length never exported
    session = onnxruntime.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    spec = importlib.util.spec_from_file_location("audio_user_file", tmp_path / "audio.py")
    assert spec is not None and spec.loader is not None
    user_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(user_file)
    with torch.inference_mode():
        expected = user_file.make_model()(torch.from_numpy(wave)).numpy()
    np.testing.assert_allclose(session.run(None, {"wave": wave})[0], expected, atol=1e-5)


def test_dynamic_sizes_must_be_positive(tmp_path):
    (tmp_path / "audio.py").write_text(AUDIO)
    code, output = _export(tmp_path, "--dynamic-sizes", "0")
    assert code == 2 and "dynamic sizes must be positive, got [0]" in output, output


DOUBLE = """\
import torch


class Double(torch.nn.Module):
    def forward(self, x):
        return x * 2


def make():
    return Double().eval()
"""


def test_an_output_dim_that_follows_a_dynamic_dim_is_dynamic_without_a_batch(tmp_path):
    # no batch to vary: the golden cases still vary the dynamic dim, or its output dim was recorded at the one size
    # drawn (4x8) while the server answered 4xN
    (tmp_path / "double.py").write_text(DOUBLE)
    done = run_modelport(
        "export", "double.py:make", "--input", "x:float32:4x-1", "--max-batch-size", "0", "--format", "onnx",
        "--repository", "repo", "--name", "d", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    directory = tmp_path / "repo" / "d-onnx" / "1"
    manifest = read_manifest(directory)
    assert [s.describe() for s in manifest.outputs] == ["output_0:float32:4x-1"]
    assert [c.inputs["x"].shape for c in load_golden(directory / "golden.npz")] == [(4, 8), (4, 5)]
