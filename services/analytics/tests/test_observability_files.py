"""Structure of deploy/prometheus and deploy/grafana (promtool is not available here).

Checks the scrape targets against the services' ports, every alert rule's shape, that
PromQL expressions are balanced and name real Clarion metric families (analytics'
own metrics must exist in its registry), and that the Grafana dashboard and its
provisioning fit together.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from clarion_analytics.adapters.postgres import Applied
from clarion_analytics.handlers.metrics import AnalyticsMetrics

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"

SERVICES = {
    "ingest-api": 8000,
    "realtime-gateway": 8011,
    "analytics": 8002,
    "aggregator": 8003,
    "push-worker": 8004,
    "email-worker": 8005,
}
METRIC_PREFIXES = tuple(f"clarion_{s.replace('-', '_')}_" for s in SERVICES)
KIT_FAMILIES = {
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "received_messages_total",
    "received_processed_messages_exceptions_total",
    "published_messages_total",
    "dlq_messages_total",
    "broker_data_loss_total",
    "consumer_offset_gaps_total",
    "consumer_offset_gaps_confirmed_total",
}
"""Metric families clarion_kit gives every service (HTTP middleware, FastStream, DLQ,
consumer continuity)."""
DURATION = re.compile(r"^\d+[smhd]$")
METRIC_TOKEN = re.compile(r"\b(clarion_[a-z0-9_]+)\b")


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _analytics_metric_names() -> set[str]:
    registry = CollectorRegistry()
    metrics = AnalyticsMetrics(registry)
    metrics.batch_applied("t", Applied(applied=1, duplicates=1), 0.01)
    metrics.lag("t", 0, 3)
    metrics.batch_failed("t", "E")
    metrics.poison("t", "E")
    text = generate_latest(registry).decode()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    names |= {n.removesuffix("_created") for n in names}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
    # Histograms expose _bucket/_sum/_count even before an observation with labels.
    names |= {
        f"{base}{suffix}"
        for base in (
            "clarion_analytics_delivery_latency_seconds",
            "clarion_analytics_notification_latency_seconds",
            "clarion_analytics_batch_seconds",
        )
        for suffix in ("_bucket", "_sum", "_count")
    }
    return names


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    in_string = False
    for ch in expr:
        if ch == '"':
            in_string = not in_string
            continue
        if in_string:
            continue
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack and not in_string


def _check_metric_names(expr: str, analytics_names: set[str]) -> None:
    for name in METRIC_TOKEN.findall(expr):
        assert name.startswith(METRIC_PREFIXES), f"{name} is not a Clarion service metric"
        if name.startswith("clarion_analytics_") and not name.startswith(
            ("clarion_analytics_http_", "clarion_analytics_received_", "clarion_analytics_dlq_")
        ):
            assert name in analytics_names, f"analytics does not export {name}"
    for pattern in re.findall(r'__name__=~"([^"]+)"', expr):
        # Cross-service selectors name a family every service exports via clarion_kit.
        assert pattern.startswith("clarion_.+_"), pattern
        assert pattern.removeprefix("clarion_.+_") in KIT_FAMILIES, pattern
        assert re.fullmatch(pattern, "clarion_push_worker_" + pattern.removeprefix("clarion_.+_"))


def test_prometheus_scrapes_every_service_on_its_port() -> None:
    config = _load_yaml(PROMETHEUS / "prometheus.yml")
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for service, port in SERVICES.items():
        job = jobs[f"clarion-{service}"]
        assert job.get("metrics_path", "/metrics") == "/metrics"
        [static] = job["static_configs"]
        assert static["targets"] == [f"{service}:{port}"]
        assert static["labels"]["service"] == service
    assert DURATION.match(config["global"]["scrape_interval"])


def test_alert_rules_are_well_formed() -> None:
    rules_file = _load_yaml(PROMETHEUS / "alerts.yml")
    analytics_names = _analytics_metric_names()
    names: list[str] = []
    exprs: list[str] = []
    for group in rules_file["groups"]:
        assert group["name"].startswith("clarion-")
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"Clarion[A-Z][A-Za-z0-9]+", rule["alert"]), rule["alert"]
            names.append(rule["alert"])
            expr = str(rule["expr"]).strip()
            exprs.append(expr)
            assert expr, rule["alert"]
            assert _balanced(expr), f"unbalanced expression in {rule['alert']}"
            _check_metric_names(expr, analytics_names)
            assert DURATION.match(rule["for"]), rule["alert"]
            assert rule["labels"]["severity"] in {"warning", "critical"}
            for key in ("summary", "description"):
                text = rule["annotations"][key]
                assert text.count("{{") == text.count("}}"), (rule["alert"], key)
    assert len(names) == len(set(names)), "duplicate alert names"
    joined = "\n".join(exprs)
    # The four signals the platform must alert on.
    assert "kafka_consumergroup_lag" in joined
    assert "clarion_analytics_consumer_lag" in joined
    assert "dlq_messages_total" in joined
    assert 'clarion_analytics_delivery_status_total{status=~"failed|bounced"}' in joined
    assert "histogram_quantile(0.99" in joined


def test_grafana_dashboard_and_provisioning_fit_together() -> None:
    datasources = _load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    providers = _load_yaml(GRAFANA / "provisioning" / "dashboards" / "clarion.yml")
    [provider] = providers["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"

    dashboard = json.loads((GRAFANA / "dashboards" / "clarion.json").read_text())
    assert dashboard["uid"] == "clarion-overview"
    analytics_names = _analytics_metric_names()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    exprs = []
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & occupied, f"panel {panel['title']} overlaps another"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == source["uid"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert _balanced(target["expr"]), panel["title"]
            _check_metric_names(target["expr"], analytics_names)
            exprs.append(target["expr"])
    joined = "\n".join(exprs)
    for metric in (
        "delivery_latency_seconds_bucket",
        "delivery_status_total",
        "dlq_messages_total",
    ):
        assert metric in joined


@pytest.mark.parametrize("expr", ["sum(rate(x[5m])", 'up{job="a}', "a)("])
def test_balance_check_catches_broken_expressions(expr: str) -> None:
    assert not _balanced(expr)
