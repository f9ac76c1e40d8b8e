"""A stateful TorchServe handler (sequence batching: ``sequenceBatching: true`` in its model config, state kept by
``context.get_sequence_id``) answers as on a real TorchServe 0.12: the requests that name one sequence
(``ts_request_sequence_id``) add up in one handler's state even when the config asks for several workers, and
each request that names none starts a sequence of its own (``ts-seq-<uuid>``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelport.cli import main
from modelport.torchserve_process import TorchServeOptions, archive, running_torchserve
from tests.serving.processes import serving

pytestmark = [pytest.mark.torchserve, pytest.mark.slow]

HANDLER = """
totals = {}


def handle(data, context):
    if data is None:
        return None
    answers = []
    for i, row in enumerate(data):
        sequence = context.get_sequence_id(i)
        value = row.get("data") or row.get("body")
        totals[sequence] = totals.get(sequence, 0) + int(value)
        answers.append({"new": sequence.startswith("ts-seq-"), "total": totals[sequence]})
    return answers
"""

CONFIG = """
minWorkers: 2
maxWorkers: 2
batchSize: 4
maxBatchDelay: 5
sequenceBatching: true
sequenceMaxIdleMSec: 60000
maxNumSequence: 16
"""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(TorchServe's, modelport's) inference URL serving the stateful archive as ``counter``."""
    work = tmp_path_factory.mktemp("sequences")
    (work / "counter.py").write_text(HANDLER)
    (work / "model-config.yaml").write_text(CONFIG)
    (work / "w.bin").write_bytes(b"x")
    config = work / "model-config.yaml"
    mar = archive(work / "w.bin", work / "counter.py", "counter", work / "store", config_file=config)
    repo = work / "repo"
    assert main(["import-mar", str(mar), "--repository", str(repo), "--quiet"]) == 0
    with contextlib.ExitStack() as stack:
        ts = stack.enter_context(running_torchserve(mar, work / "ts", TorchServeOptions(batch_size=4)))
        mine = stack.enter_context(serving(repo, log=work / "server.log"))
        yield ts.inference, mine.url


def _answers(url: str, bodies: list[bytes], headers: dict[str, str]) -> list[tuple[int, Any]]:
    replies = [httpx.post(f"{url}/predictions/counter", content=b, headers=headers, timeout=60) for b in bodies]
    return [(r.status_code, r.json()) for r in replies]


def test_requests_of_one_sequence_share_its_state(servers: tuple[str, str]) -> None:
    theirs, mine = servers
    named = {"ts_request_sequence_id": "seq_0"}
    expected = [(200, {"new": False, "total": total}) for total in (1, 3, 6)]
    assert _answers(theirs, [b"1", b"2", b"3"], named) == _answers(mine, [b"1", b"2", b"3"], named) == expected


def test_each_request_without_a_sequence_starts_its_own(servers: tuple[str, str]) -> None:
    theirs, mine = servers
    expected = [(200, {"new": True, "total": 5})] * 3
    assert _answers(theirs, [b"5"] * 3, {}) == _answers(mine, [b"5"] * 3, {}) == expected
