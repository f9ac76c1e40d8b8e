"""``modelport tune`` end to end: real servers over fake runtimes, the package's load generator, the reports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from modelport.manifest import read_manifest, write_manifest
from modelport.serving.settings import read_model_config
from tests.serving import fakes
from tests.serving.applications import add_colors
from tests.serving.test_applications import RED, solid
from tests.tune.conftest import toy_family
from tests.user_cli import run_modelport

FAST = ("--users", "1,4", "--level-duration", "1s", "--warmup", "0.2s", "--quiet")


def _tune(cwd: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return run_modelport("tune", *args, *FAST, cwd=cwd, timeout=timeout)


def test_a_short_tune_measures_two_knobs_applies_the_winner_and_sizes_pods(tmp_path):
    toy_family(tmp_path / "repo", {"onnx": 0.97, "onnx-dynamic-int8": 0.90})
    args = ("repo/toy", "--slo", "p99<2s", "--knobs", "workers,max_queue_delay_ms", "--min-accuracy", "0.95")
    done = _tune(tmp_path, *args, "--budget", "2m", "--confirm-rounds", "0", "--apply", "--target-rps", "500")
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "tune-out" / "tune.json").read_text())
    keys = [c["key"] for c in data["candidates"]]
    assert len(keys) == len(set(keys)) and 4 <= len(keys) <= 6, "quick: default, workers=2, delay 1 and 4 ms (x2)"
    for entry in data["candidates"]:
        assert entry["variant"] == "toy-onnx", "the int8 variant is below the accuracy floor"
        assert entry["error"] == "" and entry["max_rps_under_slo"] > 0 and entry["p99_ms"] < 2000
        assert entry["rss_mb"] > 10 and set(entry["config"]) >= {"max_batch_size", "max_queue_delay_ms", "instances"}
        assert all(level["server_cpu"] is not None for level in entry["levels"])
    assert data["excluded"] == ["toy-onnx-dynamic-int8: accuracy 90.00% < 95.00%"]
    best, default = data["best"], data["default"]
    assert best["max_rps_under_slo"] == max(c["max_rps_under_slo"] for c in data["candidates"])
    assert default["config"]["max_queue_delay_ms"] == 0.0 and default["server_flags"] == {"workers": 1}
    assert data["confirmation"] is None, "--confirm-rounds 0"
    table = done.stdout[done.stdout.index("variant ") :]
    assert re.search(r"^\*D? +toy-onnx ", table, re.M) and re.search(r"^\*?D +toy-onnx ", table, re.M), table
    applied = tmp_path / "repo" / "toy-onnx" / "config.yaml"
    text = applied.read_text()
    if best["key"] == default["key"]:  # the default won (a noisy machine may say so): nothing to change
        assert "not applied: the default configuration won" in done.stdout and "# written by" not in text
    else:
        assert text.startswith("# written by `modelport tune`")
        assert f"--workers {best['server_flags']['workers']}" in text
        assert read_model_config(applied.parent).max_queue_delay_ms == best["config"]["max_queue_delay_ms"]
    assert read_model_config(applied.parent).runtime == "tests.serving.fakes:EchoRuntime", "the model's own keys"
    patch = tmp_path / "tune-out" / "k8s"
    assert yaml.safe_load((patch / "kustomization.yaml").read_text())["kind"] == "Component"
    deployment = yaml.safe_load((patch / "deployment-patch.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "modelport" and container["resources"]["requests"]["memory"].endswith("Mi")
    assert yaml.safe_load((patch / "hpa-patch.yaml").read_text())["spec"]["minReplicas"] >= 2
    assert (tmp_path / "tune-out" / "tune.html").read_text().count("data:image/png;base64,") == 2


def test_resume_measures_only_what_the_previous_run_did_not(tmp_path):
    toy_family(tmp_path / "repo", {"onnx": 0.97})
    first = _tune(tmp_path, "repo/toy", "--slo", "p99<2s", "--knobs", "workers", "--confirm-rounds", "0")
    assert first.returncode == 0, first.stderr
    before = json.loads((tmp_path / "tune-out" / "tune.json").read_text())["candidates"]
    assert len(before) == 2
    again = run_modelport(
        "tune", "repo/toy", "--slo", "p99<2s", "--knobs", "workers,max_batch_size", "--confirm-rounds", "0",
        "--resume", *FAST[:-1], cwd=tmp_path, timeout=240,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "resuming: 2 candidate(s) already measured" in again.stdout
    measuring = [line for line in again.stdout.splitlines() if line.strip().startswith("measuring ")]
    assert measuring and all("mbs=1 " in line for line in measuring), "only candidates new to this space"
    after = json.loads((tmp_path / "tune-out" / "tune.json").read_text())["candidates"]
    assert [c["key"] for c in after[:2]] == [c["key"] for c in before], "the previous measurements are kept"
    assert len(after) == 2 + len(measuring) == len({c["key"] for c in after})


def test_resume_keeps_to_its_family_and_to_the_variants_the_floor_admits(tmp_path):
    toy_family(tmp_path / "repo", {"onnx": 0.97, "onnx-dynamic-int8": 0.90})
    common = ("--slo", "p99<2s", "--knobs", "variant", "--confirm-rounds", "0")
    first = _tune(tmp_path, "repo/toy", *common, "--search", "brute")
    assert first.returncode == 0, first.stderr
    assert len(json.loads((tmp_path / "tune-out" / "tune.json").read_text())["candidates"]) == 2
    floor = _tune(tmp_path, "repo/toy", *common, "--min-accuracy", "0.95", "--resume")
    assert floor.returncode == 0, floor.stderr
    data = json.loads((tmp_path / "tune-out" / "tune.json").read_text())
    assert data["best"]["variant"] == "toy-onnx", "not the int8 variant the floor keeps out, on its old figure"
    assert [c["variant"] for c in data["candidates"]] == ["toy-onnx"]
    toy_family(tmp_path / "other", {"onnx": 0.97})
    foreign = _tune(tmp_path, "other/toy", *common, "--resume")
    assert foreign.returncode == 2, foreign.stderr
    assert (
        "tune-out/tune.json is the tune of 'toy' in " in foreign.stderr
        and "give this tune another --out" in foreign.stderr
    )
    (tmp_path / "tune-out" / "tune.json").write_text("{broken")
    broken = _tune(tmp_path, "repo/toy", *common, "--resume")
    assert broken.returncode == 2 and len(broken.stderr.splitlines()) == 1, broken.stderr
    assert "is not a tune.json modelport wrote" in broken.stderr


def test_an_slo_no_candidate_meets_exits_1_with_the_closest_miss(tmp_path):
    toy_family(tmp_path / "repo", {"onnx": 0.97})
    done = _tune(tmp_path, "repo/toy", "--slo", "p99<1us", "--knobs", "variant", "--budget", "1m")
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("modelport tune: no candidate met the SLO; closest: toy-onnx w=1 "), line
    data = json.loads((tmp_path / "tune-out" / "tune.json").read_text())
    assert data["best"] is None
    levels = [level for c in data["candidates"] for level in c["levels"]]
    assert {level["users"] for level in levels} == {1, 4}
    closest = min(levels, key=lambda level: level["p99_ms"])  # one SLO on p99: the lowest p99 misses by the least
    assert f"at users={closest['users']}: p99 {closest['p99_ms']:.2f} ms," in line, (line, levels)
    assert re.search(r"objective < 0\.001 ms: \d+(\.\d)?% over$", line), line


def test_requests_no_candidate_can_take_exit_1_naming_why(tmp_path):
    """Files for a model that takes tensors: each candidate failed before any load, and the verdict said only
    'none could be measured' (the reason was in tune.json alone)."""
    toy_family(tmp_path / "repo", {"onnx": 0.97})
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "red.png").write_bytes(solid(RED))
    args = ("repo/toy", "--slo", "p99<2s", "--knobs", "variant", "--budget", "1m", "--data", "images")
    done = _tune(tmp_path, *args)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("modelport tune: no candidate met the SLO, and none could be measured (1 of 1 failed): "), (
        line
    )
    assert line.endswith("files need a model with one BYTES input (payloads); it takes x:float32:1x3"), line


def test_token_ids_are_sent_within_their_range_at_the_golden_inputs_sizes(tmp_path):
    """The served metadata says neither the value range the server enforces nor a size for a dynamic
    sequence dim: tune takes both from the variant's manifest and golden inputs (random ids 0..9 were a 400)."""
    directory = fakes.write_model(tmp_path / "repo", "toy-onnx", dtype="int64", value_range=(0, 5))
    manifest = read_manifest(directory)
    (x,), (y, n) = manifest.inputs, manifest.outputs
    update = {"family": "toy", "inputs": (x.model_copy(update={"shape": (-1, -1)}),)}
    write_manifest(
        manifest.model_copy(update={**update, "outputs": (y.model_copy(update={"shape": (-1, -1)}), n)}), directory
    )
    done = _tune(
        tmp_path, "repo/toy", "--slo", "p99<2s", "--knobs", "variant", "--budget", "1m", "--confirm-rounds", "0"
    )
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads((tmp_path / "tune-out" / "tune.json").read_text())["candidates"]
    assert entry["error"] == "" and entry["max_rps_under_slo"] > 0, entry


