"""Bodies of ``PUT /v1/users:batch``: many user profiles in one request (pydantic, no I/O).

A batch is validated as a whole: one invalid profile refuses the request (422,
each error located by its index), so a producer never has to find out which
part of a batch was stored.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from clarion_contracts.base import UserId
from clarion_ingest.domain.models import ProfileIn, StrictBody

MAX_PROFILES_PER_BATCH = 1000
"""Most profiles one ``PUT /v1/users:batch`` request holds."""


class ProfileItemIn(ProfileIn):
    """One profile of a batch: the body of ``PUT /v1/users/{user_id}`` plus its ``user_id``."""

    user_id: UserId


def _distinct_users(profiles: list[ProfileItemIn]) -> list[ProfileItemIn]:
    # One upsert statement cannot change a row twice, and the order of two
    # versions of a profile in one request would be meaningless anyway.
    seen: set[str] = set()
    for index, profile in enumerate(profiles):
        if profile.user_id in seen:
            raise ValueError(f"duplicate user_id {profile.user_id!r} at index {index}")
        seen.add(profile.user_id)
    return profiles


class ProfileBatchIn(StrictBody):
    """Body of ``PUT /v1/users:batch``: 1..:data:`MAX_PROFILES_PER_BATCH` distinct profiles."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "profiles": [
                        {
                            "user_id": "alice",
                            "name": "Alice",
                            "email": "alice@example.com",
                            "locale": "en-GB",
                            "timezone": "Europe/London",
                        },
                        {"user_id": "bob", "name": "Bob", "segments": ["beta"]},
                    ]
                }
            ]
        }
    )

    profiles: Annotated[
        list[ProfileItemIn],
        Field(min_length=1, max_length=MAX_PROFILES_PER_BATCH),
        AfterValidator(_distinct_users),
    ]


class ProfilesStoredOut(BaseModel):
    """Answer of ``PUT /v1/users:batch``: the user ids whose profiles were stored, in order."""

    stored: list[str]
