"""I/O of push-worker: Redis state, the push services over HTTP, Kafka publishing."""
