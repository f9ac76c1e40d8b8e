"""The three searches over a ``Space``: brute force, a greedy coordinate search, and optuna's TPE.

Every search asks a ``Tuner`` for a candidate's score; the tuner measures each candidate once
(``--resume`` fills it with a previous run's measurements), keeps the clock and raises
``BudgetSpentError`` when the next measurement would not fit in the budget.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from modelport.tune.options import Objective, SearchKind
from modelport.tune.result import Measurement, score
from modelport.tune.space import Candidate, Space

__all__ = ["SEARCHERS", "BudgetSpentError", "Tuner", "brute", "quick", "tpe"]

_NOISE = 0.03  # quick search: a knob's new value must beat the current one by 3% to replace it


class BudgetSpentError(Exception):
    """The next measurement would not end within the budget."""


@dataclass
class Tuner:
    """Scores candidates by measuring each once, within ``budget_s`` of this session's time."""

    space: Space
    measure: Callable[[Candidate], Measurement]
    objective: Objective
    budget_s: float
    guess_s: float  # what a measurement is expected to take before one has been timed
    target_rps: float | None = None
    measured: dict[str, Measurement] = field(default_factory=dict)
    fresh: list[float] = field(default_factory=list)  # wall times of this session's measurements
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    def evaluate(self, candidate: Candidate) -> float | None:
        """The candidate's score (None: it met no SLO level); measures it when it has not been."""
        known = self.measured.get(candidate.key)
        if known is None:
            effective = self.space.effective(candidate)
            known = self.measured.get(effective.key)
            if known is None:
                if self.fresh and not self.affordable():
                    raise BudgetSpentError
                known = self.measure(effective)
                self.measured[effective.key] = known
                self.fresh.append(known.wall_s)
            self.measured[candidate.key] = known  # the same server as ``effective``: not measured twice
        return score(known, self.objective, self.target_rps)

    @property
    def measurements(self) -> tuple[Measurement, ...]:
        """Every distinct measurement, in the order taken (``measured`` also maps equivalent keys to them)."""
        return tuple({id(m): m for m in self.measured.values()}.values())

    def affordable(self) -> bool:
        estimate = sum(self.fresh) / len(self.fresh) if self.fresh else self.guess_s
        return self.clock() - self.started + estimate <= self.budget_s

    @property
    def explored(self) -> bool:
        return sum(key in self._space_keys for key in self.measured) >= self.space.size

    @cached_property
    def _space_keys(self) -> frozenset[str]:
        """The keys of the space's points (``measured`` also holds capped candidates outside it)."""
        names = [name for name, _ in self.space.knobs]
        points = itertools.product(*(values for _, values in self.space.knobs))
        return frozenset(Candidate(tuple(zip(names, values, strict=True))).key for values in points)


def _better(new: float | None, old: float | None, margin: float = 0.0) -> bool:
    if new is None:
        return False
    return old is None or new > old + margin * abs(old)


def brute(tuner: Tuner, seed: int = 0) -> None:
    """Every candidate in order, the default first."""
    names = [name for name, _ in tuner.space.knobs]
    for values in itertools.product(*(values for _, values in tuner.space.knobs)):
        tuner.evaluate(Candidate(tuple(zip(names, values, strict=True))))


def quick(tuner: Tuner, seed: int = 0) -> None:
    """Greedy coordinate search from the default: each knob in turn, keeping its best value.

    A pass measures the sum, not the product, of the knobs' value counts; a value replaces the
    current one only when it beats it by more than the noise margin. Passes repeat (at most three)
    while one changes something: knobs interact (``--workers 2`` may only pay with one thread each).
    """
    current = tuner.space.default()
    current_score = tuner.evaluate(current)
    for _ in range(3):
        start = current
        for knob, values in tuner.space.knobs:
            current, current_score = _coordinate(tuner, current, current_score, knob, values)
        if current == start:
            return


def _coordinate(
    tuner: Tuner, current: Candidate, current_score: float | None, knob: str, values: tuple[Any, ...]
) -> tuple[Candidate, float | None]:
    """The best value of one knob, the others held (the current one unless another wins by the margin)."""
    best, best_score = current, current_score
    for value in values if len(values) > 1 else ():
        candidate = tuner.space.with_value(current, knob, value)
        found = tuner.evaluate(candidate)
        if _better(found, best_score):
            best, best_score = candidate, found
    if best != current and _better(best_score, current_score, _NOISE):
        return best, best_score
    return current, current_score


def tpe(tuner: Tuner, seed: int = 0) -> None:
    """optuna's TPE sampler over the knobs (as categorical choices), the default enqueued first."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    knobs = tuner.space.knobs
    distributions: dict[str, optuna.distributions.BaseDistribution] = {
        name: optuna.distributions.CategoricalDistribution(range(len(vs))) for name, vs in knobs
    }
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    for measurement in tuner.measurements:  # --resume: the previous run's trials inform the sampler
        given = measurement.candidate.assignment
        if any(given.get(name) not in values for name, values in knobs):
            continue  # measured in another space (other --knobs)
        params = {name: values.index(given[name]) for name, values in knobs}
        value = score(measurement, tuner.objective, tuner.target_rps)
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=_value(value)))
    study.enqueue_trial({name: 0 for name, _ in knobs}, skip_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        picked = {name: trial.suggest_categorical(name, list(range(len(vs)))) for name, vs in knobs}
        candidate = Candidate(tuple((name, values[int(picked[name])]) for name, values in knobs))
        try:
            found = tuner.evaluate(candidate)
        except BudgetSpentError:
            study.stop()
            raise optuna.TrialPruned() from None
        if tuner.explored:
            study.stop()
        return _value(found)

    study.optimize(objective, n_trials=4 * tuner.space.size)


def _value(found: float | None) -> float:
    return -1e12 if found is None else found  # below every real score: met no SLO


SEARCHERS: dict[SearchKind, Callable[[Tuner, int], None]] = {"brute": brute, "quick": quick, "optuna": tpe}
