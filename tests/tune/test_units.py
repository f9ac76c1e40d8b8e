"""The space, the accuracy floor, the searches (over a fake measurement), scoring and the options."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from modelport.errors import InvalidArgumentError, NotFoundError
from modelport.loadtest.compare import find_variants
from modelport.loadtest.slo import parse_slo
from modelport.tune.options import TuneOptions, parse_cpus
from modelport.tune.report import write_outputs
from modelport.tune.result import Confirmation, LevelPoint, Measurement, TuneResult, closest_miss, score
from modelport.tune.search import BudgetSpentError, Tuner, brute, quick, tpe
from modelport.tune.space import Candidate, Space, admissible, build_space
from modelport.tune.table import candidate_line, objective_line
from tests.tune.conftest import toy_family

SLOS = (parse_slo("p99<20ms"), parse_slo("error_rate<1%"))


def _variants(tmp_path: Path, accuracies: dict[str, float]) -> list:
    return find_variants(toy_family(tmp_path / "repo", accuracies), "toy")


def _level(users: int, rps: float, p99: float, errors: float = 0.0) -> LevelPoint:
    point = LevelPoint(users, rps, {"p50": p99 / 2, "p99": p99}, errors, int(rps), 0.3, 1.0)
    return dataclasses.replace(point, slos=tuple(slo.check(point.measured()) for slo in SLOS))


def _fake_measure(rps_of, wall_s: float = 0.0):
    """A measurement whose throughput is ``rps_of(assignment)``, met at p99 10 ms; counts its calls."""
    calls: list[Candidate] = []

    def measure(candidate: Candidate) -> Measurement:
        calls.append(candidate)
        rps = rps_of(candidate.assignment)
        return Measurement(candidate, (_level(1, rps / 2, 5.0), _level(8, rps, 10.0)), 100.0, wall_s=wall_s)

    return measure, calls


def _separable(given: dict) -> float:
    """Best at workers=2, delay 1 ms, 2 instances, the fp32 variant; the knobs' effects add up."""
    rps = 1000.0 + 400 * (given["workers"] == 2) + 250 * (given["max_queue_delay_ms"] == 1.0)
    return rps - 300 * given["variant"].endswith("int8") + 100 * given["instances"]


@pytest.fixture
def space(tmp_path) -> Space:
    variants = _variants(tmp_path, {"onnx": 0.97, "onnx-dynamic-int8": 0.96})
    return build_space(variants, [], cpus=2)


def test_the_accuracy_floor_keeps_variants_at_or_above_it_and_says_why_others_are_out(tmp_path):
    variants = _variants(tmp_path, {"onnx": 0.97, "onnx-dynamic-int8": 0.95, "tflite": 0.96})
    kept, excluded = admissible(variants, min_accuracy=0.96, max_agreement_drop=None)
    assert [v.name for v in kept] == ["toy-onnx", "toy-tflite"]
    assert excluded == ["toy-onnx-dynamic-int8: accuracy 95.00% < 96.00%"]
    kept, excluded = admissible(variants, min_accuracy=None, max_agreement_drop=0.01)
    assert [v.name for v in kept] == ["toy-onnx", "toy-tflite"], "a passed tolerance gate is full agreement"
    assert excluded[0].startswith("toy-onnx-dynamic-int8: top-1 agreement 98.00% drops more than 1.00%")
    kept, _ = admissible(variants, min_accuracy=None, max_agreement_drop=0.03)
    assert len(kept) == 3
    failed = variants[1].manifest.model_copy(
        update={"parity": variants[1].manifest.parity.model_copy(update={"passed": False})}
    )
    kept, excluded = admissible([variants[0], dataclasses.replace(variants[1], manifest=failed)], None, None)
    assert len(kept) == 1 and excluded == [
        "toy-onnx-dynamic-int8: failed its parity gate at export (the server refuses it)"
    ]
    with pytest.raises(NotFoundError, match="leaves no variant to tune:\n  toy-onnx: accuracy"):
        build_space(*admissible(variants, 0.99, None), cpus=2)


