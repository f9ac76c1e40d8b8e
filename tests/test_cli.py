"""The CLI: one-line errors with the right exit code, never a traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile

import httpx
import pytest

from modelport.cli import main
from tests.export import keras_kinds
from tests.loadtest.conftest import modelport_in
from tests.serving.processes import free_port, wait_until
from tests.user_cli import FRAMEWORK_LOG_VARIABLES, ROOT, run_modelport


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _export(tmp_path, source: str, *extra: str) -> list[str]:
    return ["export", source, "--repository", str(tmp_path / "repo"), "--name", "m", "--quiet", *extra]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--format", "caffe"], 2, "unknown format 'caffe'"),
        (["--format", "savedmodel"], 2, "format 'savedmodel' does not apply to a PyTorch source"),
        (["--quantize", "int4"], 2, "unknown quantization 'int4'"),
        (["--format", "onnx", "--quantize", "float16"], 2, "--quantize float16 applies to tflite"),
        (["--input", "x:float32"], 2, "does not parse"),
        (["--input", "x:complex:1x4"], 2, "unknown data type 'complex'"),
        (["--input", "y:float32:-1x4"], 2, "--input names ['y'] do not match"),
        (
            ["--input", "x:int64:-1x4"],
            2,
            "--input x:int64:-1x4 does not match tests.export.branchy:small, which takes x:float32",
        ),
        (["--batch-sizes", "1,a"], 2, "--batch-sizes takes a comma list of integers"),
        (["--dynamic-sizes", "8,x"], 2, "--dynamic-sizes takes a comma list of integers"),
        (["--dynamic-sizes", "8,0"], 2, "dynamic sizes must be positive, got [8, 0]"),
        (["--eval-data", "missing.npz"], 1, "--eval-data file missing.npz not found"),
    ],
)
@pytest.mark.torch
def test_export_argument_errors(capsys, tmp_path, extra, code, message):
    got, _, err = _run(capsys, *_export(tmp_path, "tests.export.branchy:small", "--format", "onnx", *extra))
    assert got == code, err
    assert message in err
    assert err.startswith("modelport export: error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("nowhere/model.keras", "source 'nowhere/model.keras' not found"),
        ("tests.export.branchy:not_a_module", "returned dict, not a torch.nn.Module"),
        ("tests.export.branchy:broken_factory", "raised: RuntimeError: the factory itself fails"),
        ("tests.export.branchy:missing", "has no callable 'missing'"),
        ("tests.export.no_such_module:f", "cannot import 'tests.export.no_such_module'"),
    ],
)
@pytest.mark.torch
def test_source_errors(capsys, tmp_path, source, message):
    code, _, err = _run(capsys, *_export(tmp_path, source))
    assert code == 1 and message in err and err.count("\n") == 1, err


@pytest.mark.torch
def test_torch_source_without_specs_asks_for_them(capsys, tmp_path):
    code, _, err = _run(capsys, *_export(tmp_path, "torch.nn:Identity"))
    assert code == 2 and "PyTorch models do not carry input specs; pass --input" in err


@pytest.mark.torch
def test_weights_that_do_not_fit(capsys, tmp_path, digits):
    code, _, err = _run(
        capsys, *_export(tmp_path, "tests.export.branchy:small", "--weights", str(digits.torch_weights))
    )
    assert code == 1 and "do not fit Small: missing keys: fc.weight, fc.bias; unexpected keys: " in err, err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("drop", "do not fit Small: missing keys: fc.bias\n"),
        ("reshape", "do not fit Small: wrong shapes: fc.weight [3, 5] (the model has [3, 4])\n"),
        ("prefix", "missing keys: fc.weight, fc.bias; unexpected keys: module.fc.weight, module.fc.bias\n"),
    ],
)
@pytest.mark.torch
def test_weights_that_do_not_fit_say_which_keys(capsys, tmp_path, change, message):
    import torch

    state = {"fc.weight": torch.zeros(3, 4), "fc.bias": torch.zeros(3)}
    if change == "drop":
        del state["fc.bias"]
    elif change == "reshape":
        state["fc.weight"] = torch.zeros(3, 5)
    else:
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, tmp_path / "w.pt")
    code, _, err = _run(capsys, *_export(tmp_path, "tests.export.branchy:small", "--weights", str(tmp_path / "w.pt")))
    assert code == 1 and message in err and err.count("\n") == 1, err


@pytest.mark.torch
def test_ids_past_an_embedding_ask_for_the_value_range(capsys, tmp_path):
    code, _, err = _run(capsys, *_export(tmp_path, "tests.export.branchy:small_vocab", "--format", "onnx"))
    assert code == 1 and "IndexError: index out of range in self; integer inputs without a value range" in err, err
    assert "--input ids:int64:-1x-1:0..VOCAB_SIZE" in err
    ranged = _export(
        tmp_path, "tests.export.branchy:small_vocab", "--format", "onnx", "--input", "ids:int64:-1x-1:0..5"
    )
    assert _run(capsys, *ranged)[0] == 0
    code, out, _ = _run(capsys, "inspect", str(tmp_path / "repo"))  # the range the server enforces, shown
    assert code == 0 and "ids:int64:-1x-1:0..5" in out, out


@pytest.mark.torch
def test_a_torchscript_archive_exports_to_what_torch_export_is_not_needed_for(capsys, tmp_path):
    import torch

    from tests.export.branchy import small

    torch.jit.save(torch.jit.trace(small().eval(), (torch.zeros(2, 4),)), str(tmp_path / "small.pt"))
    args = _export(tmp_path, str(tmp_path / "small.pt"), "--input", "x:float32:-1x4")
    code, _, err = _run(capsys, *args, "--format", "pt2")
    assert code == 2 and "format 'pt2' does not apply to a TorchScript archive" in err, err
    assert "(it exports to: onnx, torchscript, ort)" in err
    code, out, err = _run(capsys, *args)  # --format all: every format it can take, and exit 0
    assert code == 0, err
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.startswith(("onnx", "torch", "ort"))}
    assert rows == {"onnx": "pass", "torchscript": "pass", "ort": "pass"}, out


@pytest.mark.parametrize("repository", ["afile", "afile/sub/repo"])
def test_a_repository_that_cannot_be_a_folder_is_refused_before_loading(capsys, tmp_path, repository):
    (tmp_path / "afile").write_text("")
    target = tmp_path / repository
    args = ["export", "no_such_module:f", "--repository", str(target), "--name", "m", "--quiet"]
    code, _, err = _run(capsys, *args)  # the source is never imported: the repository is checked first
    assert code == 2 and err.startswith(f"modelport export: error: --repository {target} is not a folder"), err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.tf
def test_keras_input_spec_must_match_the_model(capsys, tmp_path, digits):
    args = _export(tmp_path, str(digits.keras_model), "--format", "tflite", "--input", "image:float32:-1x1x8x8")
    code, _, err = _run(capsys, *args)
    assert code == 2 and "--input image:float32:-1x1x8x8 does not match" in err and "-1x8x8x1" in err
    args = _export(tmp_path, str(digits.keras_model), "--format", "savedmodel", "--input", "image:float64:-1x8x8x1")
    code, _, err = _run(capsys, *args)  # a dtype the model does not take: refused up front, not a converter ERROR
    assert code == 2 and "--input image:float64:-1x8x8x1 does not match" in err and "image:float32:-1x8x8x1" in err


@pytest.mark.torch
def test_export_then_inspect(capsys, tmp_path):
    code, out, _ = _run(capsys, *_export(tmp_path, "tests.export.branchy:small", "--format", "onnx,torchscript"))
    assert code == 0
    assert "onnx" in out and "pass" in out and "report:" in out
    exported = {line.split()[1]: line.split()[3:5] for line in out.splitlines() if line.startswith(("onnx ", "torch"))}
    code, out, _ = _run(capsys, "inspect", str(tmp_path / "repo"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["model", "ver", "format", "variant"]
    assert any(line.startswith("m-onnx ") and "x:float32:-1x4" in line and "pass" in line for line in lines)
    inspected = {line.split()[0]: line.split()[4:6] for line in lines[2:]}
    assert inspected == exported and exported["m-onnx"][1] == "KB", "one size: the artifact's, in one format"
    code, out, _ = _run(capsys, "inspect", str(tmp_path / "repo" / "m-torchscript" / "1"))
    assert code == 0 and "parity gate: tolerance" in out and "source: torch factory" in out


@pytest.mark.torch
def test_failed_gate_exits_non_zero(capsys, tmp_path):
    code, out, _ = _run(capsys, *_export(tmp_path, "tests.export.branchy:frozen_scale", "--format", "torchscript"))
    assert code == 1 and "FAIL" in out and "max abs error" in out


def test_inspect_errors(capsys, tmp_path):
    code, _, err = _run(capsys, "inspect", str(tmp_path / "nope"))
    assert code == 1 and "does not exist" in err
    code, _, err = _run(capsys, "inspect", str(tmp_path))
    assert code == 1 and "holds no model versions" in err


def test_inspect_reports_a_broken_manifest(capsys, tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "modelport.json").write_text("{}")
    code, out, _ = _run(capsys, "inspect", str(tmp_path))
    assert code == 0 and "invalid manifest" in out


def test_console_script_runs():
    done = subprocess.run([sys.executable, "-m", "modelport.cli", "export", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--quantize" in done.stdout and "examples:" in done.stdout


def test_python_dash_m_modelport_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "modelport", "--version"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert done.returncode == 0 and done.stdout.startswith("modelport "), done.stderr


def test_python_file_without_factory_names_the_factory(tmp_path):
    (tmp_path / "net.py").write_text("import torch\n\n\ndef make_model():\n    return torch.nn.Linear(4, 2)\n")
    done = run_modelport("export", "net.py", "--repository", "repo", "--name", "net", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "modelport export: error: SOURCE 'net.py' looks like a Python file: name the factory that returns the model, "
        "net.py:make_model (it defines: make_model)"
    )
    assert "checkpoint" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.tf
@pytest.mark.tflite
def test_rejected_variant_says_where_it_is_and_how_to_publish_it(tmp_path):
    keras_kinds.tied_logits().save(tmp_path / "tied.keras")
    args = ["export", "tied.keras", "--format", "tflite", "--quantize", "full-int8", "--repository", "repo"]
    done = run_modelport(*args, "--name", "tied", "--quiet", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    rows = [ln for ln in done.stdout.splitlines() if ln.startswith("tflite-full-int8: ")]
    (line,) = [ln for ln in rows if not ln.startswith("tflite-full-int8: note: ")]  # the calibration note aside
    assert re.fullmatch(
        r"tflite-full-int8: output 'logits' top-1 agreement \d+\.\d% < 99\.0%; "
        r"kept in repo/\.rejected/tied-tflite-full-int8/1, not served; "
        r"to publish it, export again with --min-agreement 0\.\d\d \(it reached \d+\.\d%\) or --allow-mismatch",
        line,
    ), line

    for target in ("repo", "repo/tied"):  # the repository, and the family name bundle and compare take
        done = run_modelport("inspect", target, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        table = done.stdout.split("\n\n")[0].splitlines()[2:]
        rows = {ln.split()[0]: ln for ln in table}
        assert set(rows) == {"tied-tflite", "tied-tflite-full-int8"}, done.stdout
        assert " pass " in rows["tied-tflite"] and "REJECTED FAIL" in rows["tied-tflite-full-int8"]
        assert "tied-tflite-full-int8/1 rejected: output 'logits' top-1 agreement" in done.stdout
        assert "kept in repo/.rejected/tied-tflite-full-int8/1, not served" in done.stdout


def test_inspect_unknown_family(capsys, tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    code, _, err = _run(capsys, "inspect", str(tmp_path / "digits"))
    assert code == 1 and "holds no model or family named 'digits'" in err


_NOISE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cuInit|oneDNN|XNNPACK|cpu_feature_guard|os\.fork\(\)", re.M)


@pytest.mark.tf
@pytest.mark.tflite
def test_quiet_export_keeps_framework_noise_off_stderr(tmp_path):
    keras_kinds.functional().save(tmp_path / "model.keras")
    args = ["export", "model.keras", "--format", "savedmodel,tflite", "--repository", "repo", "--name", "k"]
    done = run_modelport(*args, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not _NOISE.search(done.stderr), done.stderr
    assert done.stderr == ""
    done = run_modelport("-v", *args, "--version", "2", cwd=tmp_path)  # -v shows everything, LiteRT's C++ lines too
    assert done.returncode == 0, done.stderr
    assert "XNNPACK" in done.stderr


_SHOW_ENV = """\
import os, subprocess, sys
from modelport.cli import main
main(sys.argv[1:])
child = "import os; print([os.environ.get(k) for k in ('TF_CPP_MIN_LOG_LEVEL', 'GRPC_VERBOSITY')])"
subprocess.run([sys.executable, "-c", child], check=True)
"""


@pytest.mark.parametrize(
    ("argv", "env", "seen"),
    [
        (["inspect", "."], {}, "['3', 'ERROR']"),
        (["inspect", "."], {"TF_CPP_MIN_LOG_LEVEL": "1"}, "['1', 'ERROR']"),  # the user's own setting wins
        (["-v", "inspect", "."], {}, "[None, None]"),
    ],
)
def test_framework_log_settings_are_set_early_and_inherited(tmp_path, argv, env, seen):
    clean = {k: v for k, v in os.environ.items() if k not in FRAMEWORK_LOG_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-c", _SHOW_ENV, *argv],
        cwd=tmp_path,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == seen


@pytest.mark.torch  # JAX comes with litert-torch
def test_jax_fork_warning_is_silenced(tmp_path):
    script = (
        "import subprocess, sys\nimport jax\njax.devices()\nfrom modelport.cli import main\n"
        "main(['inspect', '.'])\nsubprocess.run([sys.executable, '-c', 'pass'], preexec_fn=lambda: None, check=True)\n"
    )
    clean = {k: v for k, v in os.environ.items() if k not in FRAMEWORK_LOG_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**clean, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "os.fork() was called" not in done.stderr


@pytest.mark.torch
def test_paths_are_relative_to_the_users_directory(tmp_path):
    """export, import-mar, inspect and serve as typed in the user's directory, every path relative."""
    export = ["export", "tests.export.branchy:small", "--format", "onnx", "--repository", "repo", "--name", "m"]
    done = modelport_in(tmp_path, *export, "--quiet", timeout=300)
    assert done.returncode == 0 and "report: repo/.reports/m.json" in done.stdout, done.stderr
    archive_manifest = {"model": {"modelName": "mar", "serializedFile": "m.onnx"}}
    with zipfile.ZipFile(tmp_path / "m.mar", "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps(archive_manifest))
        archive.write(tmp_path / "repo" / "m-onnx" / "1" / "model.onnx", "m.onnx")
    done = modelport_in(tmp_path, "import-mar", "m.mar", "--repository", "repo", "--quiet", timeout=300)
    assert done.returncode == 0, done.stderr
    done = modelport_in(tmp_path, "inspect", "repo")
    assert done.returncode == 0 and [line.split()[0] for line in done.stdout.splitlines()[2:]] == ["m-onnx", "mar"]
    url = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "modelport.cli", "serve", "repo", "--http-port", url.split(":")[-1]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (tmp_path / "server.log").open("wb") as log:
        server = subprocess.Popen([*command, "--grpc-port", "0"], cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        wait_until(lambda: _ready(server, url), what="`modelport serve repo` ready")
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        reply = httpx.post(f"{url}/v2/models/mar/infer", json=body, timeout=10)
        assert reply.status_code == 200 and len(reply.json()["outputs"][0]["data"]) == 3, reply.text
    finally:
        server.terminate()
        server.wait(60)


def _ready(server: subprocess.Popen[bytes], url: str) -> bool:
    assert server.poll() is None, f"modelport serve exited with {server.returncode}"
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_python_dash_m_modelport_is_the_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in FRAMEWORK_LOG_VARIABLES} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "modelport", "serve", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and "--http-port" in done.stdout, done.stderr
    wrong = subprocess.run(
        [sys.executable, "-m", "modelport", "nope"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert wrong.returncode == 2 and "invalid choice: 'nope'" in wrong.stderr, wrong.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # was --port-file 8080: a file named 8080 written, and the server on the default port
        (["serve", "repo", "--port", "8080"], "unrecognized arguments: --port 8080"),
        (["serve", "repo", "--http", "8080"], "unrecognized arguments: --http 8080"),
        (["export", "m.onnx", "--name", "m", "--repo", "repo"], "required: --repository"),
        (["--verb", "inspect", "repo"], "unrecognized arguments: --verb"),
    ],
)
def test_options_are_taken_by_their_full_names_only(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_serve_flag_out_of_range_is_named_as_typed(capsys, tmp_path):
    assert main(["serve", str(tmp_path), "--max-body-bytes", "200"]) == 2
    assert "error: --max-body-bytes: Input should be greater than or equal to 1024" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tls-certfile", "cert.pem"], "error: --tls-certfile and --tls-keyfile go together"),
        (["--api-key", "k", "--model-control"], "error: --model-control with an --api-key needs its own --control-key"),
    ],
)
def test_a_check_across_serve_flags_is_its_own_message(capsys, tmp_path, argv, message):
    """It was ``error: --: Value error, --tls-certfile and ...``: an empty flag name and pydantic's prefix."""
    assert main(["serve", str(tmp_path), *argv]) == 2
    assert capsys.readouterr().err.rstrip().endswith(message)


