"""Clarion's message contracts: one frozen pydantic model per Kafka message.

``clarion_contracts.v1`` holds the models, ``clarion_contracts.registry`` the
topics, ``clarion_contracts.compat`` the backward-compatibility rules.
"""

from clarion_contracts.base import Actor, Channel, ContractModel, EventObject, Priority
from clarion_contracts.registry import TOPICS, TopicSpec, by_name

__version__ = "1.0.0"

__all__ = [
    "TOPICS",
    "Actor",
    "Channel",
    "ContractModel",
    "EventObject",
    "Priority",
    "TopicSpec",
    "__version__",
    "by_name",
]
