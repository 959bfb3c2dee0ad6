"""``clarion-push-worker`` as a process: becomes ready, stops cleanly on SIGTERM."""

from __future__ import annotations

import pytest

from clarion_devstack.testing import run_service_until_ready

pytestmark = pytest.mark.integration


async def test_process_serves_readyz_and_exits_on_sigterm(stack_env: dict[str, str]) -> None:
    run = await run_service_until_ready("clarion-push-worker", "CLARION_PUSH_HTTP_PORT", stack_env)
    run.assert_ready_then_stopped("redis")
    # Without a configured key outside production the worker generates one and says so.
    assert b"push.vapid_key_generated" in run.output
