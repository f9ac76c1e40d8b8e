"""k8s/components/observability against the server: the Grafana dashboard and the PrometheusRule render,
validate, and query only metrics and labels a real server exports (scraped from its /metrics)."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest

from modelport import errors
from modelport.serving.errors import http_status
from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from tests.k8s import promql, tools
from tests.k8s.conftest import VARIANTS, render
from tests.k8s.manifests import all_of, one
from tests.k8s.promql import Checker, Labels
from tests.k8s.tools import K8S, K8S_VERSIONS, SCHEMAS, Doc
from tests.serving import fakes

COMPONENT = K8S / "components" / "observability"
# What Prometheus adds to every series it scrapes through the ServiceMonitor (Prometheus Operator).
TARGET_LABELS: Labels = frozenset({"job", "instance", "namespace", "service", "pod", "container", "endpoint"})
# Grafana's global variables (the dashboard may use them without defining them).
GRAFANA_BUILTINS = frozenset({"__rate_interval", "__interval", "__range", "__all"})
SEVERITIES = ("warning", "critical")


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    (variant,) = [v for v in VARIANTS if v.name == "cpu+components"]
    return render(variant, tmp_path_factory.getbasetemp() / "kustomize")


@pytest.fixture(scope="module")
def dashboard(docs: list[Doc]) -> Doc:
    configmap = _dashboard_configmap(docs)
    (text,) = configmap["data"].values()
    parsed: Doc = json.loads(text)
    return parsed


@pytest.fixture(scope="module")
def rules(docs: list[Doc]) -> list[Doc]:
    return [rule for group in one(docs, "PrometheusRule")["spec"]["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Labels]:
    """Sample names and their labels on a real server's /metrics after a few inferences."""
    return _scrape(tmp_path_factory.mktemp("observability"))


@pytest.fixture(scope="module")
def checker(scraped: dict[str, Labels]) -> Checker:
    return Checker(scraped, TARGET_LABELS)


def _scrape(tmp_path: Path) -> dict[str, Labels]:
    async def scrape() -> str:
        fakes.write_model(tmp_path / "repo", "echo")
        # inline_below_ms: the second batch runs inline, so modelport_inline_batches_total has a series too
        plane = build(ServerSettings(repository=tmp_path / "repo", max_queue_delay_ms=0, inline_below_ms=1000))
        await plane.start()
        try:
            transport = httpx.ASGITransport(app=create_app(plane))
            async with httpx.AsyncClient(transport=transport, base_url="http://pod") as http:
                body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [0.0] * 6}]}
                for _ in range(2):
                    assert (await http.post("/v2/models/echo/infer", json=body)).status_code == 200
                assert (await http.post("/v2/models/nothing/infer", json=body)).status_code == 404
                return (await http.get("/metrics")).text
        finally:
            await plane.close()

    return promql.exported(asyncio.run(scrape()))


def _dashboard_configmap(docs: list[Doc]) -> Doc:
    (configmap,) = [c for c in all_of(docs, "ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard")]
    return configmap


def _expressions(dashboard: Doc, rules: list[Doc]) -> Iterator[tuple[str, str]]:
    """(where, expression) for every PromQL query in the dashboard's panels and the rules."""
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for rule in rules:
        yield f"rule {rule['alert']}", rule["expr"]


def test_dashboard_configmap(docs: list[Doc]) -> None:
    configmap = _dashboard_configmap(docs)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"  # what the Grafana sidecar looks for
    assert configmap["metadata"]["name"] == "modelport-dashboard"  # no hash suffix: replaced in place
    ((name, text),) = configmap["data"].items()
    assert name.endswith(".json")
    assert json.loads(text) == json.loads((COMPONENT / "dashboard.json").read_text())
    assert one(docs, "PrometheusRule")["metadata"]["labels"]["app.kubernetes.io/name"] == "modelport"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_component_alone_validates(version: str, tmp_path: Path) -> None:
    """The component on the base alone renders the two objects, valid (core kinds strictly, the rule by schema)."""
    rendered = tools.kustomize_with(K8S / "overlays" / "cpu", (COMPONENT,), tmp_path)
    added = [d for d in rendered if d["kind"] == "PrometheusRule" or d["metadata"]["name"] == "modelport-dashboard"]
    assert sorted(d["kind"] for d in added) == ["ConfigMap", "PrometheusRule"]
    assert [error for doc in added for error in tools.validate(doc, version)] == []


def test_dashboard_matches_the_grafana_schema(dashboard: Doc) -> None:
    schema = json.loads((SCHEMAS / "grafana-dashboard.json").read_text())
    assert [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(dashboard)] == []
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
    assert _overlaps(dashboard["panels"]) == []


def _overlaps(panels: list[Doc]) -> list[str]:
    """Panels outside the 24-column grid or on top of each other."""
    found = [f"{p['title']} is wider than the grid" for p in panels if p["gridPos"]["x"] + p["gridPos"]["w"] > 24]
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                if (x, y) in cells:
                    found.append(f"{panel['title']} overlaps {cells[x, y]}")
                cells[x, y] = panel["title"]
    return sorted(set(found))


