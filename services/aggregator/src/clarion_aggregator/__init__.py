"""Clarion aggregator: domain events to per-user notifications."""
