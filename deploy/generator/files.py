"""Every generated file at once: what the generator writes, and which committed files
differ from it."""

from __future__ import annotations

import difflib
from pathlib import Path

from generator.envtable import all_service_env, manifest_text, render_deploy_doc, render_env_table
from generator.monitoring import render_dashboards_configmap, render_prometheus_rule
from generator.paths import (
    ALERTS_SOURCE,
    COMPOSE_TOPICS,
    DASHBOARDS_SOURCE,
    DEPLOY_DOC,
    K8S_DASHBOARDS,
    K8S_RULES,
    K8S_TOPICS,
)
from generator.topics import render_compose_script, render_k8s_topics


def generated_files(root: Path) -> dict[Path, str]:
    """Path (relative to ``root``) -> the content the generator writes.

    Raises:
        ValueError: ``docs/deploy.md`` exists without its env-table markers, the
            alert rules have no groups, or a dashboard is not JSON.
    """
    files = {
        K8S_TOPICS: render_k8s_topics(),
        COMPOSE_TOPICS: render_compose_script(),
    }
    alerts = root / ALERTS_SOURCE
    if alerts.exists():
        files[K8S_RULES] = render_prometheus_rule(alerts.read_text(encoding="utf-8"))
    dashboards = {
        path.name: path.read_text(encoding="utf-8")
        for path in sorted((root / DASHBOARDS_SOURCE).glob("*.json"))
    }
    if dashboards:
        files[K8S_DASHBOARDS] = render_dashboards_configmap(dashboards)
    doc_path = root / DEPLOY_DOC
    if doc_path.exists():
        table = render_env_table(all_service_env(), manifest_text(root))
        files[DEPLOY_DOC] = render_deploy_doc(doc_path.read_text(encoding="utf-8"), table)
    return files


def stale_files(root: Path) -> dict[Path, str]:
    """Generated files whose committed content differs: path -> unified diff."""
    stale: dict[Path, str] = {}
    for rel, wanted in generated_files(root).items():
        path = root / rel
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != wanted:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                wanted.splitlines(keepends=True),
                fromfile=f"{rel} (committed)",
                tofile=f"{rel} (generated)",
            )
            stale[rel] = "".join(diff)
    return stale
