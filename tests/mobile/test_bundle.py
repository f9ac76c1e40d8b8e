"""``modelport bundle``: files, bundle.json, the zip, the report, and clear errors for bad arguments."""

from __future__ import annotations

import json
import zipfile

import pytest
from PIL import Image

from modelport.cli import main
from modelport.manifest import file_sha256
from modelport.mobile.options import parse_variants
from modelport.mobile.report import render_bundle_table
from modelport.processing.labels import read_labels
from tests.export import keras_kinds
from tests.mobile.conftest import PROCESSORS
from tests.user_cli import run_modelport

pytestmark = [pytest.mark.tflite, pytest.mark.tf, pytest.mark.torch]


def test_keras_bundle_holds_every_variant_with_its_checks(bundles, digits_repo):
    bundle = json.loads((bundles.keras / "bundle.json").read_text())
    assert list(bundle["variants"]) == ["float32", "float16", "dynamic-int8", "full-int8", "ort"]
    assert bundle["inputs"] == [
        {"name": "image", "dtype": "float32", "shape": [-1, 8, 8, 1], "layout": "NHWC", "mean": [0.0], "std": [16.0]}
    ]
    assert bundle["outputs"] == [
        {"name": "logits", "dtype": "float32", "shape": [-1, 10], "classifier": True, "labels": "labels.txt"}
    ]
    assert bundle["labels"] == [str(i) for i in range(10)]
    assert bundle["source"]["framework"] == "tf" and len(bundle["source"]["sha256"]) == 64
    assert {"modelport", "ai-edge-litert", "numpy", "flatbuffers"} <= set(bundle["tools"])
    files = {p.name for p in bundles.keras.iterdir()} - {"bundle.json"}
    assert set(bundle["files"]) == files
    assert all(file_sha256(bundles.keras / name) == sha for name, sha in bundle["files"].items())
    full = bundle["variants"]["full-int8"]
    for kind in ("inputs", "outputs"):
        (q,) = full["quantization"][kind].values()
        assert q["dtype"] == "int8" and q["scale"] > 0 and -128 <= q["zero_point"] <= 127
    assert not bundle["variants"]["float32"]["quantization"]["inputs"]
    for name, variant in bundle["variants"].items():
        assert [len(c["inputs"]["image"]["data"]) for c in variant["golden"]] == [64, 192], name
        assert variant["tolerance"]["atol"] > 0 and variant["accuracy"] > 0.9 and variant["eval_samples"] == 450
    with zipfile.ZipFile(bundles.keras.with_suffix(".zip")) as archive:
        names = {n for n in archive.namelist() if not n.endswith("/")}
        assert {f"kdigits/{name}" for name in [*files, "bundle.json"]} == names


def test_report_rows_and_table(bundles):
    rows = {r.variant: r for r in bundles.keras_report.rows}
    assert list(rows) == ["float32", "float16", "dynamic-int8", "full-int8", "ort"]
    assert rows["float32"].source_max_abs_error < 1e-4
    assert rows["full-int8"].size_bytes < rows["float32"].size_bytes / 2
    assert all(r.accuracy and r.accuracy > 0.9 and r.latency_p50_ms > 0 for r in rows.values())
    assert all(r.top1_agreement is None or r.top1_agreement >= 0.99 for r in rows.values())
    table = render_bundle_table(bundles.keras_report)
    assert "full-int8.tflite" in table and "(n=450)" in table and "kdigits.zip" in table


def test_torch_bundle_has_the_litert_torch_variants(bundles):
    """float32 from litert-torch and its AI Edge Quantizer variants, bundled like the Keras ones."""
    bundle = json.loads((bundles.torch / "bundle.json").read_text())
    assert list(bundle["variants"]) == ["float32", "float16", "dynamic-int8", "full-int8"]
    for name, variant in bundle["variants"].items():
        assert variant["inputs"][0]["shape"] == [1, 1, 8, 8] and variant["inputs"][0]["layout"] == "NCHW", name
        assert "litert_torch" in variant["converter"], name
        assert variant["accuracy"] > 0.95 and variant["eval_samples"] == 450, name
    for kind in ("inputs", "outputs"):
        (q,) = bundle["variants"]["full-int8"]["quantization"][kind].values()
        assert q["dtype"] == "int8" and q["scale"] > 0
    rows = {r.variant: r for r in bundles.torch_report.rows}
    assert list(rows) == ["float32", "float16", "dynamic-int8", "full-int8"]
    assert all(r.top1_agreement is None or r.top1_agreement >= 0.99 for r in rows.values())