def _variables_used(dashboard: Doc) -> set[str]:
    """Every ``$name`` and ``${name}`` / ``${name:format}`` anywhere in the dashboard."""
    return {a or b for a, b in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", json.dumps(dashboard))}


def test_every_variable_is_defined(dashboard: Doc) -> None:
    defined = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "model", "version"} <= defined
    assert _variables_used(dashboard) - GRAFANA_BUILTINS - defined == set()
    assert {"model", "version"} <= _variables_used(dashboard)  # the panels filter on them


def test_every_expression_is_real(dashboard: Doc, rules: list[Doc], checker: Checker) -> None:
    problems = {where: checker.problems(expr) for where, expr in _expressions(dashboard, rules)}
    assert {where: found for where, found in problems.items() if found} == {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert promql.label_values_problems(variable["query"]["query"], checker) == [], variable["name"]


def test_dashboard_covers_every_modelport_metric(dashboard: Doc, rules: list[Doc], scraped: dict[str, Labels]) -> None:
    """Each modelport_* family the server exports is on the dashboard (histograms: any of their series)."""
    text = " ".join(expr for _, expr in _expressions(dashboard, rules))
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", name) for name in scraped}
    missing = {f for f in families if f.startswith("modelport_") and f not in text and f != "modelport_worker_requests"}
    assert missing == set()  # modelport_worker_requests: per-pid, only meaningful with --workers


def test_alerts_are_complete(rules: list[Doc], checker: Checker) -> None:
    assert {rule["alert"] for rule in rules} == {
        "ModelportHighErrorRatio",
        "ModelportHighLatencyP99",
        "ModelportModelNotReady",
        "ModelportQueueNearlyFull",
    }
    for rule in rules:
        assert re.fullmatch(r"\d+m", rule["for"]) and int(rule["for"][:-1]) >= 5, rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert set(rule["annotations"]) >= {"summary", "description"}, rule["alert"]
        kept, problems = checker.labels(rule["expr"])
        assert problems == [] and kept is not None, rule["alert"]
        used = set(re.findall(r"\$labels\.(\w+)", " ".join(rule["annotations"].values())))
        assert used - kept == set(), f"{rule['alert']}: annotations use labels its expression drops"


def _client_error_codes() -> set[str]:
    def subclasses(cls: type[errors.ModelportError]) -> Iterator[type[errors.ModelportError]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    classes: list[type[errors.ModelportError]] = [errors.ModelportError, *subclasses(errors.ModelportError)]
    return {cls.code for cls in classes if http_status(cls.__new__(cls)) < 500}  # http_status reads only .code


def test_error_ratio_counts_exactly_the_5xx_outcomes(dashboard: Doc, rules: list[Doc]) -> None:
    """The server-error queries exclude "success" and every code that maps to a 4xx, and nothing else."""
    (rule,) = [r for r in rules if r["alert"] == "ModelportHighErrorRatio"]
    (panel,) = [p for p in dashboard["panels"] if p["title"] == "Server error ratio"]
    for expr in (rule["expr"], panel["targets"][0]["expr"]):
        (excluded,) = re.findall(r'outcome!~"([^"]+)"', expr)
        assert set(excluded.split("|")) == {"success"} | _client_error_codes()


def test_checker_catches_mistakes(checker: Checker, dashboard: Doc) -> None:
    """The checker fails on what would draw an empty panel or an alert that never fires."""
    assert checker.problems('rate(modelport_requests{model="a"}[5m])') == ["unknown metric 'modelport_requests'"]
    assert "no label 'code'" in checker.problems('modelport_requests_total{code="500"}')[0]
    assert "by (outcome)" in checker.problems("sum by (outcome) (modelport_queue_depth)")[0]
    assert "never match" in checker.problems("modelport_requests_total / modelport_queue_depth")[0]
    no_le = "histogram_quantile(0.9, sum by (model) (rate(modelport_request_duration_seconds_bucket[5m])))"
    assert "without 'le'" in checker.problems(no_le)[0]
    assert "no label 'le'" in checker.problems("modelport_request_duration_seconds_count{le='1'}")[0]
    assert "model" in checker.problems('sum by (pod) (modelport_inflight_requests{model="a"})')[0]
    assert "not known" in checker.problems("predict_linear(modelport_queue_depth[5m], 600)")[0]
    assert "does not parse" in checker.problems("sum by (model (modelport_queue_depth)")[0]
    broken = copy.deepcopy(dashboard)
    target = broken["panels"][0]["targets"][0]
    target["expr"] = target["expr"].replace("modelport_requests_total", "modelport_request_total")
    assert checker.problems(target["expr"]) == ["unknown metric 'modelport_request_total'"]
    assert promql.label_values_problems("label_values(modelport_model_ready, protocol)", checker) != []
