"""I/O of email-worker: Redis state, SMTP, Kafka publishing."""
