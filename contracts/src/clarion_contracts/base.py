"""Shared building blocks of every Clarion message contract.

Every message on a Clarion topic is one frozen pydantic model serialised as a
UTF-8 JSON object (the Kafka record value). Models ignore unknown fields so a
v1 consumer keeps working when a producer adds an optional field, which is the
only change allowed within a major version (see :mod:`clarion_contracts.compat`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from clarion_contracts.text import USER_ID_PATTERN, JsonData, Text, WebUrl, check_text

#: A user id as producers know it: 1-128 characters, no whitespace, the text policy
#: of :mod:`clarion_contracts.text` (no U+0000, noncharacters or lone surrogates).
UserId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=USER_ID_PATTERN),
    AfterValidator(check_text),
]

#: A dotted domain event type such as ``post.liked`` or ``repo.starred``.
EventType = Annotated[
    str,
    StringConstraints(
        min_length=3, max_length=100, pattern=r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$"
    ),
]

#: Free text shown to people (names, titles). Untrusted: it is sanitised before rendering.
ShortText = Annotated[Text, StringConstraints(min_length=1, max_length=300)]


class ContractModel(BaseModel):
    """Base of every message: frozen, tolerant of unknown (newer optional) fields.

    Serialise with :meth:`to_bytes`, parse with :meth:`from_bytes`; both are UTF-8 JSON.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    def to_bytes(self) -> bytes:
        """Return the record value: this model as compact UTF-8 JSON (``None`` fields kept)."""
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, value: bytes | str) -> Self:
        """Parse a record value.

        Raises:
            pydantic.ValidationError: the value is not valid JSON or not this contract.
        """
        return cls.model_validate_json(value)


class Priority(StrEnum):
    """How urgent a notification is; ``urgent`` bypasses quiet hours."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class Channel(StrEnum):
    """A delivery channel."""

    IN_APP = "in_app"
    PUSH = "push"
    EMAIL = "email"


class Actor(ContractModel):
    """Who did something: ``id`` is the producer's user id, ``name`` is untrusted display text."""

    id: UserId
    name: ShortText
    avatar_url: WebUrl | None = None


class EventObject(ContractModel):
    """What the domain event is about (a post, a repository, an issue...).

    ``(type, id)`` identifies the object for aggregation and for per-object mutes.
    """

    type: Annotated[Text, StringConstraints(min_length=1, max_length=64)]
    id: Annotated[Text, StringConstraints(min_length=1, max_length=256)]
    title: Annotated[Text, StringConstraints(max_length=1000)] | None = None
    url: WebUrl | None = None

    @property
    def ref(self) -> str:
        """``"type:id"``: the key of this object in mutes and aggregation groups."""
        return f"{self.type}:{self.id}"


#: A free JSON object (``data``): keys and strings follow the text policy, at most 32 levels.
JsonObject = JsonData
