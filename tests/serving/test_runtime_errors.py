"""Each runtime tells a request's bad values (an id past an embedding table) from a model fault.

The first is a ``RejectedInputError`` (a 400) whose message keeps what the framework said about the
values and drops its internals (node names, source paths); anything else propagates unchanged, and the
batcher turns it into a generic 500 with the traceback logged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelport.errors import RejectedInputError
from modelport.manifest import ModelManifest, SourceInfo, TensorSpec
from modelport.runtimes.base import RuntimeOptions, rejected_input
from modelport.runtimes.onnx import OnnxRuntime, status_message
from modelport.runtimes.savedmodel import op_message
from modelport.runtimes.torch import index_fault
from modelport.serving.errors import grpc_status, http_status, public_message
from tests.serving import embedding

GOOD = np.array([[1, 2, 3, 4]], dtype=np.int64)
BAD = np.array([[1, 2, 3, 5000]], dtype=np.int64)


def _manifest(fmt: str, artifact: str) -> ModelManifest:
    return ModelManifest(
        name="emb",
        version=1,
        family="emb",
        variant=fmt,
        format=fmt,
        artifact=artifact,
        inputs=(TensorSpec(name="ids", dtype="int64", shape=(-1, -1)),),
        outputs=(TensorSpec(name="emb", dtype="float32", shape=(-1, -1, embedding.WIDTH)),),
        max_batch_size=8,
        source=SourceInfo(framework="onnx", kind="file", location="test"),
    )


def _expect_rejected(runtime, says: str) -> None:
    assert np.array_equal(runtime.predict({"ids": GOOD})["emb"], embedding.table()[GOOD])
    with pytest.raises(RejectedInputError) as info:
        runtime.predict({"ids": BAD})
    assert info.value.message == f"the model rejected the input values: {says}"


def test_a_rejected_input_is_a_400_that_says_why():
    error = rejected_input("idx=5000 must be\n within   the range\t[0, 999]" + "x" * 300)
    assert http_status(error) == 400 and grpc_status(error) == "INVALID_ARGUMENT"
    assert public_message(error).startswith("the model rejected the input values: idx=5000 must be within the range")
    assert len(error.message) < 250 and error.message.endswith("...")


def test_onnxruntime_index_out_of_bounds_is_rejected_input_without_the_node_name(tmp_path: Path):
    embedding.write_onnx(tmp_path / "model.onnx")
    runtime = OnnxRuntime(tmp_path, _manifest("onnx", "model.onnx"), RuntimeOptions())
    runtime.load()
    _expect_rejected(
        runtime, "indices element out of data bounds, idx=5000 must be within the inclusive range [-1000,999]"
    )


def test_other_onnxruntime_failures_are_not_the_request_s_fault(tmp_path: Path):
    from onnx import TensorProto, helper, numpy_helper, save

    shape = numpy_helper.from_array(np.array([2, 2], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["ids", "shape"], ["emb"])],
        "reshape",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("emb", TensorProto.INT64, [2, 2])],
        [shape],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "model.onnx"))
    runtime = OnnxRuntime(tmp_path, _manifest("onnx", "model.onnx"), RuntimeOptions())
    runtime.load()
    with pytest.raises(Exception, match="FAIL") as info:  # onnxruntime's own Fail: a model fault, a 500
        runtime.predict({"ids": np.zeros((1, 3), dtype=np.int64)})
    assert not isinstance(info.value, RejectedInputError)


def test_onnxruntime_status_messages_lose_their_prefix_and_node_name():
    text = (
        "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running Gather node. "
        "Name:'/encoder/embed/Gather' Status Message: indices element out of data bounds, idx=7"
    )
    assert status_message(text).strip() == "indices element out of data bounds, idx=7"
    feed = "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: ids"
    assert status_message(feed).strip() == "Got invalid dimensions for input: ids"


def test_torch_index_errors_keep_only_the_op_s_own_line():
    scripted = RuntimeError(
        "The following operation failed in the TorchScript interpreter.\n"
        'File "code/__torch__/torch/nn/modules/sparse.py", line 10, in forward\n'
        "    return torch.embedding(weight, ids)\n\nRuntimeError: index out of range in self\n"
    )
    assert index_fault(scripted) == "index out of range in self"
    assert index_fault(IndexError("index 5 is out of bounds for dimension 0 with size 3")) is not None
    assert index_fault(RuntimeError("mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6)")) is None
    assert index_fault(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")) is None


def test_tensorflow_op_errors_keep_only_the_values_line():
    graph = (
        "Graph execution error:\n\nDetected at node Gather defined at (most recent call last):\n"
        '  File "/srv/app/model.py", line 3, in serve\n<stack traces unavailable>\n'
        "indices[0,3] = 5000 is not in [0, 1000)\n\t [[{{node Gather}}]] [Op:__inference_signature_wrapper_94]"
    )
    assert op_message(graph) == "indices[0,3] = 5000 is not in [0, 1000)"
    eager = (
        "{{function_node __wrapped__GatherV2_device_/job:localhost/CPU:0}} "
        "indices[0,3] = 5000 is not in [0, 1000) [Op:GatherV2] name: "
    )
    assert op_message(eager) == "indices[0,3] = 5000 is not in [0, 1000)"


def _torch_embedding():
    import torch

    module = torch.nn.Embedding(embedding.VOCAB, embedding.WIDTH)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(embedding.table()))
    return torch, module.eval()


@pytest.mark.torch
@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_torch_index_out_of_range_is_rejected_input(tmp_path: Path, fmt: str):
    from modelport.runtimes.torch import ExportedProgramRuntime, TorchScriptRuntime

    torch, module = _torch_embedding()
    example = (torch.from_numpy(GOOD),)
    if fmt == "torchscript":
        torch.jit.save(torch.jit.trace(module, example), str(tmp_path / "model.pt"))
        runtime = TorchScriptRuntime(tmp_path, _manifest(fmt, "model.pt"), RuntimeOptions())
    else:
        torch.export.save(torch.export.export(module, example), str(tmp_path / "model.pt2"))
        runtime = ExportedProgramRuntime(tmp_path, _manifest(fmt, "model.pt2"), RuntimeOptions())
    runtime.load()
    _expect_rejected(runtime, "index out of range in self")


def _tf_embedding(directory: Path) -> None:
    import tensorflow as tf

    class Embedding(tf.Module):
        def __init__(self) -> None:
            self.table = tf.Variable(embedding.table())

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64, name="ids")])
        def serve(self, ids):
            return {"emb": tf.gather(self.table, ids)}

    model = Embedding()
    tf.saved_model.save(model, str(directory), signatures={"serving_default": model.serve})


@pytest.mark.tf
def test_tensorflow_invalid_argument_is_rejected_input(tmp_path: Path):
    from modelport.runtimes.savedmodel import SavedModelRuntime

    _tf_embedding(tmp_path)
    runtime = SavedModelRuntime(tmp_path, _manifest("savedmodel", "saved_model.pb"), RuntimeOptions())
    runtime.load()
    _expect_rejected(runtime, "indices[0,3] = 5000 is not in [0, 1000)")


@pytest.mark.tf
@pytest.mark.tflite
def test_litert_gather_out_of_bounds_is_rejected_input(tmp_path: Path):
    import tensorflow as tf

    from modelport.runtimes.tflite import TFLiteRuntime

    _tf_embedding(tmp_path / "saved")
    (tmp_path / "model.tflite").write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved")).convert())
    runtime = TFLiteRuntime(tmp_path, _manifest("tflite", "model.tflite"), RuntimeOptions())
    runtime.load()
    _expect_rejected(runtime, "gather index out of bounds")


@pytest.mark.torch
def test_an_input_too_short_for_a_torchscript_conv_is_rejected_input(tmp_path: Path):
    """A dynamic length shorter than a conv's kernel: onnxruntime and a torch.export program's guards answer
    such an input with a 400; TorchScript's RuntimeError was a 500 "internal server error"."""
    import torch

    from modelport.runtimes.torch import TorchScriptRuntime, size_fault

    torch.manual_seed(0)
    conv = torch.nn.Conv1d(1, 2, 40, stride=8).eval()
    torch.jit.trace(conv, torch.zeros(1, 1, 100)).save(str(tmp_path / "model.pt"))
    manifest = _manifest("torchscript", "model.pt").model_copy(
        update={
            "inputs": (TensorSpec(name="wave", dtype="float32", shape=(-1, 1, -1)),),
            "outputs": (TensorSpec(name="features", dtype="float32", shape=(-1, 2, -1)),),
        }
    )
    runtime = TorchScriptRuntime(tmp_path, manifest, RuntimeOptions())
    runtime.load()
    wave = np.ones((1, 1, 64), dtype=np.float32)
    assert runtime.predict({"wave": wave})["features"].shape == (1, 2, 4)
    with pytest.raises(RejectedInputError) as info:
        runtime.predict({"wave": wave[:, :, :10]})
    assert info.value.message.startswith("the model rejected the input values: Calculated padded input size per")
    assert "Kernel size can't be greater than actual input size" in info.value.message
    assert size_fault(RuntimeError("mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6)")) is None