def test_a_model_with_processors_is_tuned_on_the_files_of_data(tmp_path):
    """Random tensors are no images: every candidate of a model with an image step failed its first request."""
    add_colors(tmp_path / "repo")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "red.png").write_bytes(solid(RED))
    args = ("repo/colors", "--slo", "p99<2s", "--knobs", "variant", "--budget", "1m", "--confirm-rounds", "0")
    done = _tune(tmp_path, *args, "--data", "images")
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "tune-out" / "tune.json").read_text())
    (entry,) = data["candidates"]
    assert entry["error"] == "" and entry["max_rps_under_slo"] > 0, entry
    assert data["data"] == str(tmp_path / "images")


def test_a_server_that_crashes_on_a_candidate_is_recorded_and_the_search_goes_on(tmp_path):
    runtimes = {"tflite": "tests.tune.fake_runtimes:CrashingRuntime"}
    toy_family(tmp_path / "repo", {"onnx": 0.97, "tflite": 0.97}, runtimes)
    args = ("repo/toy", "--slo", "p99<2s", "--knobs", "variant", "--search", "brute", "--budget", "1m")
    done = _tune(tmp_path, *args, "--confirm-rounds", "1")
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "tune-out" / "tune.json").read_text())
    rows = {c["variant"]: c for c in data["candidates"]}
    assert "exited with 3" in rows["toy-tflite"]["error"], rows["toy-tflite"]
    assert rows["toy-onnx"]["error"] == "" and rows["toy-onnx"]["max_rps_under_slo"] > 0
    confirmation = data["confirmation"]
    assert confirmation["rounds"] == 1 and confirmation["ratio"] == 1.0 and confirmation["default_rps"] > 0
    assert "the default configuration won: nothing to change" in done.stdout
    assert "confirmed in 1 interleaved round(s)" in done.stdout