def test_the_space_starts_at_the_default_and_is_bounded_by_the_cpus(tmp_path, space):
    default = space.default()
    assert default.variant == "toy-onnx", "the plain ONNX variant is what a user serves untuned"
    assert default.config == {
        "instances": 1,
        "intra_op_threads": 0,
        "max_batch_size": 8,  # the manifest's
        "max_queue_delay_ms": 0.0,
        "preferred_batch_sizes": [],
    }
    assert default.workers == 1
    knobs = dict(space.knobs)
    assert knobs["workers"] == knobs["instances"] == (1, 2)
    assert knobs["max_batch_size"] == (8, 1) and knobs["preferred_batch_sizes"] == ((), (4, 8))
    one_cpu = dict(build_space(list(space.variants.values()), [], cpus=1, only=("workers", "variant")).knobs)
    assert one_cpu["workers"] == (1,) and one_cpu["max_queue_delay_ms"] == (0.0,) and len(one_cpu["variant"]) == 2
    small = space.with_value(space.with_value(default, "max_batch_size", 1), "preferred_batch_sizes", (4, 8))
    assert small.config["preferred_batch_sizes"] == [], "preferred sizes above the batch limit are dropped"
    with pytest.raises(InvalidArgumentError, match="--knobs \\['threads'\\]"):
        build_space(list(space.variants.values()), [], cpus=2, only=("threads",))


def _tuner(space: Space, measure, budget_s: float = 1e6) -> Tuner:
    return Tuner(space, measure, "max-rps", budget_s, guess_s=1.0)


def test_brute_measures_every_candidate_once(space):
    narrow = build_space(list(space.variants.values()), [], cpus=2, only=("workers", "max_queue_delay_ms"))
    measure, calls = _fake_measure(_separable)
    tuner = _tuner(narrow, measure)
    brute(tuner)
    brute(tuner)  # a second pass measures nothing again
    assert len(calls) == narrow.size == 6 and tuner.explored
    best = max(tuner.measured.values(), key=lambda m: m.max_rps_under_slo or 0)
    assert best.candidate.assignment["workers"] == 2 and best.candidate.assignment["max_queue_delay_ms"] == 1.0


def test_quick_measures_a_small_fraction_and_finds_a_separable_optimum(space):
    measure, calls = _fake_measure(_separable)
    tuner = _tuner(space, measure)
    quick(tuner)
    assert space.size == 2 * 2 * 2 * 3 * 2 * 3 * 2 == 288
    one_pass = 1 + sum(len(v) - 1 for _, v in space.knobs)
    assert one_pass == 10 and len(calls) == len({c.key for c in calls}) <= 2 * one_pass, "a second pass confirms"
    best = max(tuner.measured.values(), key=lambda m: m.max_rps_under_slo or 0).candidate.assignment
    assert (best["variant"], best["workers"], best["max_queue_delay_ms"], best["instances"]) == ("toy-onnx", 2, 1.0, 2)


def test_quick_passes_again_while_knobs_interact(space):
    """Two workers only pay with one thread each: the first pass takes the thread, the second the workers."""

    def interacting(given: dict) -> float:
        workers, threads = given["workers"], given["intra_op_threads"]
        if workers == 2:
            return 1800.0 if threads == 1 else 800.0
        return 1050.0 if threads == 1 else 1000.0

    measure, calls = _fake_measure(interacting)
    tuner = _tuner(space, measure)
    quick(tuner)
    best = max(tuner.measured.values(), key=lambda m: m.max_rps_under_slo or 0).candidate.assignment
    assert (best["workers"], best["intra_op_threads"]) == (2, 1)
    assert len(calls) < 30


def test_quick_keeps_the_current_value_against_a_gain_within_the_noise(space):
    measure, _ = _fake_measure(lambda given: 1000.0 + 20 * (given["workers"] == 2))  # +2%: noise
    tuner = _tuner(space, measure)
    quick(tuner)
    assert all(m.candidate.workers == 1 for m in tuner.measured.values() if m.candidate.assignment["instances"] == 2)


def test_optuna_finds_the_best_of_a_small_space_and_stops_once_it_is_explored(space):
    narrow = build_space(list(space.variants.values()), [], cpus=2, only=("workers", "max_queue_delay_ms"))
    measure, calls = _fake_measure(_separable)
    tuner = _tuner(narrow, measure)
    tpe(tuner, seed=1)
    assert calls[0] == narrow.default(), "the default is measured first"
    assert len(calls) == len({c.key for c in calls}) == 6 and tuner.explored


