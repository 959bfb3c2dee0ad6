"""The embedded Kafka-protocol/Redis/PostgreSQL stack for development and tests, and the
clarion CLI.
"""
