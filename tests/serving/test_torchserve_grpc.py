"""TorchServe's gRPC inference API on modelport's gRPC port, in-process over the fake repository: a tensor
model answers ``Predictions`` with the bytes ``POST /predictions/{m}`` answers, errors have their gRPC status,
the streams answer in order, and the service takes the same tokens as the other gRPC services.
(``test_torchserve_grpc_compare.py`` compares it with a real TorchServe.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import orjson
import pytest
from google.protobuf import empty_pb2

from modelport.serving.dataplane import DataPlane
from modelport.serving.grpc_v2 import build_grpc_server
from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from modelport.serving.torchserve_grpc import SERVICE, messages
from tests.serving.applications import add_sentiment
from tests.serving.embedding import export

ARCHIVE = "org.pytorch.serve.archive.model."
M = messages()
REQUEST, RESPONSE, HEALTH = M["PredictionsRequest"], M["PredictionResponse"], M["TorchServeHealthResponse"]


class Stubs:
    """TorchServe's InferenceAPIsService methods on a channel (what its generated stub would make)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        path = f"/{SERVICE}/"
        pair = {"request_serializer": REQUEST.SerializeToString, "response_deserializer": RESPONSE.FromString}
        self.ping = channel.unary_unary(
            path + "Ping",
            request_serializer=empty_pb2.Empty.SerializeToString,
            response_deserializer=HEALTH.FromString,
        )
        self.predictions = channel.unary_unary(path + "Predictions", **pair)
        self.stream = channel.unary_stream(path + "StreamPredictions", **pair)
        self.stream2 = channel.stream_stream(path + "StreamPredictions2", **pair)


async def _served(plane: DataPlane) -> AsyncIterator[Stubs]:
    server, _ = build_grpc_server(plane)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Stubs(channel)
    finally:
        await server.stop(grace=None)


@pytest.fixture
async def stubs(plane: DataPlane) -> AsyncIterator[Stubs]:
    async for served in _served(plane):
        yield served


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


async def test_predictions_answer_what_the_http_api_answers(stubs: Stubs, client: httpx.AsyncClient) -> None:
    for body in (b"[1, 2, 3]", b"[[1, 2, 3], [4, 5, 6]]", b'{"x": [0.5, 1, 2]}'):
        http = await client.post("/predictions/echo/2", content=body, headers={"content-type": "application/json"})
        answer = await stubs.predictions(REQUEST(model_name="echo", model_version="2", input={"data": body}))
        assert http.status_code == 200
        assert orjson.loads(answer.prediction) == http.json()
        assert not answer.HasField("sequence_id") and not answer.HasField("status")


async def test_ping_is_torchserves_health_string(stubs: Stubs) -> None:
    answer = await stubs.ping(empty_pb2.Empty())
    assert orjson.loads(answer.health) == {"status": "Healthy"}


async def test_errors_are_grpc_statuses(stubs: Stubs) -> None:
    """As TorchServe 0.12 answers: an unknown model or version is INTERNAL (its frontend's choice), a bad input the
    status of its HTTP status; the details are the message and TorchServe's exception class."""
    missing = await _code(stubs.predictions(REQUEST(model_name="nobody", input={"data": b"[1, 2, 3]"})))
    assert missing == (grpc.StatusCode.INTERNAL, f"Model not found: nobody\n{ARCHIVE}ModelNotFoundException")
    version = await _code(stubs.predictions(REQUEST(model_name="echo", model_version="7", input={"data": b"[1]"})))
    details = f"Model version: 7 does not exist for model: echo\n{ARCHIVE}ModelVersionNotFoundException"
    assert version == (grpc.StatusCode.INTERNAL, details)
    bad = await _code(stubs.predictions(REQUEST(model_name="echo", input={"data": b"{oops"})))
    assert bad[0] is grpc.StatusCode.INVALID_ARGUMENT and "not JSON" in bad[1]
    assert bad[1].endswith("\norg.pytorch.serve.http.BadRequestException")
    shape = await _code(stubs.predictions(REQUEST(model_name="echo", input={"data": b"[1, 2]"})))
    assert shape[0] is grpc.StatusCode.INVALID_ARGUMENT
    unnamed = await _code(stubs.predictions(REQUEST(input={"data": b"[1, 2, 3]"})))
    assert unnamed == (grpc.StatusCode.INTERNAL, "Parameter model_name is required.\nBadRequestException.()")
    failing = await _code(stubs.predictions(REQUEST(model_name="failing", input={"data": b"[1, 2, 3]"})))
    assert failing[0] is grpc.StatusCode.UNAVAILABLE and "secret" not in failing[1]


