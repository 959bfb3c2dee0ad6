"""Gateway handlers: WebSocket connections and sessions, consumed Kafka records."""
