"""Operators' assets in ops/: the alert rules pass promtool, and the rules and dashboard read only real series."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.clients import (
    BaseServiceClient,
    BulkheadFullError,
    CircuitBreakerOpenError,
    ClientConfig,
    ServerError,
)
from app.clients.policies import ClientPolicies
from app.containers import Container
from app.errors import FAILURE_OUTCOMES as FAILURES
from app.main import create_app
from app.observability.metrics import MetricFamilies
from settings import load_settings
from tests.support.asgi import serve
from tests.support.upstream import Upstream, delayed, sequence
from tests.support.upstream import json as json_answer

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "ops" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "service-clients.json"
REQUIRED_ALERTS = {
    "ServiceClientCircuitOpen",
    "ServiceClientErrorRatioHigh",
    "ServiceClientRetryBudgetExhausted",
    "ServiceClientBulkheadSaturated",
    "ServiceClientInstancesEjected",
}
# Labels Prometheus itself adds to every scraped series. A scraped series' own label of
# the same name would be kept as ``exported_<name>`` (honor_labels: false, the default),
# which is why the instance families name the upstream's host:port ``server_address``.
TARGET_LABELS = {"job", "instance"}
REGIME = {"symbol": "EURUSD", "timeframe": "1h", "regime": "ranging", "confidence": 0.5, "metrics": {}}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool not installed: Debian's `prometheus` package provides it (apt-get install prometheus)"
        )
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60, check=False)  # noqa: S603


# -- promtool ---------------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    """`promtool check rules` accepts ops/prometheus/alerts.yml and finds every rule."""
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    """`promtool test rules` runs the synthetic-series tests of every alert, and they pass."""
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_would_catch_a_broken_rule(tmp_path) -> None:
    """The check is not vacuous: a rule with a PromQL syntax error fails it."""
    rules = yaml.safe_load(RULES.read_text())
    rules["groups"][0]["rules"][0]["expr"] = "max_over_time(service_client_circuit_state[1m] == 2"
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(rules))
    done = promtool("check", "rules", str(broken))
    assert done.returncode != 0


def test_promtool_unit_tests_would_catch_a_wrong_threshold(tmp_path) -> None:
    """The alert tests are not vacuous: the error-ratio alert at 30% instead of 10% fails them."""
    rules = RULES.read_text().replace(") > 0.1\n", ") > 0.3\n", 1)
    assert rules != RULES.read_text()
    (tmp_path / "alerts.yml").write_text(rules)
    (tmp_path / "alerts.test.yml").write_text(RULE_TESTS.read_text())
    done = promtool("test", "rules", str(tmp_path / "alerts.test.yml"))
    assert done.returncode != 0
    assert "ServiceClientErrorRatioHigh" in done.stdout + done.stderr


# -- what the files say -------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard()["annotations"]["list"] if "expr" in a]
    return exprs


def test_the_required_alerts_exist_and_each_has_firing_and_silent_cases() -> None:
    """Breaker open, error ratio, retry budget and bulkhead saturation are alerts; each is tested firing and not firing."""
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= REQUIRED_ALERTS
    cases = [
        case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]
    ]
    for name in names:
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), name
        assert any(not case["exp_alerts"] for case in mine) or name == "ServiceClientBulkheadRejecting", name
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description"} <= set(rule["annotations"])


def failure_outcomes(expr: str) -> set[str]:
    (found,) = re.findall(r'outcome=~"([^"]+)"', expr)
    return set(found.split("|"))


def test_the_error_ratio_means_what_the_status_api_means() -> None:
    """The alert's and the dashboard's failure outcomes are exactly the status API's FAILURES."""
    (rule,) = [r for r in alert_rules() if r["alert"] == "ServiceClientErrorRatioHigh"]
    assert failure_outcomes(rule["expr"]) == set(FAILURES)
    (panel,) = [p for p in dashboard()["panels"] if p["title"] == "Error ratio by dependency"]
    assert failure_outcomes(panel["targets"][0]["expr"]) == set(FAILURES)


def test_the_dashboard_is_well_formed() -> None:
    """Unique panel ids, no overlapping panels, every query on the data-source variable, every required view present."""
    board = dashboard()
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, p["title"]
        cells |= area
        for target in p.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "job", "peer_service"}
    text = "\n".join(dashboard_exprs())
    for needed in (
        "histogram_quantile(0.5,",
        "histogram_quantile(0.99,",
        "service_client_circuit_state",
        "service_client_circuit_transitions_total",
        "service_client_bulkhead_in_flight",
        "service_client_bulkhead_queued",
        "service_client_bulkhead_limit",
        "service_client_retries_total",
        "service_client_rejections_total",
        'reason="budget_exhausted"',
        "service_client_instance_attempts_total",
        "service_client_instance_ejections_total",
        "service_client_instances",
        "service_client_instance_ewma_seconds",
        "service_client_discovery_updates_total",
    ):
        assert needed in text, needed