async def test_the_streams_answer_each_request_in_order(stubs: Stubs) -> None:
    request = REQUEST(model_name="echo", input={"data": b"[1, 2, 3]"})
    assert [orjson.loads(r.prediction) for r in [r async for r in stubs.stream(request)]] == [
        {"y": [2.0, 4.0, 6.0], "n": 12.0}
    ]
    sent = [
        REQUEST(model_name="echo", input={"data": b"[1, 1, 1]"}, sequence_id="a"),
        REQUEST(model_name="nobody", input={"data": b"[1, 1, 1]"}, sequence_id="b"),
        REQUEST(model_name="echo", input={"data": b"[2, 2, 2]"}),
    ]
    answers = [r async for r in stubs.stream2(iter(sent))]
    assert not any(a.HasField("sequence_id") for a in answers)  # TorchServe 0.12 sends none back
    assert orjson.loads(answers[0].prediction)["n"] == 6.0
    assert answers[1].status.code == grpc.StatusCode.INTERNAL.value[0] and answers[1].prediction == b""
    assert answers[1].status.message.startswith("Model not found: nobody")
    assert orjson.loads(answers[2].prediction)["n"] == 12.0 and not answers[2].HasField("status")


async def test_predictions_take_the_inference_token_and_ping_is_open(repo: Any) -> None:
    settings = ServerSettings(repository=repo, api_key="secret-token", max_queue_delay_ms=0)
    data_plane = build(settings)
    await data_plane.start()
    try:
        async for stubs in _served(data_plane):
            request = REQUEST(model_name="echo", input={"data": b"[1, 2, 3]"})
            refused = await _code(stubs.predictions(request))
            assert refused[0] is grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                [r async for r in stubs.stream(request)]
            assert streamed.value.code() is grpc.StatusCode.UNAUTHENTICATED
            answer = await stubs.predictions(request, metadata=(("authorization", "Bearer secret-token"),))
            assert orjson.loads(answer.prediction)["n"] == 12.0
            assert orjson.loads((await stubs.ping(empty_pb2.Empty())).health) == {"status": "Healthy"}
    finally:
        await data_plane.close()


async def test_exported_and_processed_models_answer_what_the_http_api_answers(tmp_path: Any) -> None:
    """A plain ONNX export takes its tensor JSON in ``data``; a model with processors its payload (raw text)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    embedding, sentiment = export(repo, "emb"), add_sentiment(repo)
    data_plane = build(ServerSettings(repository=repo, max_queue_delay_ms=0))
    await data_plane.start()
    transport = httpx.ASGITransport(app=create_app(data_plane))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            async for stubs in _served(data_plane):
                cases = [
                    (embedding, b"[3, 1, 4]", "application/json"),
                    (embedding, b"[[1, 2], [5, 6]]", "application/json"),
                ]
                cases.append((sentiment, b"a great great movie", "text/plain"))
                for model, body, content_type in cases:
                    http = await client.post(
                        f"/predictions/{model}", content=body, headers={"content-type": content_type}
                    )
                    answer = await stubs.predictions(REQUEST(model_name=model, input={"data": body}))
                    assert http.status_code == 200, http.text
                    assert orjson.loads(answer.prediction) == http.json()
                first = orjson.loads(
                    (await stubs.predictions(REQUEST(model_name=embedding, input={"data": b"[3]"}))).prediction
                )
                assert first == [[12.0, 13.0, 14.0, 15.0]]  # ids 3 -> row 3 of the table
                bad = await _code(stubs.predictions(REQUEST(model_name=embedding, input={"data": b'["x"]'})))
                assert bad[0] is grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await data_plane.close()
