"""The load-test pieces that need no server: SLOs, load shapes, specs, request encodings, metrics, results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelport.errors import InvalidArgumentError, SpecError
from modelport.loadtest.locust_process import LocustOutput
from modelport.loadtest.options import Level, levels_of, parse_duration
from modelport.loadtest.payloads import merge_specs, resolve_specs, sample_inputs
from modelport.loadtest.protocols import Target, codec_for
from modelport.loadtest.results import level_result
from modelport.loadtest.server_metrics import Scrape, server_view
from modelport.loadtest.slo import checked_slos, parse_rate, parse_slo
from modelport.manifest import TensorSpec


@pytest.mark.parametrize(
    ("text", "metric", "op", "threshold"),
    [
        ("p99<50ms", "p99", "<", 50.0),
        ("p50 <= 0.5s", "p50", "<=", 500.0),
        ("max<800us", "max", "<", 0.8),
        ("p95<20", "p95", "<", 20.0),
        ("error_rate<0.1%", "error_rate", "<", 0.001),
        ("error_rate<=0.02", "error_rate", "<=", 0.02),
        ("rps>200", "rps", ">", 200.0),
        ("RPS>=1e3", "rps", ">=", 1000.0),
    ],
)
def test_slo_parses(text, metric, op, threshold):
    slo = parse_slo(text)
    assert (slo.metric, slo.op) == (metric, op)
    assert slo.threshold == pytest.approx(threshold)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p99 under 50ms", "does not parse"),
        ("p42<5ms", "unknown metric 'p42'"),
        ("rps>200ms", "rps takes a plain number"),
        ("p99<5%", "a latency takes us, ms or s"),
        ("error_rate<5ms", "an error rate is a fraction or a percentage"),
    ],
)
def test_slo_errors_name_the_problem(text, message):
    with pytest.raises(InvalidArgumentError, match=message):
        parse_slo(text)


def test_slo_says_by_how_much_it_failed():
    measured = {"p99": 75.0, "rps": 150.0, "error_rate": 0.0}
    latency = parse_slo("p99<50ms").check(measured)
    assert not latency.passed and latency.detail == "p99 75.00 ms, objective < 50.00 ms: 50.0% over"
    rate = parse_slo("rps>200").check(measured)
    assert not rate.passed and rate.detail == "rps 150.0 req/s, objective > 200.0 req/s: 25.0% under"
    assert parse_slo("error_rate<0.1%").check(measured).passed
    tiny = parse_slo("p99<1us").check({"p99": 0.75})
    assert tiny.detail == "p99 0.75 ms, objective < 0.001 ms: 74900.0% over", "not 'objective < 0.00 ms'"


def test_levels_and_durations():
    assert levels_of((1, 8), ()) == (Level(1), Level(8))
    assert levels_of((4,), (10.0, 20.0)) == (Level(4, 10.0), Level(4, 20.0))
    assert levels_of((2, 4), (50.0,)) == (Level(2, 50.0), Level(4, 50.0))
    with pytest.raises(InvalidArgumentError, match="give as many of each"):
        levels_of((1, 2, 3), (1.0, 2.0))
    with pytest.raises(InvalidArgumentError, match="positive integers"):
        levels_of((0,), ())
    assert [parse_duration(t) for t in ("30", "30s", "2m", "1h", "500ms")] == [30, 30, 120, 3600, 0.5]
    with pytest.raises(InvalidArgumentError, match="duration like 30s"):
        parse_duration("soon")


def test_specs_merge_and_resolve():
    served = (TensorSpec.parse("ids:int64:-1x-1"), TensorSpec.parse("mask:int64:-1x-1"))
    merged = merge_specs(served, (TensorSpec.parse("ids:int64:-1x16:0..1000"),))
    with pytest.raises(SpecError, match=r"dynamic dimensions .* --input mask:int64:4x16"):
        resolve_specs(merged, 4)
    with pytest.raises(SpecError, match=r"--input names \['nope'\] are not inputs"):
        merge_specs(served, (TensorSpec.parse("nope:int64:1"),))
    both = merge_specs(served, (TensorSpec.parse("ids:int64:-1x16:0..1000"), TensorSpec.parse("mask:int64:-1x16:0..2")))
    resolved = resolve_specs(both, 4)
    assert [s.shape for s in resolved] == [(4, 16), (4, 16)]
    samples = sample_inputs(resolved, "random", 3, seed=0)
    assert len(samples) == 3 and samples[0]["ids"].max() < 1000 and set(np.unique(samples[0]["mask"])) <= {0, 1}
    with pytest.raises(InvalidArgumentError, match="no dynamic batch dimension"):
        resolve_specs((TensorSpec.parse("x:float32:1x3"),), 2)


def test_data_files_golden_and_named(tmp_path):
    from modelport.golden import GoldenCase, save_golden

    specs = resolve_specs((TensorSpec.parse("x:float32:-1x3"),), 2)
    np.savez(tmp_path / "rows.npz", x=np.arange(15, dtype=np.float32).reshape(5, 3))
    slices = sample_inputs(specs, str(tmp_path / "rows.npz"), 16, 0)
    assert [s["x"].shape for s in slices] == [(2, 3), (2, 3)]
    cases = [GoldenCase({"x": np.ones((1, 3), np.float32)}, {}), GoldenCase({"x": np.zeros((3, 3), np.float32)}, {})]
    save_golden(tmp_path / "golden.npz", cases)
    golden = sample_inputs(specs, str(tmp_path / "golden.npz"), 16, 0)
    assert [g["x"].shape for g in golden] == [(1, 3), (3, 3)]
    with pytest.raises(
        InvalidArgumentError, match=r"expected 'random', an existing \.npz file or a directory of files"
    ):
        sample_inputs(specs, "nothing.npz", 4, 0)


def test_encodings_decode_with_the_server_codecs():
    """The bytes each codec produces are what modelport's own decoders accept."""
    from tritonclient.grpc import service_pb2

    from modelport.serving.v2 import decode_raw_tensor, decode_request

    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array([[b"a"], [b"bc"]], dtype=object)}
    target = Target("http://127.0.0.1:1", "m", "2")
    as_json = codec_for("v2", target).encode(arrays)
    decoded = decode_request(as_json.body, None).inputs
    assert np.array_equal(decoded["x"], arrays["x"]) and decoded["s"].tolist() == [[b"a"], [b"bc"]]
    binary = codec_for("v2-binary", target).encode(arrays)
    length = int(binary.headers["Inference-Header-Content-Length"])
    request = decode_request(binary.body, length)
    assert np.array_equal(request.inputs["x"], arrays["x"]) and request.binary_output
    grpc_target = Target("127.0.0.1:1", "m", "2")
    message = service_pb2.ModelInferRequest.FromString(codec_for("v2-grpc", grpc_target).encode(arrays).body)
    assert (message.model_name, message.model_version) == ("m", "2")
    raw = decode_raw_tensor("x", "FP32", [2, 3], message.raw_input_contents[0])
    assert np.array_equal(raw, arrays["x"])
    assert codec_for("torchserve", target).endpoint().path == "/predictions/m/2"
    assert codec_for("tfserving", target).endpoint().path == "/v1/models/m/versions/2:predict"
    labelled = Target("http://127.0.0.1:1", "m", "stable")  # TF Serving's version labels (it was /versions/stable)
    assert codec_for("tfserving", labelled).endpoint().path == "/v1/models/m/labels/stable:predict"


