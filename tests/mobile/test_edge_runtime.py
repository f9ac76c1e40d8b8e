"""modelport_edge.py: checks on open, refusals with a clear message, prediction with normalization and labels."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from modelport.mobile.modelport_edge import BundleError, EdgeInputError, EdgeModel

pytestmark = [pytest.mark.tflite, pytest.mark.tf, pytest.mark.torch]


def _edge(bundle, *args):
    """Run the bundle's own copy of the runtime, as a device would."""
    command = [sys.executable, str(bundle / "modelport_edge.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def _copy(bundle, tmp_path):
    return shutil.copytree(bundle, tmp_path / bundle.name)


@pytest.mark.parametrize("variant", ["float32", "float16", "dynamic-int8", "full-int8", "ort"])
def test_every_variant_opens_and_classifies_raw_pixels(bundles, digits, variant):
    model = EdgeModel.open(bundles.keras, variant)
    data = np.load(digits.eval_nhwc)
    pixels = data["image"] * 16.0  # the bundle normalizes with mean 0, std 16
    best = [row[0][0] for row in model.top_k(pixels, k=3)]
    assert np.mean(np.array(best, dtype=int) == data["labels"]) > 0.9
    assert len(model.top_k(pixels[0])[0]) == 5, "one image without its batch dimension"


def test_static_batch_model_runs_any_batch_in_chunks(bundles, digits):
    model = EdgeModel.open(bundles.torch)
    images = np.load(digits.eval_nchw)["image"][:5]
    assert model.predict(images)["logits"].shape == (5, 10)
    assert model.check_golden()["top1_agreement"] == 1.0


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (np.zeros((1, 8, 8, 3), np.float32), r"shape \[1, 8, 8, 3\], expected \[-1, 8, 8, 1\]"),
        ({"pixels": np.zeros((1, 8, 8, 1))}, "unknown input 'pixels'"),
        (np.array([["a"]]), "dtype <U1"),
    ],
)
def test_bad_inputs_name_the_tensor_and_what_was_expected(bundles, inputs, message):
    model = EdgeModel.open(bundles.keras, verify=False)
    with pytest.raises(EdgeInputError, match=message):
        model.predict(inputs)


def test_a_corrupted_model_byte_is_refused(bundles, tmp_path):
    bundle = _copy(bundles.keras, tmp_path)
    path = bundle / "float16.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"float16.tflite is corrupted: sha256 .* copy the bundle again"):
        EdgeModel.open(bundle, "float16")
    EdgeModel.open(bundle, "float32")  # the other variants are intact
    done = _edge(bundle, "verify", str(bundle))
    assert done.returncode == 1 and "REFUSED: float16.tflite is corrupted" in done.stderr


def test_a_wrong_expected_output_is_refused(bundles, tmp_path):
    bundle = _copy(bundles.keras, tmp_path)
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["variants"]["full-int8"]["golden"][1]["expected"]["logits"]["data"][7] += 100.0
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"'full-int8' .* does not reproduce its expected outputs on this device"):
        EdgeModel.open(bundle, "full-int8")
    done = _edge(bundle, "verify", str(bundle))
    assert done.returncode == 1
    assert (
        "output 'logits' of golden case 1 differs by up to 100" in done.stderr and "refusing to run it" in done.stderr
    )


def test_an_edited_bundle_json_is_refused_where_no_golden_check_would_notice(bundles, tmp_path):
    bundle = _copy(bundles.keras, tmp_path)
    original = json.loads((bundle / "bundle.json").read_text())
    (bundle / "bundle.json").write_text(json.dumps(original, indent=4))  # formatting is not content
    EdgeModel.open(bundle, "float32")
    for edit in ("std", "labels", "tolerance"):
        manifest = json.loads(json.dumps(original))
        if edit == "std":  # predict() normalizes raw pixels with it; the golden inputs are normalized already
            manifest["inputs"][0]["std"] = [8.0]
        elif edit == "labels":
            manifest["labels"] = list(reversed(manifest["labels"]))
        else:
            manifest["variants"]["float16"]["tolerance"]["atol"] = 1.0
        (bundle / "bundle.json").write_text(json.dumps(manifest))
        with pytest.raises(BundleError, match=r"bundle\.json was edited after the bundle was built"):
            EdgeModel.open(bundle, "float16")
        done = _edge(bundle, "verify", str(bundle))
        assert done.returncode == 1 and "REFUSED: bundle.json was edited after the bundle was built" in done.stderr


def test_inconsistent_quantization_and_missing_files_are_refused(bundles, tmp_path):
    bundle = _copy(bundles.keras, tmp_path)
    manifest = json.loads((bundle / "bundle.json").read_text())
    (q,) = manifest["variants"]["full-int8"]["quantization"]["inputs"].values()
    q["scale"] *= 2
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"differs from bundle\.json") as refused:
        EdgeModel.open(bundle, "full-int8")
    assert "np.float32" not in str(refused.value), "the model's scale reads as a number"
    (bundle / "labels.txt").unlink()
    with pytest.raises(BundleError, match=r"labels\.txt is missing"):
        EdgeModel.open(bundle, "float32")
    with pytest.raises(BundleError, match="no variant 'int4'"):
        EdgeModel.open(bundle, "int4")
    with pytest.raises(BundleError, match="is not a modelport bundle"):
        EdgeModel.open(tmp_path)


def test_predict_command_prints_top_k_with_labels(bundles, digits, tmp_path):
    np.save(tmp_path / "x.npy", np.load(digits.eval_nhwc)["image"][:2] * 16.0)
    done = _edge(bundles.keras, "predict", str(bundles.keras), "--input", str(tmp_path / "x.npy"), "--top-k", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("0: ") and lines[0].count("(") == 2


def test_bench_prints_its_table_and_json_only_when_asked(bundles, tmp_path):
    args = ["bench", str(bundles.keras), "--variant", "float32", "--runs", "5"]
    done = _edge(bundles.keras, *args)
    assert done.returncode == 0, done.stderr
    title, header, rule, row = done.stdout.splitlines()  # nothing after the table
    assert header.startswith("variant ") and set(rule) == {"-", " "} and row.startswith("float32 ")
    piped = _edge(bundles.keras, *args, "--json")
    assert piped.returncode == 0, piped.stderr
    assert [r["variant"] for r in json.loads(piped.stdout)["variants"]] == ["float32"], "JSON only, for a pipe"
    saved = _edge(bundles.keras, *args, "--json", str(tmp_path / "bench.json"))
    assert saved.returncode == 0 and saved.stdout.splitlines()[:2] == [title, header], saved.stderr
    assert json.loads((tmp_path / "bench.json").read_text())["variants"][0]["runs"] == 5


def test_the_help_lists_the_public_commands_only():
    """``python modelport_edge.py --help`` on the device listed bench's own subprocess as '_bench-child
    ==SUPPRESS=='."""
    import subprocess
    import sys

    from modelport.mobile import modelport_edge

    done = subprocess.run(
        [sys.executable, modelport_edge.__file__, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "{verify,predict,bench}" in done.stdout
    assert "SUPPRESS" not in done.stdout and "_bench-child" not in done.stdout
