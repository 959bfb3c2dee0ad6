"""email-worker settings: unsubscribe links never outlive what ingest-api accepts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from clarion_email.settings import EmailSettings


def test_unsubscribe_ttl_within_the_accepted_lifetime() -> None:
    with pytest.raises(ValidationError, match="unsubscribe_token_max_lifetime_seconds"):
        EmailSettings(
            unsubscribe_token_ttl_seconds=10 * 86400,
            unsubscribe_token_max_lifetime_seconds=5 * 86400,
        )
    s = EmailSettings()
    assert s.unsubscribe_token_ttl_seconds <= s.unsubscribe_token_max_lifetime_seconds
