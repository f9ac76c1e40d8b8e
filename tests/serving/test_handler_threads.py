"""A TorchServe handler that starts threads it never stops (``ts.handler_utils.micro_batching.MicroBatching``
does: non-daemon threads, stopped only by ``__del__``) does not keep ``modelport serve`` from exiting once it has
drained: TorchServe kills its workers, and Python would otherwise wait for those threads forever."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from modelport.cli import main
from tests.serving.processes import serving

pytestmark = pytest.mark.torchserve

HANDLER = """
from ts.handler_utils.micro_batching import MicroBatching
from ts.torch_handler.base_handler import BaseHandler


class Handler(BaseHandler):
    def __init__(self):
        super().__init__()
        self.handle = MicroBatching(self, micro_batch_size=2, parallelism={"preprocess": 2, "postprocess": 2})

    def initialize(self, context):
        self.context = context
        self.initialized = True

    def preprocess(self, data):
        return [len(row.get("data") or row.get("body")) for row in data]

    def inference(self, data):
        return [n * 10 for n in data]

    def postprocess(self, data):
        return [{"n": n} for n in data]
"""


def test_a_handlers_own_threads_do_not_keep_the_server_from_exiting(tmp_path: Path) -> None:
    source = tmp_path / "micro"
    (source / "MAR-INF").mkdir(parents=True)
    manifest = {"model": {"modelName": "micro", "handler": "handler.py", "modelVersion": "1.0"}}
    (source / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    (source / "handler.py").write_text(HANDLER)
    repo, log = tmp_path / "repo", tmp_path / "server.log"
    assert main(["import-mar", str(source), "--repository", str(repo), "--max-batch-size", "4", "--quiet"]) == 0
    with serving(repo, log=log) as served:  # it checks that SIGTERM drains and the process exits 0
        files = [("data", ("a", b"four")), ("data", ("b", b"sixteen bytes..."))]
        answer = httpx.post(f"{served.url}/predictions/micro", files=files, timeout=60)
        assert answer.status_code == 200 and answer.json() == [{"n": 40}, {"n": 160}]
    assert "exiting without waiting for" in log.read_text()  # named, not silently dropped
