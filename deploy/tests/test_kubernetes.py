"""k8s/: every overlay renders with kustomize, every object validates against its
schema, and the manifests keep Clarion's deployment rules (probes, security
context, budgets, autoscaling bound by partitions, WebSocket-friendly Ingress)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from clarion_contracts.registry import TOPICS

CLUSTER_SCOPED = {"Namespace"}


def _validate(helpers: Any, obj: dict[str, Any]) -> None:
    api_version, kind = obj["apiVersion"], obj["kind"]
    validator = helpers.crd_validator(api_version, kind)
    if validator is not None:
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        assert not errors, f"{kind}/{obj['metadata']['name']}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in errors[:5]
        )
        return
    try:
        kubernetes_validate.validate(obj, helpers.KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        pytest.fail(f"no schema for {api_version} {kind}: vendor its CRD under deploy/schemas/crds")
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{kind}/{obj['metadata'].get('name')}: {exc.message[:300]} at {exc.path}")


def _by_kind(objects: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_overlay_objects_validate(rendered: Any, helpers: Any, overlay: str) -> None:
    objects = rendered(overlay)
    kinds = Counter(o["kind"] for o in objects)
    assert kinds["Deployment"] >= 6
    assert kinds["KafkaTopic"] == 2 * len(TOPICS)
    for obj in objects:
        _validate(helpers, obj)


def test_keda_component_validates(rendered_with_keda: Any, helpers: Any) -> None:
    objects = rendered_with_keda
    scaled = _by_kind(objects, "ScaledObject")
    hpas = _by_kind(objects, "HorizontalPodAutoscaler")
    assert set(scaled) == {"aggregator", "push-worker", "email-worker", "analytics"}
    # two autoscalers on one Deployment would fight: KEDA replaces the CPU HPAs
    assert not set(scaled) & set(hpas)
    assert set(hpas) == {"ingest-api", "realtime-gateway"}
    for obj in objects:
        _validate(helpers, obj)
    for name, obj in scaled.items():
        consumed = [t for t in TOPICS if name in obj["metadata"]["name"] and name in t.consumers]
        lag_topics = {
            t["metadata"]["topic"] for t in obj["spec"]["triggers"] if t["type"] == "kafka"
        }
        assert lag_topics <= {t.name for t in consumed}
        assert all(
            t["metadata"]["consumerGroup"] == name
            for t in obj["spec"]["triggers"]
            if t["type"] == "kafka"
        )
        assert obj["spec"]["maxReplicaCount"] <= max(t.partitions for t in consumed)


def test_every_file_under_k8s_is_parseable_and_known(helpers: Any) -> None:
    """Raw files (also those only an optional component uses) are valid YAML objects."""
    for path in sorted(Path(helpers.K8S).rglob("*.yaml")):
        for doc in helpers.load_yaml_documents(path):
            assert "kind" in doc, path
            if doc["kind"] in {"Kustomization", "Component"} or doc.get("$patch") == "delete":
                continue
            if path.parent.name == "production" and path.name != "namespace.yaml":
                continue  # strategic-merge patches, partial by design
            _validate(helpers, doc)


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_deployments_follow_the_rules(rendered: Any, helpers: Any, overlay: str) -> None:
    objects = rendered(overlay)
    deployments = _by_kind(objects, "Deployment")
    for name, spec in helpers.CLARION_SERVICES.items():
        dep = deployments[name]
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == spec["http"], name
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["httpGet"]["port"] == "http"
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"])
        assert "memory" in resources["limits"]
        assert (
            dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "clarion"
        )
    gateway = deployments["realtime-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in gateway["ports"]}["ws"] == 8001


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_each_service_has_service_pdb_autoscaler_monitor(
    rendered: Any, helpers: Any, overlay: str
) -> None:
    objects = rendered(overlay)
    services = _by_kind(objects, "Service")
    pdbs = _by_kind(objects, "PodDisruptionBudget")
    hpas = _by_kind(objects, "HorizontalPodAutoscaler")
    monitors = _by_kind(objects, "ServiceMonitor")
    deployments = _by_kind(objects, "Deployment")
    for name in helpers.CLARION_SERVICES:
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        selects = {"app.kubernetes.io/name": name}
        assert services[name]["spec"]["selector"] == selects
        assert all(labels[k] == v for k, v in selects.items())
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == selects
        assert pdbs[name]["spec"].get("maxUnavailable") == 1
        assert hpas[name]["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert hpas[name]["spec"]["minReplicas"] <= hpas[name]["spec"]["maxReplicas"]
        monitor = monitors[name]["spec"]
        assert monitor["selector"]["matchLabels"] == selects
        service_ports = {p["name"] for p in services[name]["spec"]["ports"]}
        assert [e["port"] for e in monitor["endpoints"]] == ["http"]
        assert "http" in service_ports
        assert monitor["endpoints"][0]["path"] == "/metrics"


def test_worker_autoscaling_is_bounded_by_partitions(rendered: Any) -> None:
    """More consumers in a group than partitions would sit idle."""
    hpas = _by_kind(rendered("production"), "HorizontalPodAutoscaler")
    for name in ("aggregator", "push-worker", "email-worker", "analytics"):
        consumed = [t.partitions for t in TOPICS if name in t.consumers]
        assert consumed, name
        assert hpas[name]["spec"]["maxReplicas"] <= max(consumed), name
    metrics = hpas["realtime-gateway"]["spec"]["metrics"]
    assert [m["resource"]["name"] for m in metrics] == ["cpu"]


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_config_and_secret_references_resolve(rendered: Any, helpers: Any, overlay: str) -> None:
    objects = rendered(overlay)
    config_maps = _by_kind(objects, "ConfigMap")
    secrets = set(_by_kind(objects, "Secret"))
    templates = {
        doc["metadata"]["name"]
        for path in (Path(helpers.K8S) / "secrets").glob("*.yaml")
        for doc in helpers.load_yaml_documents(path)
    }
    for dep in _by_kind(objects, "Deployment").values():
        for container in dep["spec"]["template"]["spec"]["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps
                if "secretRef" in source:
                    name = source["secretRef"]["name"]
                    if overlay == "dev":
                        assert name in secrets, f"dev overlay must generate Secret {name}"
                    else:
                        assert name in templates, f"Secret {name} has no template in k8s/secrets"
    if overlay == "production":
        assert not secrets, "production renders no Secret: real values never live in git"


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_namespaced_objects_get_the_overlay_namespace(rendered: Any, overlay: str) -> None:
    objects = rendered(overlay)
    (namespace,) = [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"]
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]


def test_ingress_keeps_websockets_open(rendered: Any) -> None:
    ingresses = _by_kind(rendered("production"), "Ingress")
    gateway = ingresses["realtime-gateway"]
    notes = gateway["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert notes["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    backend = gateway["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "realtime-gateway", "port": {"name": "ws"}}
    api = ingresses["ingest-api"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert api == {"name": "ingest-api", "port": {"name": "http"}}


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_network_policy_ports_exist_on_selected_pods(rendered: Any, overlay: str) -> None:
    objects = rendered(overlay)
    pods = [
        (d["spec"]["template"]["metadata"]["labels"], d["spec"]["template"]["spec"]["containers"])
        for d in _by_kind(objects, "Deployment").values()
    ]
    policies = _by_kind(objects, "NetworkPolicy")
    assert "default-deny-ingress" in policies
    for policy in policies.values():
        selector = policy["spec"]["podSelector"]
        selected = [c for labels, c in pods if _matches(selector, labels)]
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if isinstance(port["port"], str):
                    named = {p["name"] for cs in selected for c in cs for p in c.get("ports", [])}
                    assert port["port"] in named, (policy["metadata"]["name"], port)


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_kafka_cluster_and_topics(rendered: Any, overlay: str) -> None:
    objects = rendered(overlay)
    (kafka,) = _by_kind(objects, "Kafka").values()
    (pool,) = _by_kind(objects, "KafkaNodePool").values()
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}  # KRaft, no ZooKeeper
    cluster = kafka["metadata"]["name"]
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    config = kafka["spec"]["kafka"]["config"]
    assert config["auto.create.topics.enable"] is False
    replication = config["default.replication.factor"]
    assert replication <= pool["spec"]["replicas"]
    assert config["min.insync.replicas"] <= replication
    topics = _by_kind(objects, "KafkaTopic")
    assert all(t["metadata"]["labels"]["strimzi.io/cluster"] == cluster for t in topics.values())
    bootstrap = {
        cm["data"].get("CLARION_KAFKA_BOOTSTRAP_SERVERS")
        for cm in _by_kind(objects, "ConfigMap").values()
    } - {None}
    assert bootstrap == {f"{cluster}-kafka-bootstrap:9092"}
