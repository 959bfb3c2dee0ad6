"""Monitoring resources for Kubernetes from the compose monitoring files: a
``PrometheusRule`` holding ``deploy/prometheus/alerts.yml`` and a ConfigMap holding the
Grafana dashboards of ``deploy/grafana/dashboards/``, so compose and Kubernetes alert
and chart from the same files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from generator.paths import ALERTS_SOURCE, DASHBOARDS_SOURCE, MONITORING_HEADER


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings as ``|`` blocks (readable dashboards and rules)."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockDumper.add_representer(str, _str_presenter)


def _dump(resource: dict[str, Any], source: Path) -> str:
    header = "".join(f"# {line}\n" for line in MONITORING_HEADER.format(source=source).splitlines())
    body = yaml.dump(resource, Dumper=_BlockDumper, sort_keys=False, width=100)
    return header + body


def render_prometheus_rule(alerts_yaml: str) -> str:
    """A ``PrometheusRule`` (``monitoring.coreos.com/v1``) with the groups of ``alerts_yaml``.

    Args:
        alerts_yaml: a Prometheus rule file (``groups: [...]``).

    Raises:
        ValueError: the file has no ``groups`` list.
    """
    data = yaml.safe_load(alerts_yaml) or {}
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, list):
        raise ValueError(f"{ALERTS_SOURCE} has no `groups` list")
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "clarion-alerts", "labels": {"app.kubernetes.io/part-of": "clarion"}},
        "spec": {"groups": groups},
    }
    return _dump(resource, ALERTS_SOURCE)


def render_dashboards_configmap(dashboards: dict[str, str]) -> str:
    """A ConfigMap of Grafana dashboards (file name -> JSON text), sidecar-labelled.

    The label ``grafana_dashboard: "1"`` is what Grafana's dashboard sidecar (as in
    kube-prometheus-stack) watches for.

    Raises:
        ValueError: a dashboard is not valid JSON.
    """
    data: dict[str, str] = {}
    for name in sorted(dashboards):
        text = dashboards[name]
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{DASHBOARDS_SOURCE / name} is not valid JSON: {exc}") from exc
        data[name] = "\n".join(line.rstrip() for line in text.strip().splitlines()) + "\n"
    resource = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "clarion-grafana-dashboards",
            "labels": {"app.kubernetes.io/part-of": "clarion", "grafana_dashboard": "1"},
        },
        "data": data,
    }
    return _dump(resource, DASHBOARDS_SOURCE)
