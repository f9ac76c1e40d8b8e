"""Processing travels with the model: image bundles classify images like the server and verify their raw samples."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelport.mobile import modelport_edge as edge
from modelport.mobile.report import render_bundle_table
from modelport.mobile.tflite_metadata import read_metadata

pytestmark = [pytest.mark.tflite, pytest.mark.tf, pytest.mark.torch, pytest.mark.slow]

# runs modelport_edge.py as the device would, with Pillow made unimportable
WITHOUT_PILLOW = (
    "import runpy, sys; sys.modules['PIL'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _bundle(path: Path) -> dict:
    return json.loads((path / "bundle.json").read_text())


def test_bundle_carries_resolved_processing_samples_and_their_checksums(image_bundles):
    for path, layout in ((image_bundles.torch, "NCHW"), (image_bundles.keras, "NHWC")):
        bundle = _bundle(path)
        [image] = bundle["processing"]["pre"]
        assert (image["input"], image["layout"], image["mode"], image["resize"]) == ("image", layout, "L", [8, 8])
        assert (image["interpolation"], image["mean"], image["std"]) == ("box", None, None)
        [topk] = bundle["processing"]["post"]
        assert (topk["kind"], topk["k"], topk["labels"], topk["activation"]) == ("topk", 3, "labels.txt", "softmax")
        files = [s["file"] for s in bundle["samples"]]
        assert len(files) == 8 and all(f.startswith("samples/") and f in bundle["files"] for f in files)
        assert "labels.txt" in bundle["files"]
        for variant in bundle["variants"].values():
            assert len(variant["samples"]) == 8
    for name, report in image_bundles.reports.items():
        assert all(r.end_to_end_p50_ms is not None and r.end_to_end_p50_ms > r.latency_p50_ms for r in report.rows)
        assert "image->label p50" in render_bundle_table(report), name


def test_classify_image_answers_like_the_server_on_every_variant(image_bundles):
    for path in (image_bundles.torch, image_bundles.keras):
        samples = _bundle(path)["samples"]
        for variant in _bundle(path)["variants"]:
            model = edge.EdgeModel.open(path, variant)  # checks the raw samples too (Pillow is here)
            for sample in samples:
                answer = model.classify_image(path / sample["file"], k=3)
                server = sample["response"]
                assert next(iter(answer)) == next(iter(server)), (path.name, variant, sample["file"])
                if variant == "float32":
                    assert list(answer) == list(server)
                    assert list(answer.values()) == pytest.approx(list(server.values()), abs=1e-5)
            data = (path / samples[0]["file"]).read_bytes()
            assert model.classify_image(data, k=1) == {next(iter(model.classify_image(data))): pytest.approx(1, abs=1)}
            assert len(model.classify_image(data, k=None)) == 3  # the bundle's own k


def test_the_samples_are_the_digits_they_are_named_after(image_bundles):
    model = edge.EdgeModel.open(image_bundles.torch, "full-int8")
    right = sum(next(iter(model.classify_image(p))) == p.stem.split("-")[3] for p in image_bundles.samples)
    assert right >= 7, f"{right}/8 held-out digits recognized from their PNG files"


def test_keras_metadata_carries_the_image_steps_pixel_normalization(image_bundles):
    metadata = read_metadata((image_bundles.keras / "float32.tflite").read_bytes())
    assert metadata is not None
    [tensor] = metadata.inputs
    assert (tensor.content, tensor.color_space, tensor.mean, tensor.std) == ("image", "GRAYSCALE", (0.0,), (255.0,))


@pytest.mark.parametrize(
    ("field", "value"),
    [("mean", [0.1]), ("interpolation", "bilinear"), ("scale", 1 / 256), ("layout", "NHWC"), ("mode", "RGB")],
    ids=["mean", "resize filter", "scale", "layout", "colour mode"],
)
def test_a_tampered_processing_parameter_is_refused_naming_the_sample(image_bundles, tmp_path, capsys, field, value):
    bundle = shutil.copytree(image_bundles.torch, tmp_path / "digits")
    data = _bundle(bundle)
    data["processing"]["pre"][0][field] = value
    if field == "mean":
        data["processing"]["pre"][0]["std"] = [1.0]
    (bundle / "bundle.json").write_text(json.dumps(data))
    assert edge.main(["verify", str(bundle)]) == 1
    err = capsys.readouterr().err
    assert "REFUSED" in err and "raw sample samples/" in err and "image processing does not match" in err
    if field == "interpolation":  # the 8x8 samples are not resized: only the 32x32 ones catch it
        assert "-32px.png" in err
    if field in ("layout", "mode"):  # LiteRT would resize the model's input to the wrong tensor and run it
        wrong = "[1, 8, 8, 1]" if field == "layout" else "[1, 3, 8, 8]"
        assert f"input 'image' has shape {wrong}, but variant 'float32' takes [1, 1, 8, 8]" in err
    # a 1/256 scale moves the logits less than int8's tolerance: the float variants catch it
    with pytest.raises(edge.BundleError, match="raw sample samples/"):
        edge.EdgeModel.open(bundle, "float32" if field == "scale" else "full-int8")


def test_predict_image_prints_the_servers_response(image_bundles, capsys):
    sample = _bundle(image_bundles.keras)["samples"][0]
    args = ["predict", str(image_bundles.keras), "--image", str(image_bundles.keras / sample["file"]), "-k", "2"]
    assert edge.main(args) == 0
    answer = json.loads(capsys.readouterr().out)
    assert list(answer) == list(sample["response"])[:2]
    assert edge.main(args[:-2]) == 0  # without -k: the bundle's own top-k step (k: 3)
    assert json.loads(capsys.readouterr().out) == pytest.approx(sample["response"], abs=1e-5)


def test_without_pillow_images_say_so_and_verify_checks_the_numbers(image_bundles, tmp_path):
    runtime = str(image_bundles.torch / "modelport_edge.py")
    run = [sys.executable, "-c", WITHOUT_PILLOW, runtime]
    verified = subprocess.run([*run, "verify", str(image_bundles.torch)], capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.count("golden cases") == 4
    assert "raw samples not checked: Pillow is not installed" in verified.stdout
    image = str(image_bundles.samples[0])
    predicted = subprocess.run(
        [*run, "predict", str(image_bundles.torch), "--image", image], capture_output=True, text=True, check=False
    )
    assert predicted.returncode == 2
    assert "decoding images needs Pillow: pip install pillow" in predicted.stderr


def test_a_bundle_without_processing_still_opens_and_says_why_it_cannot_classify_images(bundles, image_bundles):
    assert "processing" not in _bundle(bundles.torch) and "samples" not in _bundle(bundles.torch)
    model = edge.EdgeModel.open(bundles.torch)
    with pytest.raises(edge.EdgeInputError, match="the bundle has no image processing"):
        model.classify_image(image_bundles.samples[0])


def test_bench_times_image_processing_next_to_the_model(image_bundles, tmp_path, capsys):
    report = tmp_path / "bench.json"
    args = ["bench", str(image_bundles.keras), "--variant", "float32,full-int8", "--runs", "20", "--json", str(report)]
    assert edge.main(args) == 0
    assert "image->tensor p50" in capsys.readouterr().out
    for row in json.loads(report.read_text())["variants"]:
        assert 0 < row["pre_p50_ms"] < row["e2e_p50_ms"]


def test_a_variant_missing_its_sample_answers_is_refused(image_bundles, tmp_path, capsys):
    bundle = shutil.copytree(image_bundles.keras, tmp_path / "kdigits")
    data = _bundle(bundle)
    data["variants"]["float16"]["samples"].pop()
    (bundle / "bundle.json").write_text(json.dumps(data))
    assert edge.main(["verify", str(bundle), "--variant", "float16"]) == 1
    assert "records 7 raw-sample answers for 8 samples" in capsys.readouterr().err
