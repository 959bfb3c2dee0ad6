"""Replay of real event sources (GH Archive files, NDJSON domain events) into Clarion."""
