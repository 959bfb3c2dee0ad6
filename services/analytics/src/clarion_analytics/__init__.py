"""Clarion analytics: delivery funnel, latency and failures."""
