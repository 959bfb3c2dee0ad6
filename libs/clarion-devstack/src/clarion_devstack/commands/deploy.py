"""``clarion deploy create-topics``: create every registry topic and DLQ on a cluster.

Creation goes through aiokafka's admin client (Kafka protocol CreateTopics) and skips
existing topics, see :func:`clarion_devstack.topics.create_topics`. The deploy files
themselves (Kubernetes topics, the compose topic job, monitoring resources, the
env-var tables of ``docs/deploy.md``) are written by ``deploy/generate.py`` (``make
deploy-gen``), which lives next to them.
"""

from __future__ import annotations

import asyncio

import typer

from clarion_devstack.topics import create_topics

app = typer.Typer(help="Topic creation on a Kafka cluster.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Topic creation on a Kafka cluster."""
    # A callback keeps `create-topics` a subcommand even though it is the only one
    # (Typer would otherwise run a lone command as the app itself).


@app.command("create-topics")
def create_topics_command(
    bootstrap_servers: str = typer.Option(
        "localhost:9092",
        "--bootstrap-servers",
        envvar="CLARION_KAFKA_BOOTSTRAP_SERVERS",
        help="Kafka bootstrap servers",
    ),
    topic_prefix: str = typer.Option("", envvar="CLARION_TOPIC_PREFIX", help="Topic name prefix"),
    replication_factor: int = typer.Option(1, min=1, help="Replicas per partition"),
    partitions: int | None = typer.Option(
        None, min=1, help="Override every topic's partition count (development)"
    ),
    timeout: float = typer.Option(30.0, min=1.0, help="Admin request timeout, seconds"),
) -> None:
    """Create every registry topic and DLQ on a cluster; existing ones are left alone."""
    try:
        report = asyncio.run(
            create_topics(
                bootstrap_servers,
                topic_prefix=topic_prefix,
                replication_factor=replication_factor,
                partitions_override=partitions,
                request_timeout_ms=int(timeout * 1000),
            )
        )
    except Exception as exc:
        typer.echo(f"creating topics on {bootstrap_servers} failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    for name in report.created:
        typer.echo(f"created {name}")
    for name in report.existing:
        typer.echo(f"exists  {name}")