def test_protocol_and_url_must_agree():
    with pytest.raises(InvalidArgumentError, match="talks gRPC: give the gRPC address as host:port"):
        codec_for("v2-grpc", Target("http://127.0.0.1:8001", "m"))
    with pytest.raises(InvalidArgumentError, match="the URL must start with http://"):
        codec_for("v2", Target("127.0.0.1:8000", "m"))


def _scrape(queue: list[float], batches: list[float], count: float, total: float) -> Scrape:
    samples = {}
    for le, value in zip(("0.001", "0.01", "+Inf"), queue, strict=True):
        samples[("modelport_queue_duration_seconds_bucket", (("le", le), ("model", "m"), ("version", "1")))] = value
    samples[("modelport_queue_duration_seconds_count", (("model", "m"), ("version", "1")))] = count
    samples[("modelport_queue_duration_seconds_sum", (("model", "m"), ("version", "1")))] = total
    for le, value in zip(("1.0", "2.0", "4.0", "+Inf"), batches, strict=True):
        samples[("modelport_batch_size_bucket", (("le", le), ("model", "m"), ("version", "1")))] = value
    samples[("modelport_batch_size_count", (("model", "m"), ("version", "1")))] = batches[-1]
    samples[("modelport_batch_size_sum", (("model", "m"), ("version", "1")))] = batches[-1] * 2
    samples[("modelport_batch_size_bucket", (("le", "+Inf"), ("model", "other"), ("version", "1")))] = 99.0
    return Scrape(samples)


