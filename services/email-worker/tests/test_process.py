"""``clarion-email-worker`` as a process: becomes ready, stops cleanly on SIGTERM."""

from __future__ import annotations

import pytest

from clarion_devstack.testing import run_service_until_ready

pytestmark = pytest.mark.integration


async def test_process_serves_readyz_and_exits_on_sigterm(stack_env: dict[str, str]) -> None:
    run = await run_service_until_ready(
        "clarion-email-worker", "CLARION_EMAIL_HTTP_PORT", stack_env
    )
    run.assert_ready_then_stopped("redis")