def test_optuna_resumes_from_measured_candidates_without_measuring_them_again(space):
    narrow = build_space(list(space.variants.values()), [], cpus=2, only=("workers", "max_queue_delay_ms"))
    measure, calls = _fake_measure(_separable)
    earlier = [narrow.default(), narrow.with_value(narrow.default(), "workers", 2)]
    tuner = _tuner(narrow, measure)
    tuner.measured.update((c.key, measure(c)) for c in earlier)
    calls.clear()
    tpe(tuner, seed=2)
    assert len(calls) == 4 and not {c.key for c in calls} & {c.key for c in earlier} and tuner.explored


def test_the_budget_stops_a_search_once_the_next_candidate_would_not_fit(space):
    now = [0.0]
    measure, calls = _fake_measure(_separable, wall_s=25.0)

    def timed(candidate: Candidate) -> Measurement:
        now[0] += 25.0  # each measurement takes 25 s of the tuner's clock
        return measure(candidate)

    tuner = Tuner(space, timed, "max-rps", budget_s=60.0, guess_s=1.0, clock=lambda: now[0])
    with pytest.raises(BudgetSpentError):
        quick(tuner)
    assert len(calls) == 2, "a third 25 s candidate after 50 s would end past 60 s"


def test_scores_follow_the_objective_and_the_slo():
    default = Candidate((("variant", "a"),))
    fast = Measurement(default, (_level(1, 500, 4.0), _level(8, 2000, 15.0), _level(32, 2600, 30.0)), 300.0)
    assert score(fast, "max-rps") == 2000, "the level over the SLO does not count"
    assert score(fast, "min-p99") == -4.0 and score(fast, "min-p99", target_rps=1000) == -15.0
    assert score(fast, "min-memory") == -300.0 and score(fast, "min-memory", target_rps=3000) is None
    assert score(dataclasses.replace(fast, error="crashed"), "max-rps") is None
    slow = Measurement(default, (_level(1, 100, 25.0),), 100.0)
    failing = Measurement(default, (_level(1, 400, 90.0),), 100.0)
    assert score(slow, "max-rps") is None
    found = closest_miss([failing, slow], SLOS)
    assert found is not None and found[0] is slow and found[1].users == 1
    assert "p99 25.00 ms, objective < 20.00 ms: 25.0% over" in found[1].slos[0].detail


def test_a_measurement_survives_tune_json(space):
    measure, _ = _fake_measure(_separable)
    original = measure(space.with_value(space.default(), "preferred_batch_sizes", (4, 8)))
    again = Measurement.from_json(original.to_json())
    assert again == original and again.candidate.key == original.candidate.key


def test_options_refuse_what_cannot_be_tuned(tmp_path):
    with pytest.raises(InvalidArgumentError, match="--slo 'p99<<20ms' does not parse"):
        TuneOptions(tmp_path, "toy", ("p99<<20ms",))
    with pytest.raises(InvalidArgumentError, match="at least one --slo"):
        TuneOptions(tmp_path, "toy", ())
    with pytest.raises(InvalidArgumentError, match="not both"):
        TuneOptions(tmp_path, "toy", ("p99<1s",), min_accuracy=0.9, max_agreement_drop=0.01)
    with pytest.raises(InvalidArgumentError, match="tune measures over HTTP"):
        TuneOptions(tmp_path, "toy", ("p99<1s",), protocol="v2-grpc")
    with pytest.raises(InvalidArgumentError, match="--cpus takes a CPU list"):
        parse_cpus("0-x")
    with pytest.raises(InvalidArgumentError, match="this machine offers CPUs"):
        parse_cpus("4096")
    assert parse_cpus("0") == (0,)


def test_the_confirmation_reports_the_ratio_of_medians_and_how_far_rounds_disagree():
    default, tuned = Candidate((("variant", "a"),)), Candidate((("variant", "b"),))

    def runs(candidate: Candidate, *rps: float) -> tuple[Measurement, ...]:
        return tuple(Measurement(candidate, (_level(8, r, 10.0),), 100.0) for r in rps)

    steady = Confirmation(runs(default, 1000, 1100, 1050), runs(tuned, 1500, 1600, 1575))
    assert steady.default_rps == 1050 and steady.best_rps == 1575 and steady.ratio == 1.5
    assert steady.spread == pytest.approx(1.1)
    noisy = Confirmation(runs(default, 1000, 3000), runs(tuned, 2000, 2100))
    assert noisy.spread == 3.0
    never = Confirmation((Measurement(default, (_level(1, 50, 90.0),), 100.0),), runs(tuned, 500))
    assert never.default_rps == 0 and never.ratio is None


