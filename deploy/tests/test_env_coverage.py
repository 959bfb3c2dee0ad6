"""Environment variables: every variable the deploy files set is one a service
reads (a typo would be silently ignored by pydantic-settings), every variable a
service reads is documented, and each container listens where its probes look."""

from __future__ import annotations

import re
from typing import Any

import pytest
from generator import envtable, paths

IMAGE_ONLY = {"CLARION_SERVICE", "CLARION_HEALTH_PORT"}
"""Read by the image's entrypoint and health check, not by the settings classes."""


@pytest.fixture(scope="module")
def envs() -> list[envtable.ServiceEnv]:
    result = envtable.all_service_env()
    broken = [f"{e.service}: {e.error}" for e in result if e.error]
    assert not broken, broken
    return result


def _readers(envs: list[envtable.ServiceEnv]) -> dict[str, set[str]]:
    """Variable -> services reading it."""
    readers: dict[str, set[str]] = {}
    for env in envs:
        for var in env.own + env.shared:
            readers.setdefault(var.name, set()).add(env.service)
            if var.fallback:
                readers.setdefault(var.fallback, set()).add(env.service)
    return readers


def _compose_vars(compose: dict[str, Any], helpers: Any) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name in helpers.CLARION_SERVICES:
        found[name] = set(compose["services"][name]["environment"])
    return found


def _k8s_vars(rendered: Any, helpers: Any, overlay: str) -> dict[str, set[str]]:
    objects = rendered(overlay)
    data = {
        (o["kind"], o["metadata"]["name"]): set(o.get("data", {})) | set(o.get("stringData", {}))
        for o in objects
        if o["kind"] in {"ConfigMap", "Secret"}
    }
    for path in (helpers.K8S / "secrets").glob("*.yaml"):
        for doc in helpers.load_yaml_documents(path):
            data[("Secret", doc["metadata"]["name"])] = set(doc["stringData"])
    found: dict[str, set[str]] = {}
    for dep in objects:
        name = dep["metadata"]["name"]
        if dep["kind"] != "Deployment" or name not in helpers.CLARION_SERVICES:
            continue
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        names = {e["name"] for e in container.get("env", [])}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                names |= data[("ConfigMap", source["configMapRef"]["name"])]
            else:
                names |= data.get(("Secret", source["secretRef"]["name"]), set())
        found[name] = names
    return found


def _check_set_vars(found: dict[str, set[str]], envs: list[envtable.ServiceEnv]) -> None:
    readers = _readers(envs)
    for service, names in found.items():
        for var in names:
            if not var.startswith("CLARION_") or var in IMAGE_ONLY:
                continue
            assert var in readers, f"{service} is given {var}, which no service reads"
            assert service in readers[var], f"{service} is given {var}, read only by {readers[var]}"


def test_compose_sets_only_variables_services_read(
    compose: Any, helpers: Any, envs: list[envtable.ServiceEnv]
) -> None:
    _check_set_vars(_compose_vars(compose, helpers), envs)


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_k8s_sets_only_variables_services_read(
    rendered: Any, helpers: Any, envs: list[envtable.ServiceEnv], overlay: str
) -> None:
    _check_set_vars(_k8s_vars(rendered, helpers, overlay), envs)


def test_dockerfile_sets_only_variables_services_read(
    helpers: Any, envs: list[envtable.ServiceEnv]
) -> None:
    text = (helpers.ROOT / "Dockerfile").read_text(encoding="utf-8")
    names = set(re.findall(r"\b(CLARION_[A-Z0-9_]+)=", text)) - IMAGE_ONLY
    readers = _readers(envs)
    assert names
    assert names <= set(readers), names - set(readers)


def test_every_variable_is_documented(helpers: Any, envs: list[envtable.ServiceEnv]) -> None:
    doc = (helpers.ROOT / paths.DEPLOY_DOC).read_text(encoding="utf-8")
    missing = [
        var
        for env in envs
        for var in (*(v.name for v in env.own), *(v.fallback for v in env.shared if v.fallback))
        if f"`{var}`" not in doc
    ]
    assert not missing, missing


def test_the_env_table_reports_where_each_variable_is_set(helpers: Any) -> None:
    doc = (helpers.ROOT / paths.DEPLOY_DOC).read_text(encoding="utf-8")
    row = re.search(r"^\| `CLARION_EMAIL_SMTP_HOST` \| ([^|]+) \| ([^|]+) \|", doc, re.MULTILINE)
    assert row
    assert row.group(2).strip() == "compose, k8s"


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_containers_listen_on_all_interfaces_at_the_probed_ports(
    rendered: Any, helpers: Any, overlay: str
) -> None:
    objects = rendered(overlay)
    config = {}
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            config.update(obj.get("data", {}))
    for name, spec in helpers.CLARION_SERVICES.items():
        prefix = spec["prefix"]
        assert config[prefix + "HTTP_HOST"] == "0.0.0.0", name
        assert int(config[prefix + "HTTP_PORT"]) == spec["http"], name
    assert config["CLARION_GATEWAY_WS_HOST"] == "0.0.0.0"
    assert int(config["CLARION_GATEWAY_WS_PORT"]) == 8001


def test_settings_defaults_match_the_documented_ports(
    helpers: Any, envs: list[envtable.ServiceEnv]
) -> None:
    for env in envs:
        defaults = {v.field: v.default for v in env.own}
        assert defaults["http_port"] == f"`{helpers.CLARION_SERVICES[env.service]['http']}`"