def test_server_view_is_the_delta_between_scrapes():
    before = _scrape([10, 10, 10], [5, 5, 5, 5], 10, 0.005)
    after = _scrape([60, 110, 110], [25, 35, 55, 55], 110, 0.505)
    view = server_view(before, after, "m", None)
    queue = view["queue_ms"]
    assert queue["count"] == 100 and queue["mean"] == pytest.approx(5.0)
    assert queue["p50"] == pytest.approx(1.0) and 1.0 < queue["p90"] <= 10.0
    assert queue["buckets"] == {"1": 50, "10": 50, "+Inf": 0}
    assert view["batch_size"]["buckets"] == {"1": 20, "2": 10, "4": 20, "+Inf": 0}
    assert view["compute_ms"] is None


def test_results_fall_back_to_locust_histogram_without_samples(tmp_path):
    stats = [
        {
            "num_requests": 100,
            "num_failures": 2,
            "start_time": 1000.0,
            "last_request_timestamp": 1004.0,
            "response_times": {"1": 50, "2": 40, "30": 10},
            "total_response_time": 430.0,
            "max_response_time": 31.0,
        }
    ]
    result = level_result(Level(4), LocustOutput(stats, None, {}, tmp_path / "log", 5.0))
    assert result.latency_source == "locust histogram"
    assert (result.requests, result.failures, result.rps) == (100, 2, 25.0)
    assert result.latency_ms["p50"] == 1 and result.latency_ms["p90"] == 2 and result.latency_ms["p99"] == 30
    assert result.errors == {"failures (see locust.log)": 2}
    ends = np.array([1000.2, 1000.7, 1001.5] * 33 + [1003.9])
    samples = {"end": ends, "latency_ms": np.linspace(1, 10, 100), "failed": np.zeros(100, bool)}
    exact = level_result(Level(4), LocustOutput(stats, samples, {"HTTP 503": 2}, tmp_path / "log", 5.0))
    assert exact.latency_source == "exact" and exact.latency_ms["max"] == 10.0
    assert exact.timeline["t"] == [0.0, 1.0] and exact.timeline["rps"] == [66.0, 33.0], (
        "the cut-short last second is left out"
    )
    assert exact.errors == {"HTTP 503": 2}


def test_options_reject_what_cannot_run():
    from modelport.loadtest.options import LoadTestOptions

    with pytest.raises(InvalidArgumentError, match="--ui runs one interactive level"):
        LoadTestOptions(url="http://h:1", model="m", ui=True, levels=(Level(1), Level(2)))
    with pytest.raises(InvalidArgumentError, match="--protocol must be one of"):
        LoadTestOptions(url="http://h:1", model="m", protocol="soap")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="--duration must be at least 1s"):
        LoadTestOptions(url="http://h:1", model="m", duration_s=0.5)


def test_options_paths_are_absolute_from_the_start(tmp_path, monkeypatch):
    """locust runs in each level's folder: a relative path must not reach it."""
    from modelport.loadtest.options import CompareOptions, LoadTestOptions

    monkeypatch.chdir(tmp_path)
    options = LoadTestOptions(url="http://h:1", model="m", locustfile=Path("mine.py"))
    assert (options.out, options.locustfile) == (tmp_path / "loadtest-out", tmp_path / "mine.py")
    assert LoadTestOptions(url="http://h:1", model="m", out=Path("/abs/out")).out == Path("/abs/out")
    compare = CompareOptions(repository=Path("repo"), family="toy")
    assert (compare.repository, compare.out) == (tmp_path / "repo", tmp_path / "compare-out")


def test_plots_draw_edge_cases_without_warnings():
    """Nothing load-tested, nothing measured, names too long for the layout: a figure, and no warning."""
    import warnings

    from modelport.loadtest import plots

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figures = [
            plots.curves([], "no variant could be load-tested"),
            plots.curves([("a", [0.0], [0.0], ["u=1"])], "all failed"),
            plots.throughput_bars(["a" * 300], [0.0], [0.0], "a very long variant name"),
        ]
    assert all(png.startswith(b"\x89PNG") for png in figures)


