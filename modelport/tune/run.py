"""``modelport tune REPO/NAME``: build the space, search it within the budget, confirm the winner, report.

The winner is re-measured against the default configuration in interleaved rounds (default, best,
default, best, ...: each a fresh server), and the ratio of their throughputs under the SLO in those
rounds is the figure reported; the search's own numbers rank candidates, they are not the claim.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any

from modelport.errors import InvalidArgumentError
from modelport.loadtest.compare import find_variants
from modelport.tune.measure import Bench, measure
from modelport.tune.options import TuneOptions
from modelport.tune.result import TUNE_FILE, Confirmation, Measurement, TuneResult, score
from modelport.tune.search import SEARCHERS, BudgetSpentError, Tuner
from modelport.tune.space import Space, admissible, build_space

__all__ = ["STARTUP_GUESS_S", "candidate_guess_s", "run_tune"]

STARTUP_GUESS_S = 4.0  # a server's start (imports, model load, golden check) before the first level


def candidate_guess_s(options: TuneOptions) -> float:
    """What one candidate takes at least: a server's start and three levels of the sweep."""
    return STARTUP_GUESS_S + min(len(options.levels), 3) * options.level_s


def run_tune(options: TuneOptions, say: Callable[[str], None] = print) -> TuneResult:
    """Search the space of ``options.family`` and write tune.json, tune.html (and config/k8s files).

    Progress lines go to ``say`` unless ``options.quiet``; the table and the verdict always do.
    """
    from modelport.tune.report import write_outputs

    space = _space(options)
    guess = candidate_guess_s(options)
    if options.budget_s < guess:
        raise InvalidArgumentError(
            f"--budget {options.budget_s:g}s is too small for one candidate: measuring one takes about {guess:.0f}s "
            f"(a server start, ~{STARTUP_GUESS_S:g}s, and at least 3 sweep levels of {options.level_s:g}s); "
            f"give --budget {math.ceil(guess)}s or more"
        )
    previous = _previous(options, space) if options.resume else []
    options.out.mkdir(parents=True, exist_ok=True)
    spare = tuple(sorted(os.sched_getaffinity(0) - set(options.cpus)))
    progress = (lambda _: None) if options.quiet else say
    bench = Bench(options, space, spare, progress)
    _announce(options, space, spare, previous, progress)
    session: list[Measurement] = []
    tuner = Tuner(space, _recorder(bench, previous, session), options.objective, options.budget_s, guess)
    tuner.target_rps = options.target_rps
    tuner.measured.update((m.candidate.key, m) for m in previous)
    stopped = "search done"
    try:
        SEARCHERS[options.search](tuner, options.seed)
    except BudgetSpentError:
        stopped = "budget"
    search_s = tuner.clock() - tuner.started
    stopped = "explored" if tuner.explored else stopped
    result = _result(options, space, tuner, search_s, stopped, bench)
    write_outputs(result, say)
    return result


def _space(options: TuneOptions) -> Space:
    variants = find_variants(options.repository, options.family)
    kept, excluded = admissible(variants, options.min_accuracy, options.max_agreement_drop)
    return build_space(kept, excluded, len(options.cpus), options.knobs)


def _previous(options: TuneOptions, space: Space) -> list[Measurement]:
    """The measurements of the tune.json to resume: of this family, of the variants this space admits."""
    path = options.out / TUNE_FILE
    if not path.exists():
        raise InvalidArgumentError(f"--resume: no {path} to continue from")
    try:
        data = json.loads(path.read_text())
        measured = [Measurement.from_json(entry) for entry in data["candidates"]]
        tuned = (data["family"], data["repository"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgumentError(f"--resume: {path} is not a tune.json modelport wrote ({exc!r})") from None
    if tuned != (options.family, str(options.repository)):
        raise InvalidArgumentError(
            f"--resume: {path} is the tune of {tuned[0]!r} in {tuned[1]}, not of {options.family!r} in "
            f"{options.repository}; give this tune another --out"
        )
    # a variant the accuracy floor now keeps out must not win on an old measurement
    return [m for m in measured if m.candidate.variant in space.variants]


def _announce(
    options: TuneOptions, space: Space, spare: tuple[int, ...], previous: list[Measurement], say: Any
) -> None:
    say(f"tune: {options.family!r}, {len(space.variants)} variant(s), space of {space.size} candidate(s)")
    for line in space.excluded:
        say(f"  excluded {line}")
    where = f"CPUs {list(spare)}" if spare else "the same CPUs (no spare one: it competes with the server)"
    say(f"  server pinned to CPUs {list(options.cpus)}; load generator on {where}")
    say(f"  search {options.search}, objective {options.objective}, budget {options.budget_s:g}s, SLO {options.slos}")
    if previous:
        say(f"  resuming: {len(previous)} candidate(s) already measured in {options.out / TUNE_FILE}")


def _recorder(bench: Bench, previous: list[Measurement], session: list[Measurement]) -> Callable[..., Measurement]:
    """Measure a candidate, print its line, and keep tune.json current (an interrupted tune resumes)."""
    from modelport.tune.report import write_partial
    from modelport.tune.table import candidate_line

    def record(candidate: Any) -> Measurement:
        bench.say(f"  measuring {candidate.variant} {candidate.settings()} ...")
        measured = measure(candidate, bench)
        session.append(measured)
        bench.say("    " + candidate_line(measured))
        write_partial(bench.options, [*previous, *session])
        return measured

    return record


def _result(
    options: TuneOptions, space: Space, tuner: Tuner, search_s: float, stopped: str, bench: Bench
) -> TuneResult:
    measurements = tuner.measurements
    scored = [(tuner_score, m) for m in measurements if (tuner_score := _score(options, m)) is not None]
    best = max(scored, key=lambda pair: pair[0])[1] if scored else None
    default = tuner.measured.get(space.default().key)
    confirmation = _confirm(best, space, bench) if best is not None and options.confirm_rounds else None
    return TuneResult(options, space, measurements, best, default, confirmation, search_s, stopped, bench.loadgen_cpus)


def _score(options: TuneOptions, measurement: Measurement) -> float | None:
    return score(measurement, options.objective, options.target_rps)


def _confirm(best: Measurement, space: Space, bench: Bench) -> Confirmation:
    """Default and winner, alternating, ``confirm_rounds`` times each (fresh servers, the same sweep)."""
    default_runs: list[Measurement] = []
    best_runs: list[Measurement] = []
    bench.say(f"\nconfirming: the winner and the default, interleaved, {bench.options.confirm_rounds} round(s)")
    for _ in range(bench.options.confirm_rounds):
        default_runs.append(measure(space.default(), bench))
        best_runs.append(default_runs[-1] if best.candidate == space.default() else measure(best.candidate, bench))
    options = bench.options
    return Confirmation(tuple(default_runs), tuple(best_runs), options.objective, options.target_rps)
