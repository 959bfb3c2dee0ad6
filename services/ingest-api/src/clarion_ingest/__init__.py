"""Clarion ingest-api: the public HTTP API and the inbox read model."""
