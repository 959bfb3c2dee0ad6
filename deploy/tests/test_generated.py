"""Generated deploy files: committed == generated, and the generated topic
resources carry the registry's partitions, retention and cleanup policy."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from generator import cli, envtable, files, paths
from typer.testing import CliRunner

from clarion_contracts.registry import TOPICS


def test_committed_files_equal_generated(helpers: Any) -> None:
    stale = files.stale_files(helpers.ROOT)
    assert not stale, "run `make deploy-gen`:\n" + "\n".join(stale.values())[:5000]


def test_kafka_topics_match_the_registry(helpers: Any) -> None:
    docs = list(helpers.load_yaml_documents(helpers.ROOT / paths.K8S_TOPICS))
    by_name = {d["spec"]["topicName"]: d for d in docs}
    assert len(docs) == len(by_name) == 2 * len(TOPICS)
    for spec in TOPICS:
        topic, dlq = by_name[spec.name], by_name[spec.dlq]
        assert topic["kind"] == dlq["kind"] == "KafkaTopic"
        assert topic["metadata"]["name"] == spec.name
        assert topic["spec"]["partitions"] == dlq["spec"]["partitions"] == spec.partitions
        config = topic["spec"]["config"]
        assert config["cleanup.policy"] == spec.cleanup_policy
        assert int(config["retention.ms"]) == spec.retention_ms
        assert dlq["spec"]["config"]["cleanup.policy"] == "delete"
        assert int(dlq["spec"]["config"]["retention.ms"]) == spec.dlq_retention_ms
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == paths.KAFKA_CLUSTER
        assert "replicas" not in topic["spec"]  # from the cluster's default.replication.factor


def _copy_tree(root: Path, target: Path) -> None:
    shutil.copytree(root / "k8s", target / "k8s")
    shutil.copytree(root / "deploy" / "compose", target / "deploy" / "compose")
    (target / "docs").mkdir()
    shutil.copy(root / "docs" / "deploy.md", target / "docs" / "deploy.md")
    shutil.copy(root / "docker-compose.yml", target / "docker-compose.yml")


def test_check_command_detects_drift_and_generate_fixes_it(helpers: Any, tmp_path: Path) -> None:
    _copy_tree(helpers.ROOT, tmp_path)
    runner = CliRunner()
    ok = runner.invoke(cli.app, ["check", "--root", str(tmp_path)])
    assert ok.exit_code == 0, ok.output

    topics = tmp_path / paths.K8S_TOPICS
    topics.write_text(topics.read_text().replace("partitions: 12", "partitions: 13", 1))
    (tmp_path / paths.COMPOSE_TOPICS).unlink()
    drift = runner.invoke(cli.app, ["check", "--root", str(tmp_path)])
    assert drift.exit_code == 1
    assert str(paths.K8S_TOPICS) in drift.output
    assert str(paths.COMPOSE_TOPICS) in drift.output

    fixed = runner.invoke(cli.app, ["generate", "--root", str(tmp_path)])
    assert fixed.exit_code == 0, fixed.output
    assert runner.invoke(cli.app, ["check", "--root", str(tmp_path)]).exit_code == 0
    assert (tmp_path / paths.COMPOSE_TOPICS).stat().st_mode & 0o111


def test_doc_without_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="env-table"):
        envtable.render_deploy_doc("# Deploying\n", "table")
    text = f"a\n{paths.ENV_TABLE_BEGIN}\nold\n{paths.ENV_TABLE_END}\nb\n"
    assert envtable.render_deploy_doc(text, "new\n") == (
        f"a\n{paths.ENV_TABLE_BEGIN}\n\nnew\n\n{paths.ENV_TABLE_END}\nb\n"
    )