def test_the_failed_request_gate_joins_the_slos_unless_an_error_rate_slo_decides():
    assert [s.text for s in checked_slos(("p99<5ms",), None)] == ["p99<5ms", "error_rate<=0% (--max-error-rate)"]
    assert [s.text for s in checked_slos(("error_rate<1%",), None)] == ["error_rate<1%"]
    both = checked_slos(("error_rate<1%",), 0.05)
    assert [s.text for s in both] == ["error_rate<1%", "error_rate<=5% (--max-error-rate)"], "given: it applies"
    (gate,) = checked_slos((), 0.0)
    assert gate.check({"error_rate": 0.0}).passed and not gate.check({"error_rate": 0.001}).passed
    assert (parse_rate("1%"), parse_rate("0.01"), parse_rate(" 0 ")) == (0.01, 0.01, 0.0)
    for bad in ("x", "150%", "-0.1"):
        with pytest.raises(InvalidArgumentError, match="--max-error-rate takes a fraction"):
            parse_rate(bad)


def test_torchserve_suggests_input_only_where_the_server_has_no_v2_metadata(echo_server):
    """A model missing from a server that speaks v2 is missing: '--input' would not help (it said so before)."""
    import http.server
    import threading

    from modelport.errors import NotFoundError

    missing = codec_for("torchserve", Target(echo_server.url, "nope"))
    with pytest.raises(NotFoundError, match=r"model 'nope' not found at .*is not found\)$"):
        missing.specs()

    class TorchServeLike(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # TorchServe answers 404 to every /v2 path
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TorchServeLike)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        plain = codec_for("torchserve", Target(f"http://127.0.0.1:{server.server_address[1]}", "colors"))
        with pytest.raises(NotFoundError, match=r"^no tensor metadata for 'colors' at .*: pass --input NAME:DTYPE"):
            plain.specs()
    finally:
        server.shutdown()
        server.server_close()


def test_torchserve_input_overrides_the_served_metadata_where_the_server_has_it(echo_server, tmp_path):
    """--input with --protocol torchserve replaced the whole metadata of a server that has it: overriding one
    input of a two-input model sent only that one (a 400), and a misspelt name went to the server unchecked."""
    from modelport.errors import SpecError
    from modelport.loadtest.options import LoadTestOptions
    from modelport.loadtest.runner import prepare

    for name in ("ok", "typo"):
        (tmp_path / name).mkdir()
    given = (TensorSpec.parse("x:float32:-1x3:0..4"),)
    options = LoadTestOptions(echo_server.url, "echo", protocol="torchserve", inputs=given, out=tmp_path / "ok")
    assert prepare(options).specs == (TensorSpec.parse("x:float32:1x3:0..4"),)
    typo = (TensorSpec.parse("z:float32:-1x3"),)
    options = LoadTestOptions(echo_server.url, "echo", protocol="torchserve", inputs=typo, out=tmp_path / "typo")
    with pytest.raises(SpecError, match=r"--input names \['z'\] are not inputs of the model \(it has \['x'\]\)"):
        prepare(options)


def test_torchserve_version_strings_read_the_metadata_of_their_version(tmp_path):
    """``--version 1.0`` (a TorchServe version, as import-mar keeps them): /predictions/m/1.0 answers, but the
    metadata was read from /v2/models/m/versions/1.0, a 404 ('version should be an integral value')."""
    from modelport.loadtest.options import LoadTestOptions
    from modelport.loadtest.runner import prepare
    from tests.serving import fakes
    from tests.serving.processes import serving

    fakes.write_model(tmp_path / "repo", "echo", config={"version_labels": {"1.0": 1}})
    (tmp_path / "out").mkdir()
    with serving(tmp_path / "repo", "--log-level", "warning", timeout=60) as served:
        options = LoadTestOptions(served.url, "echo", "torchserve", version="1.0", out=tmp_path / "out")
        prepared = prepare(options)
    assert prepared.endpoint.path == "/predictions/echo/1.0"
    assert prepared.specs == (TensorSpec.parse("x:float32:1x3"),)
