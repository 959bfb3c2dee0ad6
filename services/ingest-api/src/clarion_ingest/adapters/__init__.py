"""I/O adapters of ingest-api: PostgreSQL, Kafka and Redis."""
