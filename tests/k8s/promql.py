"""PromQL expressions against the series a server really exports: promql-parser (the Rust parser's Python
binding) parses each expression, and a walk over its AST follows which labels every sub-expression
carries, so that an unknown metric, a label a series does not have, a ``by``/``on`` label that is not
there, or two operands whose labels can never match are reported instead of silently drawing nothing."""

from __future__ import annotations

import re
from collections.abc import Mapping

import promql_parser as pq
from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[str]

# Grafana's own interval variables, which stand for a range: replaced by a range PromQL accepts.
GRAFANA_RANGES = ("$__rate_interval", "$__interval", "$__range")
# Functions whose result keeps the labels of their (single) vector or range argument.
_KEEP_LABELS = (
    frozenset({"rate", "irate", "increase", "delta", "idelta", "deriv", "resets", "changes"})
    | frozenset({"abs", "ceil", "floor", "round", "clamp", "clamp_min", "clamp_max", "exp", "ln", "log2", "log10"})
    | frozenset({"sqrt", "sgn", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time"})
    | frozenset({"count_over_time", "last_over_time", "quantile_over_time", "stddev_over_time"})
)
# Aggregations whose result keeps every label of the input (they select series, they do not merge them).
_SELECTING = frozenset({"topk", "bottomk", "limitk", "limit_ratio"})
_SET_OPERATORS = frozenset({"and", "or", "unless"})
_UNKNOWN = "unknown metric"


def exported(metrics_page: str) -> dict[str, Labels]:
    """Every sample name on a ``/metrics`` page (``_total``, ``_bucket``... as scraped) and its label names."""
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics_page):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in series.items()}


class Checker:
    """Checks expressions against ``series`` (sample name -> label names); ``target_labels`` are the ones
    Prometheus adds to every scraped series (job, instance, namespace, pod...)."""

    def __init__(self, series: Mapping[str, Labels], target_labels: Labels) -> None:
        self._series = dict(series)
        self._target = target_labels

    def problems(self, expr: str) -> list[str]:
        """What is wrong with one expression; ``[]`` when every metric, label and match is real."""
        return self.labels(expr)[1]

    def labels(self, expr: str) -> tuple[Labels | None, list[str]]:
        """The labels the expression's result carries (``None``: a scalar) and its problems."""
        text = expr
        for variable in GRAFANA_RANGES:
            text = text.replace(variable, "5m")
        try:
            tree = pq.parse(text)
        except (ValueError, RuntimeError) as exc:
            return None, [f"does not parse: {exc}"]
        problems: list[str] = []
        labels = self._walk(tree, problems)
        unknown = [problem for problem in problems if problem.startswith(_UNKNOWN)]
        return labels, unknown or problems  # an unknown metric's labels are unknown too: no follow-up errors

    def _walk(self, node: pq.Expr, problems: list[str]) -> Labels | None:
        if isinstance(node, pq.NumberLiteral | pq.StringLiteral):
            return None
        if isinstance(node, pq.VectorSelector):
            return self._selector(node, problems)
        if isinstance(node, pq.MatrixSelector):
            return self._selector(node.vector_selector, problems)
        if isinstance(node, pq.ParenExpr | pq.UnaryExpr | pq.SubqueryExpr):
            return self._walk(node.expr, problems)
        if isinstance(node, pq.Call):
            return self._call(node, problems)
        if isinstance(node, pq.AggregateExpr):
            return self._aggregate(node, problems)
        if isinstance(node, pq.BinaryExpr):
            return self._binary(node, problems)
        problems.append(f"{type(node).__name__} is not understood by the checker: {node}")
        return frozenset()

    def _selector(self, node: pq.VectorSelector, problems: list[str]) -> Labels:
        if not node.name:
            problems.append(f"{node}: a selector without a metric name cannot be checked")
            return frozenset()
        if node.name not in self._series:
            problems.append(f"{_UNKNOWN} {node.name!r}")
            return frozenset()
        have = self._series[node.name] | self._target
        for matcher in node.matchers.matchers:
            if matcher.name not in have and matcher.name != "__name__":
                problems.append(f"{node.name} has no label {matcher.name!r} (it has {sorted(have)})")
        return have

    def _call(self, node: pq.Call, problems: list[str]) -> Labels | None:
        name = node.func.name
        results = [self._walk(arg, problems) for arg in node.args]
        vectors = [labels for labels in results if labels is not None]
        if name == "histogram_quantile":
            if vectors and "le" not in vectors[0]:
                problems.append(f"histogram_quantile over series without 'le': {node}")
            return vectors[0] - {"le"} if vectors else frozenset()
        if name in _KEEP_LABELS and len(vectors) == 1:
            return vectors[0]
        if name in {"scalar", "time"}:
            return None
        if name in {"vector", "absent", "absent_over_time"}:
            return frozenset()
        problems.append(f"function {name}() is not known to the checker")
        return frozenset()

    def _aggregate(self, node: pq.AggregateExpr, problems: list[str]) -> Labels:
        inner = self._walk(node.expr, problems) or frozenset()
        op = str(node.op)
        if op in _SELECTING:
            return inner
        if node.modifier is None:
            return frozenset()
        listed = frozenset(node.modifier.labels)
        if node.modifier.type == pq.AggModifierType.Without:
            return inner - listed
        for label in sorted(listed - inner):
            problems.append(f"{op} by ({label}): the aggregated series have no such label")
        return listed & inner

    def _binary(self, node: pq.BinaryExpr, problems: list[str]) -> Labels | None:
        lhs, rhs = self._walk(node.lhs, problems), self._walk(node.rhs, problems)
        if lhs is None or rhs is None:
            return rhs if lhs is None else lhs
        op, modifier = str(node.op), node.modifier
        if op == "or":
            return lhs & rhs
        matching = modifier.matching if modifier is not None else None
        listed = frozenset(matching.labels) if matching is not None else frozenset()
        if matching is not None and matching.type == pq.LabelModifierType.Include:
            for label in sorted(listed - (lhs & rhs)):
                problems.append(f"on ({label}): not a label of both sides of {op}")
        elif lhs - listed != rhs - listed:
            problems.append(
                f"the sides of {op} never match: {sorted(lhs - listed)} vs {sorted(rhs - listed)} "
                f"(aggregate both by the same labels, or use on(...)/ignoring(...))"
            )
        group = frozenset(modifier.group_labels or ()) if modifier is not None else frozenset()
        card = modifier.card if modifier is not None else None
        if card == pq.VectorMatchCardinality.OneToMany:
            return rhs | (group & lhs)
        return lhs | (group & rhs) if op not in _SET_OPERATORS else lhs


_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.+),\s*(?P<label>\w+)\s*\)\s*$")


def label_values_problems(query: str, checker: Checker) -> list[str]:
    """A Grafana ``label_values(selector, label)`` variable query: the selector and the label exist."""
    found = _LABEL_VALUES.match(query)
    if found is None:
        return [f"not a label_values(selector, label) query: {query}"]
    labels, problems = checker.labels(found["selector"])
    if labels is not None and found["label"] not in labels:
        problems.append(f"label_values: {found['selector']} has no label {found['label']!r}")
    return problems