def test_a_winner_that_loses_the_confirming_rounds_is_not_applied(tmp_path, space):
    options = TuneOptions(tmp_path / "repo", "toy", ("p99<20ms",), apply=True, out=tmp_path / "out")
    measure, _ = _fake_measure(_separable)
    default, tuned = measure(space.default()), measure(space.with_value(space.default(), "workers", 2))
    lost = Confirmation((dataclasses.replace(default, levels=(_level(8, 1200, 10.0),)),), (default,))
    result = TuneResult(options, space, (default, tuned), tuned, default, lost, 10.0, "budget", ())
    assert result.confirmed_loss
    said: list[str] = []
    options.out.mkdir()
    write_outputs(result, said.append)
    assert not (tmp_path / "repo" / "toy-onnx" / "config.yaml").read_text().startswith("# written by")
    assert any(line.startswith("\nnot applied: the winner lost to the default") for line in said)
    assert "keep the default (--apply writes nothing)" in said[0]
    assert json.loads((options.out / "tune.json").read_text())["confirmation"]["ratio"] == 1100 / 1200


def test_the_k8s_patch_sizes_the_default_when_the_winner_lost_its_confirming_rounds(tmp_path, space):
    """It sized pods for the winner the verdict said not to deploy: its workers, its memory and its req/s."""
    import yaml

    options = TuneOptions(tmp_path / "repo", "toy", ("p99<20ms",), out=tmp_path / "out", target_rps=3000)
    measure, _ = _fake_measure(_separable)
    default = measure(space.default())
    tuned = dataclasses.replace(measure(space.with_value(space.default(), "workers", 2)), rss_mb=300.0)
    rounds = (dataclasses.replace(default, levels=(_level(8, 1200, 10.0),)),)
    lost = Confirmation(rounds, (dataclasses.replace(tuned, levels=(_level(8, 900, 10.0),)),))
    result = TuneResult(options, space, (default, tuned), tuned, default, lost, 10.0, "budget", ())
    assert result.confirmed_loss
    options.out.mkdir()
    write_outputs(result, [].append)
    folder = options.out / "k8s"
    (container,) = yaml.safe_load((folder / "deployment-patch.yaml").read_text())["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["env"] == [{"name": "MODELPORT_WORKERS", "value": "1"}]
    assert container["resources"]["requests"]["memory"] == "125Mi"  # the default's 100 MB peak RSS + 25%
    assert "1200 req/s per pod" in (folder / "kustomization.yaml").read_text()
    assert yaml.safe_load((folder / "hpa-patch.yaml").read_text())["spec"]["minReplicas"] == 4  # 3000 / (0.7 x 1200)


@pytest.mark.parametrize("default_wins", [True, False])
def test_without_apply_a_winner_that_is_not_kept_is_not_offered_for_apply(tmp_path, space, default_wins):
    """It printed "the winner's config.yaml (--apply writes it)" under "keep the default (--apply writes nothing)"."""
    options = TuneOptions(tmp_path / "repo", "toy", ("p99<20ms",), out=tmp_path / "out")
    measure, _ = _fake_measure(_separable)
    default, tuned = measure(space.default()), measure(space.with_value(space.default(), "workers", 2))
    lost = Confirmation((dataclasses.replace(default, levels=(_level(8, 1200, 10.0),)),), (default,))
    best, confirmation = (default, None) if default_wins else (tuned, lost)
    result = TuneResult(options, space, (default, tuned), best, default, confirmation, 10.0, "budget", ())
    said: list[str] = []
    options.out.mkdir()
    write_outputs(result, said.append)
    why = "the default configuration won" if default_wins else "the winner lost to the default in the confirming"
    assert any(line.startswith(f"\nnothing to apply (--apply writes nothing): {why}") for line in said), said
    assert not any("(--apply writes it)" in line for line in said), said


def test_when_the_default_wins_apply_leaves_the_models_config_alone(tmp_path, space):
    options = TuneOptions(tmp_path / "repo", "toy", ("p99<20ms",), apply=True, out=tmp_path / "out")
    measure, _ = _fake_measure(_separable)
    default = measure(space.default())
    config = tmp_path / "repo" / "toy-onnx" / "config.yaml"
    before = config.read_text() if config.exists() else None
    result = TuneResult(options, space, (default,), default, default, None, 10.0, "budget", ())
    said: list[str] = []
    options.out.mkdir()
    write_outputs(result, said.append)
    assert (config.read_text() if config.exists() else None) == before, "nothing to change, nothing written"
    assert any(line.startswith("\nnot applied: the default configuration won") for line in said), said
    assert "the default configuration won: nothing to change (--apply writes nothing)" in said[0]


def test_a_busy_load_generator_marks_the_ceiling_as_its_own():
    candidate = Candidate((("variant", "a"),))
    calm = Measurement(candidate, (_level(8, 2000, 10.0),), 100.0)
    busy = Measurement(candidate, (dataclasses.replace(_level(8, 2000, 10.0), loadgen_cpu=0.97),), 100.0)
    assert not calm.loadgen_bound and busy.loadgen_bound
    assert "(load generator bound)" in candidate_line(busy) and "generator" not in candidate_line(calm)


def test_a_variant_without_batching_is_measured_once_for_every_batching_setting(tmp_path):
    """The server caps config.yaml's max_batch_size at the manifest's (0 for a static-shape TFLite model):
    candidates that differ only above the cap are one server, measured once and written as it ran."""
    onnx, tflite = _variants(tmp_path, {"onnx": 0.97, "tflite": 0.97})
    unbatched = dataclasses.replace(tflite, manifest=tflite.manifest.model_copy(update={"max_batch_size": 0}))
    space = build_space([onnx, unbatched], [], cpus=2, only=("variant", "max_batch_size", "max_queue_delay_ms"))
    assert space.size == 2 * 2 * 3
    measure, calls = _fake_measure(lambda given: 1000.0)
    tuner = _tuner(space, measure)
    brute(tuner)
    assert len(calls) == 6 + 1 == len(tuner.measurements) and tuner.explored
    (alone,) = [c for c in calls if c.variant == "toy-tflite"]
    assert alone.config["max_batch_size"] == 0 and alone.config["max_queue_delay_ms"] == 0.0
    assert all(c.config["max_batch_size"] in (8, 1) for c in calls if c.variant == "toy-onnx")


def test_the_confirmation_judges_the_winner_on_the_objective_it_won_on():
    """A min-memory winner serving fewer req/s than the default did not lose: it uses less memory."""
    default, tuned = Candidate((("variant", "a"),)), Candidate((("variant", "b"),))
    lean = Confirmation(
        (Measurement(default, (_level(8, 1000, 10.0),), 112.0),),
        (Measurement(tuned, (_level(8, 900, 12.0),), 94.0),),
        "min-memory",
    )
    assert lean.ratio == 0.9 and not lean.winner_lost
    assert any("min-memory: winner 94.00 MB vs default 112.00 MB peak RSS" in line for line in objective_line(lean))
    fat = dataclasses.replace(lean, best=(Measurement(tuned, (_level(8, 1500, 5.0),), 130.0),))
    assert fat.winner_lost, "more memory than the default, however fast"
    slower = dataclasses.replace(fat, objective="min-p99")
    assert not slower.winner_lost and objective_line(slower)[0].startswith("min-p99: winner 5.00 ms vs default 10.00")
    assert dataclasses.replace(lean, objective="max-rps").winner_lost


def test_failed_requests_miss_the_slo_unless_allowed(tmp_path):
    """A level with failed requests misses even an SLO that names only latency (--max-error-rate, default 0)."""
    only_latency = TuneOptions(tmp_path, "toy", ("p99<20ms",))
    assert [s.text for s in only_latency.parsed_slos] == ["p99<20ms", "error_rate<=0% (--max-error-rate)"]
    allowed = TuneOptions(tmp_path, "toy", ("p99<20ms",), max_error_rate=0.05)
    own = TuneOptions(tmp_path, "toy", ("p99<20ms", "error_rate<10%"))
    assert [s.text for s in own.parsed_slos] == ["p99<20ms", "error_rate<10%"], "an error_rate SLO decides"
    point = LevelPoint(4, 500.0, {"p50": 1.0, "p99": 2.0}, 0.02, 500, 0.3, 1.0)
    verdicts = [all(s.check(point.measured()).passed for s in o.parsed_slos) for o in (only_latency, allowed, own)]
    assert verdicts == [False, True, True]
    with pytest.raises(InvalidArgumentError, match="--max-error-rate takes a fraction"):
        TuneOptions(tmp_path, "toy", ("p99<20ms",), max_error_rate=2.0)
