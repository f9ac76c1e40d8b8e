"""The TorchServe adapter without Java: its config.properties, and a TorchServe that exits before it is ready."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelport.errors import ModelportError
from modelport.torchserve_process import (
    TorchServeOptions,
    TorchServePorts,
    archive,
    config_properties,
    running_torchserve,
)

PORTS = TorchServePorts(8101, 8102, 8103, 8104, 8105)


def test_config_serves_one_archive_on_its_own_ports_with_one_worker(tmp_path: Path) -> None:
    options = TorchServeOptions(batch_size=8, max_batch_delay_ms=2, response_timeout_s=30, max_message_bytes=1024)
    properties = config_properties(tmp_path / "store" / "digits.mar", PORTS, options)
    assert properties["inference_address"] == "http://127.0.0.1:8101"
    assert properties["management_address"] == "http://127.0.0.1:8102"
    assert properties["metrics_address"] == "http://127.0.0.1:8103"
    assert (properties["grpc_inference_address"], properties["grpc_inference_port"]) == ("127.0.0.1", "8104")
    assert (properties["grpc_management_address"], properties["grpc_management_port"]) == ("127.0.0.1", "8105")
    assert properties["model_store"] == str(tmp_path / "store")
    assert properties["load_models"] == "digits.mar"
    assert properties["disable_token_authorization"] == "true"
    assert properties["max_request_size"] == properties["max_response_size"] == "1024"
    model = json.loads(properties["models"])["digits"]["1.0"]
    assert model["marName"] == "digits.mar"
    assert (model["minWorkers"], model["maxWorkers"]) == (1, 1)
    assert (model["batchSize"], model["maxBatchDelay"], model["responseTimeout"]) == (8, 2, 30)


def test_config_takes_a_no_archive_folder_by_its_name(tmp_path: Path) -> None:
    properties = config_properties(tmp_path / "store" / "mlp", PORTS, TorchServeOptions())
    assert properties["load_models"] == "mlp"
    assert json.loads(properties["models"])["mlp"]["1.0"]["marName"] == "mlp"


def test_free_ports_are_five_distinct_ports() -> None:
    assert len(set(TorchServePorts.free())) == 5


def test_a_torchserve_that_exits_fails_the_start_with_its_log_and_leaves_its_files(tmp_path: Path) -> None:
    options = TorchServeOptions(command_prefix=("false",), timeout_s=30)  # ``false torchserve ...`` exits 1
    with (
        pytest.raises(ModelportError, match="TorchServe exited with 1"),
        running_torchserve(tmp_path / "store" / "digits.mar", tmp_path / "ts", options),
    ):
        pytest.fail("it cannot be ready")
    assert (tmp_path / "ts" / "tmp").is_dir()  # its own TMPDIR, where TorchServe keeps its pid file
    assert "load_models=digits.mar" in (tmp_path / "ts" / "config.properties").read_text()


def test_relative_paths_reach_torchserve_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # TorchServe runs in its work folder: a relative TEMP there is "Invalid temp directory", a relative store is lost
    monkeypatch.chdir(tmp_path)
    record = 'echo "$TMPDIR $*" > "$TMPDIR/../seen"; exit 1'  # what TorchServe would have been started with
    options = TorchServeOptions(command_prefix=("sh", "-c", record, "sh"), timeout_s=30)
    with pytest.raises(ModelportError), running_torchserve(Path("store/digits.mar"), Path("ts"), options):
        pytest.fail("it cannot be ready")
    temp, *command = (tmp_path / "ts" / "seen").read_text().split()
    assert temp == str(tmp_path / "ts" / "tmp")
    assert command[command.index("--model-store") + 1] == str(tmp_path / "store")
    assert command[command.index("--ts-config") + 1] == str(tmp_path / "ts" / "config.properties")


@pytest.mark.torchserve
def test_archive_packs_the_extra_files_beside_the_model_and_handler(tmp_path: Path) -> None:
    model, handler, labels = tmp_path / "model.pt", tmp_path / "handler.py", tmp_path / "index_to_name.json"
    model.write_bytes(b"weights")
    handler.write_text("def handle(data, context):\n    return data\n")
    labels.write_text('{"0": "cat"}')
    folder = archive(model, handler, "pets", tmp_path / "store", directory=True, extra_files=[labels])
    assert folder == tmp_path / "store" / "pets"
    assert {p.name for p in folder.iterdir()} >= {"model.pt", "handler.py", "index_to_name.json", "MAR-INF"}
    assert json.loads((folder / "index_to_name.json").read_text()) == {"0": "cat"}
