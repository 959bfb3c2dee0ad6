import asyncio, sys
from datetime import UTC, datetime
import pytest
from clarion_contracts.registry import PREFERENCES
from clarion_contracts.v1 import Preferences
from clarion_aggregator.app import build_service
from clarion_aggregator.domain.clock import ManualClock

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

@pytest.mark.integration
async def test_dbg(settings_factory, producer):
    settings = settings_factory()
    service = build_service(settings, clock=ManualClock(T0))
    async def dump():
        await asyncio.sleep(40)
        for t in asyncio.all_tasks():
            print("TASK", t.get_name(), file=sys.stderr)
            t.print_stack(limit=6, file=sys.stderr)
    d = asyncio.create_task(dump())
    print("starting", file=sys.stderr)
    async with service.app:
        print("started", file=sys.stderr)
        muted = Preferences.model_validate({"user_id": "bob", "muted_objects": ["post:p1"], "updated_at": T0.isoformat()})
        f = await producer.send(settings.topic(PREFERENCES), muted.to_bytes(), key=b"bob")
        await f
        print("sent", file=sys.stderr)
        for _ in range(100):
            u = await service.store.load_contexts(["bob"])
            if u["bob"].prefs: break
            await asyncio.sleep(0.1)
        print("stored?", u, file=sys.stderr)
    print("stopped", file=sys.stderr)
    d.cancel()
