"""The deploy generator: deploy files derived from the contracts registry, the
monitoring files and the services' settings.

Generated, committed files (``deploy/generate.py generate`` writes them, ``make
deploy-gen`` runs it; ``deploy/generate.py check`` and the deploy tests fail when the
committed ones differ):

- ``k8s/base/kafka/topics.yaml``: one Strimzi ``KafkaTopic`` (``kafka.strimzi.io/v1``)
  per registry topic and per DLQ twin, with partitions, ``retention.ms`` and
  ``cleanup.policy`` from :mod:`clarion_contracts.registry`
  (:mod:`generator.topics`);
- ``deploy/compose/create-topics.sh``: the docker-compose one-shot job that creates
  the same topics with Kafka's ``kafka-topics.sh --if-not-exists``
  (:mod:`generator.topics`);
- ``k8s/base/monitoring/``: a ``PrometheusRule`` holding the alert rules of
  ``deploy/prometheus/alerts.yml`` and a ConfigMap holding the Grafana dashboards
  of ``deploy/grafana/dashboards/`` (for Grafana's dashboard sidecar), so compose
  and Kubernetes alert and chart from the same files (:mod:`generator.monitoring`);
- the environment-variable tables in ``docs/deploy.md`` (between the
  ``env-table`` markers), read from every service's pydantic-settings class
  (:mod:`generator.envtable`).

The generator imports the six services, so it is a tool of the workspace, not part of
any library; it runs with the workspace virtualenv's Python. Topic creation on a
running cluster stays in the ``clarion`` CLI (``clarion deploy create-topics``).
"""
