"""Monitoring wiring: compose Prometheus scrapes every service where it listens, the
Kubernetes ServiceMonitors give the same job names, and the generated
PrometheusRule / dashboard ConfigMap carry exactly the files of deploy/."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from generator import paths


def _prometheus_jobs(helpers: Any) -> dict[str, list[str]]:
    config = yaml.safe_load((helpers.ROOT / "deploy/prometheus/prometheus.yml").read_text())
    return {
        job["job_name"]: [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        for job in config["scrape_configs"]
    }


def test_compose_prometheus_scrapes_every_service(helpers: Any, compose: Any) -> None:
    jobs = _prometheus_jobs(helpers)
    for name, spec in helpers.CLARION_SERVICES.items():
        assert jobs[f"clarion-{name}"] == [f"{name}:{spec['http']}"]
        assert name in compose["services"]
    mounted = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounted


def test_service_monitors_use_the_compose_job_names(rendered: Any, helpers: Any) -> None:
    jobs = _prometheus_jobs(helpers)
    monitors = {
        o["metadata"]["name"]: o for o in rendered("production") if o["kind"] == "ServiceMonitor"
    }
    for name in helpers.CLARION_SERVICES:
        (endpoint,) = monitors[name]["spec"]["endpoints"]
        (relabel,) = [r for r in endpoint["relabelings"] if r["targetLabel"] == "job"]
        assert relabel["replacement"] == f"clarion-{name}"
        assert relabel["replacement"] in jobs
        assert re.fullmatch("clarion-.+", relabel["replacement"])  # the alerts' job selector


def test_prometheus_rule_carries_the_alert_file(helpers: Any, rendered: Any) -> None:
    source = yaml.safe_load((helpers.ROOT / paths.ALERTS_SOURCE).read_text(encoding="utf-8"))
    (rule,) = [o for o in rendered("production") if o["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == source["groups"]
    alerts = [r["alert"] for g in source["groups"] for r in g["rules"] if "alert" in r]
    assert alerts


def test_dashboard_configmap_carries_the_dashboards(helpers: Any, rendered: Any) -> None:
    (cm,) = [
        o
        for o in rendered("production")
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "clarion-grafana-dashboards"
    ]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    sources = sorted((helpers.ROOT / paths.DASHBOARDS_SOURCE).glob("*.json"))
    assert sources
    assert sorted(cm["data"]) == [p.name for p in sources]
    for path in sources:
        assert json.loads(cm["data"][path.name]) == json.loads(path.read_text(encoding="utf-8"))


def test_grafana_in_compose_is_provisioned(helpers: Any, compose: Any) -> None:
    grafana = compose["services"]["grafana"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    datasources = yaml.safe_load(
        (helpers.ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    urls = {d["url"] for d in datasources["datasources"]}
    assert "http://prometheus:9090" in urls
    providers = yaml.safe_load(
        (helpers.ROOT / "deploy/grafana/provisioning/dashboards/clarion.yml").read_text()
    )
    paths = {p["options"]["path"] for p in providers["providers"]}
    mount = next(v for v in grafana["volumes"] if v.startswith("./deploy/grafana/dashboards:"))
    assert mount.split(":")[1] in paths
