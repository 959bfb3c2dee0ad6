"""Clarion realtime-gateway: live notifications over WebSocket."""
