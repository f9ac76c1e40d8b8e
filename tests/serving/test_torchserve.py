"""A real TorchServe (Java, from the ``torchserve`` extra) beside modelport.

The digits TorchScript export is archived with torch-model-archiver and served by TorchServe; the
same instance goes to TorchServe directly, to modelport serving the archive imported with
``modelport import-mar``, and to modelport forwarding to TorchServe (``runtime: torchserve``).
Then TorchServe stops (modelport answers 503) and starts again on the same ports (it recovers).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.cli import main
from modelport.torchserve_process import TorchServeOptions, TorchServePorts, archive, running_torchserve, stop
from tests.serving.processes import ROOT, serving, wait_until

pytestmark = [pytest.mark.torchserve, pytest.mark.torch, pytest.mark.slow]

HANDLER = ROOT / "examples" / "digits" / "torchserve_handler.py"
SPEC = "image:float32:-1x1x8x8"


def _predict(base: str, image: np.ndarray[Any, Any], model: str = "digits") -> httpx.Response:
    return httpx.post(f"{base}/predictions/{model}", json=image.tolist(), timeout=60)


def test_torchserve_and_modelport_answer_alike_and_remote_recovers(tmp_path: Path, digits_repo: Any) -> None:
    store = tmp_path / "store"
    mar = archive(digits_repo.root / "digits-torchscript" / "1" / "model.pt", HANDLER, "digits", store)
    images = np.random.default_rng(7).random((3, 1, 8, 8), dtype=np.float32)
    options = TorchServeOptions(ports=TorchServePorts.free())  # the restart reuses them
    local_repo, remote_repo = tmp_path / "local", tmp_path / "remote"
    with contextlib.ExitStack() as stack:
        ts = stack.enter_context(running_torchserve(mar, tmp_path / "ts", options))
        direct = [_predict(ts.inference, image) for image in images]
        assert all(r.status_code == 200 for r in direct), direct[0].text
        expected = np.asarray([r.json() for r in direct], dtype=np.float32)
        assert expected.shape == (3, 10)

        assert main(["import-mar", str(mar), "--repository", str(local_repo), "--input", SPEC, "--quiet"]) == 0
        command = ["import-mar", str(mar), "--repository", str(remote_repo), "--input", SPEC, "--quiet"]
        assert main([*command, "--remote", ts.inference]) == 0
        assert "runtime: torchserve" in (remote_repo / "digits" / "config.yaml").read_text()

        local = stack.enter_context(serving(local_repo))
        remote = stack.enter_context(serving(remote_repo))
        for server in (local, remote):
            answers = np.asarray([_predict(server.url, image).json() for image in images], dtype=np.float32)
            np.testing.assert_allclose(answers, expected, rtol=1e-5, atol=1e-5)
        body = {
            "inputs": [{"name": "image", "shape": [3, 1, 8, 8], "datatype": "FP32", "data": images.ravel().tolist()}]
        }
        batch = httpx.post(f"{remote.url}/v2/models/digits/infer", json=body, timeout=60)
        assert batch.status_code == 200, batch.text
        np.testing.assert_allclose(np.reshape(batch.json()["outputs"][0]["data"], (3, 10)), expected, atol=1e-5)

        stop(ts)
        down = _predict(remote.url, images[0])
        assert down.status_code == 503, down.text
        assert down.json()["type"] == "ServiceUnavailableException"
        assert _predict(local.url, images[0]).status_code == 200, "the local copy does not depend on TorchServe"
        wait_until(lambda: httpx.get(f"{remote.url}/v2/models/digits/ready", timeout=5).status_code == 503)

        stack.enter_context(running_torchserve(mar, tmp_path / "ts-again", options))
        wait_until(lambda: httpx.get(f"{remote.url}/v2/models/digits/ready", timeout=5).status_code == 200)
        again = _predict(remote.url, images[0])
        assert again.status_code == 200, again.text
        np.testing.assert_allclose(again.json(), expected[0], atol=1e-5)