# -- every series named is one the framework exports -----------------------------------------

_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
}
_IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


class Query:
    """What a PromQL expression reads: metric names, the labels matched on each, the labels grouped by."""

    def __init__(self, expr: str) -> None:
        text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values may hold anything
        self.grouping: set[str] = set()
        for match in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
            self.grouping |= {label.strip() for label in match.group(1).split(",") if label.strip()}
        text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
        text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations, $__rate_interval
        self.matched: dict[str, set[str]] = {}
        for match in re.finditer(rf"({_IDENT})?\s*\{{([^}}]*)\}}", text):
            labels = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", match.group(2)))
            self.matched.setdefault(match.group(1) or "", set()).update(labels)
        text = re.sub(r"\{[^}]*\}", " ", text)
        names = re.findall(rf"(?<![\w$.])({_IDENT})\b(?!\s*\()", text)
        self.metrics = {name for name in names if name not in _KEYWORDS}
        self.metrics |= {name for name in self.matched if name}


def test_the_promql_reader_finds_what_a_query_reads() -> None:
    """The reader used below finds metrics, matcher labels and grouping labels, and ignores functions and strings."""
    query = Query(
        'sum by (le, peer_service) (rate(foo_bucket{job=~"$job", a="x{y}"}[$__rate_interval]))'
        " / on (job) group_left bar > 0.1 and baz offset 5m"
    )
    assert query.metrics == {"foo_bucket", "bar", "baz"}
    assert query.matched == {"foo_bucket": {"job", "a"}}
    assert query.grouping == {"le", "peer_service", "job"}


async def client_traffic(upstream: Upstream) -> str:
    """Real calls that make every client family export samples; the registry's exposition."""
    registry = CollectorRegistry()
    families = MetricFamilies(registry)
    upstream.route("ok", json_answer({}))
    upstream.route("flaky", sequence(json_answer({}, status=503), json_answer({})))
    upstream.route("down", json_answer({}, status=500))
    upstream.route("slow", delayed(0.3, json_answer({})))
    clients: list[BaseServiceClient] = []

    def build(name: str, **overrides: Any) -> BaseServiceClient:
        config = ClientConfig(
            base_url=upstream.base_url,
            service_name=name,
            timeout_seconds=2.0,
            retry_base_delay=0.001,
            retry_max_delay=0.01,
            retry_jitter=False,
            enable_request_logging=False,
            **overrides,
        )
        client = BaseServiceClient(config, policies=ClientPolicies.from_config(config, families=families))
        clients.append(client)
        return client

    try:
        flaky = build("flaky-service", circuit_breaker_failure_threshold=2, max_retries=1)
        await flaky.get("ok")
        await flaky.get("flaky")  # a retry
        assert await flaky.get("down", fallback="cached") == "cached"  # a fallback, and a failure
        with pytest.raises(ServerError):
            await flaky.get("down")  # the second failure in a row opens the breaker: a transition
        with pytest.raises(CircuitBreakerOpenError):
            await flaky.get("ok")  # refused: a breaker_open rejection
        narrow = build("narrow-service", bulkhead_max_concurrent=1, bulkhead_max_waiting=0)
        results = await asyncio.gather(*(narrow.get("slow") for _ in range(3)), return_exceptions=True)
        assert sum(isinstance(r, BulkheadFullError) for r in results) == 2
        broke = build(
            "broke-service",
            max_retries=2,
            retry_budget_enabled=True,
            retry_budget_ratio=0.0,
            retry_budget_min_retries_per_second=0.0,
        )
        with pytest.raises(ServerError):
            await broke.get("down")  # its retry is refused: budget_exhausted
        hedged = build("hedged-service", hedging_enabled=True, hedging_delay_seconds=0.05)
        await hedged.get("slow")
    finally:
        for client in clients:
            await client.close()
    return generate_latest(registry).decode()


async def gateway_traffic(upstream: Upstream, monkeypatch) -> str:
    """The gateway's own /metrics after a real request through it."""
    upstream.route("market-regime/EURUSD", json_answer(REGIME))
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__BASE_URL", upstream.base_url)
    container = Container()
    container.settings.override(load_settings())
    async with serve(create_app(container)) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/v1/regime/EURUSD") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/metrics") as resp:
            return await resp.text()