def test_bad_input_is_one_line(tmp_path):
    toy_family(tmp_path / "repo", {"onnx": 0.97})
    unknown = _tune(tmp_path, "repo/nope", "--slo", "p99<20ms")
    assert unknown.returncode == 1 and "no model of family 'nope' in" in unknown.stderr and "['toy']" in unknown.stderr
    malformed = _tune(tmp_path, "repo/toy", "--slo", "p99 under 20ms")
    assert malformed.returncode == 2 and len(malformed.stderr.splitlines()) == 1
    assert "--slo 'p99 under 20ms' does not parse" in malformed.stderr
    small = _tune(tmp_path, "repo/toy", "--slo", "p99<20ms", "--budget", "3s")
    assert small.returncode == 2 and "--budget 3s is too small for one candidate" in small.stderr
    remote = _tune(tmp_path, "s3://bucket/repo/toy", "--slo", "p99<20ms")
    assert remote.returncode == 2 and len(remote.stderr.splitlines()) == 1, remote.stderr
    assert "s3://bucket/repo/toy: tune measures a local repository" in remote.stderr, remote.stderr
    missing = _tune(tmp_path, "repo/toy", "--slo", "p99<20ms", "--data", "images")
    assert missing.returncode == 2 and "--data images: no such file or directory" in missing.stderr
    assert not (tmp_path / "tune-out" / "tune.json").exists()
