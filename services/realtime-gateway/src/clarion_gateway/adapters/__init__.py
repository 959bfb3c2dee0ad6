"""I/O of the gateway: Redis history and pub/sub, presence keys, Kafka consumer and producer."""
