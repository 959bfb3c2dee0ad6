"""Shared runtime of Clarion services: settings, Kafka/Redis/PostgreSQL factories, logging, metrics, tracing, health, retries with DLQ, idempotency."""