async def fleet_gateway_traffic(upstream: Upstream, monkeypatch, tmp_path: Path) -> str:
    """The gateway's /metrics with the Analysis Engine as two instances found through a file, one failing.

    As ``make run`` runs it (file discovery), with round robin and one failure to eject, so
    the failing instance gets a call at once and is ejected: every instance family exports.
    """
    failing = Upstream()
    await failing.server.start_server()
    try:
        upstream.route("market-regime/EURUSD", json_answer(REGIME))
        failing.route("*", json_answer({}, status=503))
        instances = tmp_path / "analysis-engine.instances.json"
        instances.write_text(json.dumps({"instances": [upstream.base_url, failing.base_url]}))
        monkeypatch.setenv("APP_ENV", "test")
        monkeypatch.setenv("APP_ANALYSIS_ENGINE__BASE_URL", upstream.base_url)
        monkeypatch.setenv("APP_ANALYSIS_ENGINE__DISCOVERY", instances.as_uri())
        monkeypatch.setenv("APP_ANALYSIS_ENGINE__LOAD_BALANCER", "round_robin")
        monkeypatch.setenv("APP_ANALYSIS_ENGINE__OUTLIER_CONSECUTIVE_FAILURES", "1")
        container = Container()
        container.settings.override(load_settings())
        async with serve(create_app(container)) as base, aiohttp.ClientSession() as http:
            for _ in range(50):
                async with http.get(f"{base}/api/v1/regime/EURUSD") as resp:
                    assert resp.status == 200  # the failing instance's attempt is retried on the other
                async with http.get(f"{base}/api/v1/resilience") as resp:
                    fleet = (await resp.json())["dependencies"]["analysis-engine-service"]["instances"]
                if fleet["ejected"]:
                    break
            assert fleet["ejected"] == 1, fleet
            async with http.get(f"{base}/metrics") as resp:
                return await resp.text()
    finally:
        await failing.server.close()


def exported(*expositions: str) -> dict[str, set[str]]:
    """Every sample name in the expositions, with the labels it has once Prometheus has scraped it.

    A sample's own ``job`` or ``instance`` label would become ``exported_job`` or
    ``exported_instance``: Prometheus's are the scraped target's (TARGET_LABELS).
    """
    out: dict[str, set[str]] = {}
    for text in expositions:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = {f"exported_{label}" if label in TARGET_LABELS else label for label in sample.labels}
                out.setdefault(sample.name, set()).update(labels)
    return out


def all_queries() -> Iterator[tuple[str, str]]:
    for rule in alert_rules():
        yield f"alert {rule['alert']}", rule["expr"]
    for p in dashboard()["panels"]:
        for target in p.get("targets", []):
            yield f"panel {p['title']}", target["expr"]
    for expr in dashboard_exprs():
        yield "dashboard annotation", expr
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["definition"])
            assert inner is not None, variable["definition"]
            yield f"variable {variable['name']}", f"sum by ({inner.group(2)}) ({inner.group(1)})"


async def test_rules_and_dashboard_read_only_exported_series_and_labels(
    upstream: Upstream, monkeypatch, tmp_path
) -> None:
    """Every metric the rules and the dashboard read is exported after real calls, with every label they use."""
    series = exported(
        await client_traffic(upstream),
        await gateway_traffic(upstream, monkeypatch),
        await fleet_gateway_traffic(upstream, monkeypatch, tmp_path),
    )
    used: set[str] = set()
    for where, expr in all_queries():
        query = Query(expr)
        assert query.metrics, (where, expr)
        for metric in query.metrics:
            assert metric in series, f"{where}: {metric} is not exported"
            used.add(metric)
        for metric, labels in query.matched.items():
            assert labels <= series[metric] | TARGET_LABELS, (where, metric, labels - series[metric])
        available = set().union(*(series[m] for m in query.metrics)) | TARGET_LABELS
        assert query.grouping <= available, (where, query.grouping - available)
    # The dashboard covers the client families, and the gateway's own.
    assert {
        "service_client_requests_total",
        "service_client_request_duration_seconds_bucket",
        "service_client_attempts_total",
        "service_client_circuit_state",
        "service_client_circuit_transitions_total",
        "service_client_bulkhead_rejections_total",
        "service_client_hedges_total",
        "service_client_fallbacks_total",
        "http_server_requests_total",
        "http_server_request_duration_seconds_bucket",
        "service_client_instance_attempts_total",
        "service_client_instance_ejections_total",
        "service_client_instances",
        "service_client_instance_ewma_seconds",
        "service_client_discovery_updates_total",
    } <= used