def test_cli_bundles_one_version_and_prints_the_table(digits_repo, tmp_path, capsys):
    out = tmp_path / "b.zip"
    code = main(["bundle", str(digits_repo.root / "kdigits-tflite-float16" / "1"), "--out", str(out)])
    code |= main(["bundle", str(digits_repo.root / "kdigits" / "1"), "--out", str(out), "--variants", "int8"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "float16.tflite" in printed and "dynamic-int8.tflite" in printed
    assert json.loads((tmp_path / "b" / "bundle.json").read_text())["default_variant"] == "dynamic-int8"
    assert (tmp_path / "b.zip").is_file()


def test_a_failed_rebuild_leaves_the_bundle_that_was_there(digits_repo, tmp_path, capsys):
    """A build into an existing bundle that fails (here: a labels file of the wrong size) deleted the bundle's
    directory and left its zip, so the zip no longer matched anything and the device copy was gone."""
    out = tmp_path / "b"
    assert main(["bundle", str(digits_repo.root / "kdigits-tflite-float16" / "1"), "--out", str(out), "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    args = ["--out", str(out), "--labels", str(tmp_path / "three.txt"), "--quiet"]
    assert main(["bundle", str(digits_repo.root / "kdigits-tflite-float16" / "1"), *args]) == 2
    assert "has 3 labels" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "b.zip", "three.txt"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["{repo}/kdigits", "--variants", "float64"], 2, "unknown bundle variant 'float64'"),
        (["{repo}/digits/2", "--variants", "float16"], 1, "--format tflite --quantize float16 --repository"),
        (["{repo}/nothing"], 1, "holds no TFLite model of 'nothing'"),
        (["{repo}/kdigits", "--mean", "0"], 2, "--mean and --std go together"),
        (["{repo}/kdigits", "--mean", "0,0", "--std", "1,1"], 2, "has 1 channels"),
        (["{repo}/kdigits", "--labels", "{tmp}/missing.txt"], 1, "labels file"),
        (["{repo}/kdigits", "--labels", "{tmp}/three.txt"], 2, "has 3 labels but output 'logits' has 10 classes"),
    ],
)
def test_cli_errors_are_one_clear_line(digits_repo, tmp_path, capsys, args, code, message):
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    argv = [a.format(repo=digits_repo.root, tmp=tmp_path) for a in args]
    assert main(["bundle", *argv, "--out", str(tmp_path / "out"), "--quiet"]) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_blank_line_in_labels_txt_names_its_class_by_number_as_the_server_does(digits_repo, tmp_path):
    names = [f"digit {i}" for i in range(10)]
    names[3] = "  "  # line 3 names class 3 (blank): no line is dropped, so classes 4..9 keep their names
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n\n")
    out = tmp_path / "b"
    assert (
        main(
            [
                "bundle",
                str(digits_repo.root / "kdigits"),
                "--labels",
                str(tmp_path / "labels.txt"),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    bundled = json.loads((out / "bundle.json").read_text())["labels"]
    server = read_labels(tmp_path / "labels.txt")
    assert bundled == [server(i) for i in range(10)]
    assert bundled[3] == "3" and bundled[4] == "digit 4" and bundled[9] == "digit 9"


def test_out_must_not_be_an_unrelated_directory(digits_repo, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["bundle", str(digits_repo.root / "kdigits"), "--out", str(tmp_path), "--quiet"]) == 2
    assert "not a bundle" in capsys.readouterr().err and (tmp_path / "keep.txt").exists()


def test_variant_names_and_aliases():
    assert parse_variants("fp32, int8,float16,int8") == ("float32", "dynamic-int8", "float16")


def test_bundle_of_a_rejected_variant_says_it_was_rejected(tmp_path):
    keras_kinds.tied_logits().save(tmp_path / "tied.keras")
    args = ["export", "tied.keras", "--format", "tflite", "--quantize", "full-int8", "--repository", "repo"]
    assert run_modelport(*args, "--name", "tied", "--quiet", cwd=tmp_path).returncode == 1
    done = run_modelport("bundle", "repo/tied", "--variants", "full-int8", "--out", "b", "--quiet", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    error = done.stderr.splitlines()[-1]
    assert error.startswith(
        "modelport bundle: error: tied version 1 has no full-int8 variant in repo (it has: float32): "
        "tied-tflite-full-int8 version 1 was rejected by its parity gate: output 'logits' top-1 agreement "
    ), error
    assert "kept in repo/.rejected/tied-tflite-full-int8/1, not served" in error
    assert "--min-agreement 0." in error and error.endswith("or --allow-mismatch")
    assert "--quantize full-int8" not in error  # not the very export that was just rejected
    done = run_modelport("bundle", "repo/tied", "--out", "b", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr  # the published float32 variant still bundles
    assert done.stderr == ""  # --quiet: not even LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate"


def test_processors_that_do_not_make_the_models_input_are_one_line_and_leave_no_half_built_bundle(
    digits_repo, tmp_path, capsys
):
    """The digits CNN takes 1x1x8x8: a 4x4 image step is refused by name (LiteRT resized its input to it and
    crashed in C++), and the --out it started is removed, so the fixed command can reuse it."""
    (tmp_path / "small.yaml").write_text("processors:\n  pre: [{kind: image, mode: L, resize: [4, 4]}]\n")
    digit = tmp_path / "digit.png"
    Image.new("L", (8, 8), 128).save(digit)
    bundle = ["bundle", str(digits_repo.root / "digits"), "--sample", str(digit), "--out", str(tmp_path / "b")]
    assert main([*bundle, "--processors", str(tmp_path / "small.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "the processors make input 'image' of shape 1x1x4x4, but digits-tflite takes" in err
    assert not (tmp_path / "b").exists()
    assert main([*bundle, "--processors", str(PROCESSORS), "--variants", "float32", "--quiet"]) == 0


@pytest.mark.parametrize(
    ("model", "step", "hint"),
    [
        ("kdigits", "{kind: image, resize: [8, 8]}", "the model takes 1-channel images: set mode: L"),
        ("kdigits", "{kind: image, mode: L, resize: [8, 8], layout: NCHW}", "input is NHWC: set layout: NHWC"),
        ("digits", "{kind: image, mode: L, resize: [4, 8]}", "takes 8x8 images (height x width): resize"),
        ("digits", "{kind: image, mode: L, resize: 16, center_crop: [8, 4]}", "to [8, 8]"),
    ],
)
def test_an_image_step_that_fixes_a_size_the_model_cannot_take_is_refused_without_samples(
    digits_repo, tmp_path, capsys, model, step, hint
):
    """Without --sample such a bundle was built, and every image failed on the device; the message says what to set."""
    (tmp_path / "p.yaml").write_text(f"pre: [{step}]\n")
    bundle = ["bundle", str(digits_repo.root / model), "--out", str(tmp_path / "b"), "--quiet"]
    assert main([*bundle, "--processors", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modelport bundle: error: image step: the processors make input 'image' of shape "), err
    assert hint in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("processors:\n  pre: [{kind: image, mode: XYZ}]\n", "processors.pre.0.image.mode"),
        ("pre: [{kind: image, resize: -1}]\n", "pre.0.image.resize"),
    ],
)
def test_invalid_processors_are_one_line_naming_the_place_as_the_server_does(tmp_path, text, where):
    """It was pydantic's multi-line report ending in 'For further information visit https://errors.pydantic.dev'."""
    from modelport.errors import InvalidArgumentError
    from modelport.mobile.options import BundleOptions
    from modelport.mobile.samples import declared_processing

    (tmp_path / "processors.yaml").write_text(text)
    options = BundleOptions(tmp_path / "repo" / "m", tmp_path / "out", processors=tmp_path / "processors.yaml")
    with pytest.raises(InvalidArgumentError) as refused:
        declared_processing(options, None)  # type: ignore[arg-type]  # --processors FILE: the source is not read
    assert str(refused.value).startswith(f"{tmp_path / 'processors.yaml'}: invalid at {where}: ")
    assert "\n" not in str(refused.value) and "pydantic" not in str(refused.value)


def test_a_labels_file_the_server_reads_may_name_fewer_classes_but_not_a_given_one(tmp_path):
    """The server answers the classes a version's labels.txt leaves out by their index; the bundle refused the model
    ('has 4 labels but output has 6 classes'). ``--labels FILE``, given for the bundle alone, must still fit."""
    from modelport.errors import InvalidArgumentError
    from modelport.manifest import ModelManifest, SourceInfo, TensorSpec
    from modelport.mobile.describe import read_labels as bundle_labels
    from modelport.mobile.options import BundleOptions

    manifest = ModelManifest(
        name="m-tflite",
        version=1,
        family="m",
        variant="tflite",
        format="tflite",
        artifact="model.tflite",
        inputs=(TensorSpec(name="x", dtype="float32", shape=(-1, 4)),),
        outputs=(TensorSpec(name="probs", dtype="float32", shape=(-1, 6)),),
        source=SourceInfo(framework="tf", kind="factory", location="m.py:f", sha256="ab" * 32),
    )
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\nfish\n")
    options = BundleOptions(tmp_path / "repo" / "m", tmp_path / "out")
    served = bundle_labels(options, manifest, tmp_path, tmp_path / "labels.txt")
    assert served == ["cat", "dog", "bird", "fish", "4", "5"]
    assert served == [read_labels(tmp_path / "labels.txt")(i) for i in range(6)]  # the server's names
    given = BundleOptions(tmp_path / "repo" / "m", tmp_path / "out", labels=tmp_path / "labels.txt")
    with pytest.raises(InvalidArgumentError, match="has 4 labels but output 'probs' has 6 classes"):
        bundle_labels(given, manifest, tmp_path)