def test_the_edge_runtime_takes_options_by_their_full_names_only(capsys, tmp_path):
    from modelport.mobile import modelport_edge

    with pytest.raises(SystemExit) as exited:
        modelport_edge.main(["verify", str(tmp_path), "--var", "float16"])
    assert exited.value.code == 2 and "unrecognized arguments: --var float16" in capsys.readouterr().err


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """``modelport inspect REPO | head``: the reader went away; the CLI printed a BrokenPipeError traceback."""
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "modelport.json").write_text("{}")
    read, write = os.pipe()
    os.close(read)  # closed before the CLI writes: its first write fails, whatever the timing
    try:
        done = subprocess.run(
            [sys.executable, "-m", "modelport", "inspect", str(tmp_path)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("value", "providers"),
    [
        ("CPUExecutionProvider", ("CPUExecutionProvider",)),  # was a pydantic_settings SettingsError traceback
        ("CUDAExecutionProvider, CPUExecutionProvider", ("CUDAExecutionProvider", "CPUExecutionProvider")),
        ('["CUDAExecutionProvider","CPUExecutionProvider"]', ("CUDAExecutionProvider", "CPUExecutionProvider")),
    ],
)
def test_modelport_providers_takes_the_flags_comma_list_or_json(monkeypatch, tmp_path, value, providers):
    from modelport.serving.settings import ServerSettings

    monkeypatch.setenv("MODELPORT_PROVIDERS", value)
    assert ServerSettings(repository=tmp_path).providers == providers


def test_a_malformed_modelport_providers_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MODELPORT_PROVIDERS", '["CPUExecutionProvider"')
    assert main(["serve", str(tmp_path)]) == 2
    assert "error: --providers: not a JSON list" in capsys.readouterr().err
