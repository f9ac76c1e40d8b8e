"""``modelport loadtest --data DIR``: files (images, texts) sent in each protocol's shape to a model with processors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport.errors import InvalidArgumentError
from modelport.loadtest.options import LoadTestOptions
from modelport.loadtest.runner import prepare
from tests.serving.applications import add_colors, add_sentiment
from tests.serving.processes import Served, serving
from tests.serving.test_applications import BLUE, RED, solid


@pytest.fixture(scope="module")
def files_server(tmp_path_factory) -> Iterator[tuple[Served, Path]]:
    root = tmp_path_factory.mktemp("loadfiles")
    repo = root / "repo"
    repo.mkdir()
    add_colors(repo)
    add_sentiment(repo)
    images = root / "images"
    images.mkdir()
    (images / "red.png").write_bytes(solid(RED))
    (images / "blue.jpg").write_bytes(solid(BLUE, fmt="JPEG"))
    texts = root / "texts"
    texts.mkdir()
    (texts / "one.txt").write_text("the cat sat on the mat")
    (texts / "two.txt").write_text("a bird sang in the tree")
    with serving(repo, timeout=120) as served:
        yield served, root


@pytest.mark.parametrize("protocol", ["v2", "v2-binary", "v2-grpc", "tfserving", "torchserve"])
@pytest.mark.parametrize(("model", "folder"), [("colors-onnx", "images"), ("sentiment-onnx", "texts")])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_each_protocol_sends_files_the_model_accepts(files_server, tmp_path, protocol, model, folder, batch_size):
    served, root = files_server
    url = served.grpc if protocol == "v2-grpc" else served.url
    options = LoadTestOptions(
        url, model, protocol=protocol, data=str(root / folder), batch_size=batch_size, out=tmp_path, samples=4
    )
    prepared = prepare(options)  # sends the first request and fails unless the server answered it with a success
    assert prepared.samples == 2


def test_files_need_a_model_that_takes_payloads(files_server, tmp_path):
    served, _ = files_server
    options = LoadTestOptions(served.url, "colors-onnx", data=str(tmp_path), out=tmp_path / "out")
    with pytest.raises(InvalidArgumentError, match="no files"):
        prepare(options)


@pytest.mark.parametrize(("protocol", "model"), [("v2", "colors-onnx"), ("torchserve", "colors-onnx")])
def test_random_bytes_to_a_model_that_takes_files_say_to_give_data(files_server, tmp_path, protocol, model):
    served, _ = files_server
    options = LoadTestOptions(served.url, model, protocol=protocol, out=tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"not an image .*give --data DIR, a directory of files"):
        prepare(options)


def test_a_file_that_is_no_npz_says_to_give_its_directory(files_server, tmp_path):
    served, root = files_server
    image = root / "images" / "red.png"
    options = LoadTestOptions(served.url, "colors-onnx", data=str(image), out=tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"not an \.npz; to send files .* give their directory"):
        prepare(options)
    missing = LoadTestOptions(served.url, "colors-onnx", data=str(root / "nope"), out=tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"an existing \.npz file or a directory of files"):
        prepare(missing)
