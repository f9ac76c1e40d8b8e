"""The manifest's integer value ranges are enforced before batching: a value outside is a 400 naming the input,
the first offending index and value, and the range; the runtime never sees it. Integer ranges exclude their end
(the README's reading of ``--input NAME:DTYPE:SHAPE:LOW..HIGH``); float ranges are not enforced."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.serving import fakes


@pytest.fixture
def repo(tmp_path: Path) -> Path:  # replaces conftest's repository for this module's ``client``
    root = tmp_path / "repo"
    fakes.write_model(root, "ids", dtype="int64", value_range=(0, 5))
    fakes.write_model(root, "pixels", value_range=(0, 4))
    fakes.GATE.set()
    return root


async def _infer(client: httpx.AsyncClient, model: str, data: list[list[float]], datatype: str) -> httpx.Response:
    tensor = {"name": "x", "shape": [len(data), 3], "datatype": datatype, "data": data}
    return await client.post(f"/v2/models/{model}/infer", json={"inputs": [tensor]})


async def test_an_integer_at_or_past_the_end_of_its_range_is_a_400_before_batching(client):
    ran = len(fakes.BATCH_LOG)
    response = await _infer(client, "ids", [[0, 1, 4], [2, 3, 5]], "INT64")
    assert response.status_code == 400
    assert (
        response.json()["error"]
        == "input 'x': value 5 at index [1, 2] is outside the model's value range (0 <= value < 5)"
    )
    negative = await _infer(client, "ids", [[-1, 1, 4]], "INT64")
    assert negative.status_code == 400 and "value -1 at index [0, 0]" in negative.json()["error"]
    assert len(fakes.BATCH_LOG) == ran, "the runtime never saw them"
    assert (await _infer(client, "ids", [[0, 1, 4]], "INT64")).json()["outputs"][0]["data"] == [0, 2, 8]


async def test_a_float_range_only_shapes_golden_inputs_and_is_not_enforced(client):
    """A float range describes typical inputs (normalised pixels may stray a little past it): only an integer
    range is a domain the server enforces."""
    for data in ([[0.0, 2.5, 4.0]], [[0.0, 4.5, -1.0]]):
        response = await _infer(client, "pixels", data, "FP32")
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == [2 * v for v in data[0]]
