"""The inbox read model and the end-user inbox API over HTTP on the embedded stack.

Notification records are published to the notifications topic as the aggregator
would; the service's consumer materialises them and the API serves them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from clarion_contracts.registry import DELIVERY_STATUS, INBOX_EVENTS, NOTIFICATIONS
from clarion_contracts.v1 import DeliveryStatus, InboxEvent, Notification

pytestmark = pytest.mark.integration

BASE = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def notification(
    nid: str,
    user: str,
    *,
    version: int = 1,
    minutes: int = 0,
    category: str = "social",
    type_: str = "post.liked",
    title: str | None = None,
) -> Notification:
    at = BASE + timedelta(minutes=minutes)
    return Notification(
        notification_id=nid,
        version=version,
        recipient_id=user,
        type=type_,
        category=category,
        group_key=f"{user}|{type_}|post:{nid}|0",
        object={"type": "post", "id": nid},
        actors=[{"id": "alice", "name": "Alice"}],
        actor_count=version,
        event_ids=[uuid.uuid4()],
        title=title or f"{nid} v{version}",
        body="body",
        body_html="<p>body</p>",
        channels=["in_app"],
        created_at=BASE,
        updated_at=at,
        first_occurred_at=BASE,
        last_occurred_at=at,
    )


async def publish(service: Any, *items: Notification) -> None:
    await service.produce(NOTIFICATIONS, [(n.recipient_id.encode(), n.to_bytes()) for n in items])


async def inbox(service: Any, user: str, **params: Any) -> dict[str, Any]:
    response = await service.http.get(
        "/v1/me/notifications", params=params, headers=service.user_headers(user)
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def wait_for(service: Any, user: str, nid: str, version: int = 1) -> dict[str, Any]:
    async def seen() -> dict[str, Any] | None:
        response = await service.http.get(
            f"/v1/me/notifications/{nid}", headers=service.user_headers(user)
        )
        if response.status_code == 200 and response.json()["version"] >= version:
            found: dict[str, Any] = response.json()
            return found
        return None

    result: dict[str, Any] = await service.eventually(seen)
    return result


async def counts(service: Any, user: str) -> dict[str, Any]:
    response = await service.http.get(
        "/v1/me/notifications/counts", headers=service.user_headers(user)
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_inbox_lists_pages_and_filters(inbox_service: Any) -> None:
    svc = inbox_service
    items = [
        notification(f"n{i}", "bob", minutes=i, category="social" if i % 2 else "system")
        for i in range(5)
    ]
    items.append(notification("a1", "alice", minutes=10))
    await publish(svc, *items)
    await wait_for(svc, "bob", "n4")
    await wait_for(svc, "alice", "a1")

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await inbox(svc, "bob", **params)
        pages += 1
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10
    assert seen == ["n4", "n3", "n2", "n1", "n0"]
    assert pages == 3

    social = await inbox(svc, "bob", category="social")
    assert [i["id"] for i in social["items"]] == ["n3", "n1"]
    assert (await inbox(svc, "bob", type="post.liked"))["items"]
    assert (await inbox(svc, "bob", type="repo.starred"))["items"] == []

    read = await svc.http.post("/v1/me/notifications/n3/read", headers=svc.user_headers("bob"))
    assert read.status_code == 200
    assert read.json()["read"] is True
    assert [i["id"] for i in (await inbox(svc, "bob", unread="true"))["items"]] == [
        "n4",
        "n2",
        "n1",
        "n0",
    ]
    assert [i["id"] for i in (await inbox(svc, "bob", unread="false"))["items"]] == ["n3"]

    bad = await svc.http.get(
        "/v1/me/notifications", params={"cursor": "garbage!"}, headers=svc.user_headers("bob")
    )
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
    too_many = await svc.http.get(
        "/v1/me/notifications", params={"limit": 0}, headers=svc.user_headers("bob")
    )
    assert too_many.status_code == 422


async def test_stale_version_is_ignored_and_new_version_is_unread(inbox_service: Any) -> None:
    svc = inbox_service
    await publish(svc, notification("x1", "bob", version=1))
    await wait_for(svc, "bob", "x1")
    read = await svc.http.post("/v1/me/notifications/x1/read", headers=svc.user_headers("bob"))
    assert read.json()["read"] is True

    # v3 then a late v2, then a sentinel proving v2 was consumed.
    await publish(
        svc,
        notification("x1", "bob", version=3, minutes=3, title="three"),
        notification("x1", "bob", version=2, minutes=2, title="two"),
        notification("sentinel", "bob", minutes=1),
    )
    await wait_for(svc, "bob", "sentinel")
    current = await wait_for(svc, "bob", "x1", version=3)
    assert current["version"] == 3
    assert current["title"] == "three"
    assert current["read"] is False  # a new version is unread again
    assert (await counts(svc, "bob"))["unread"] == 2

    # A redelivered record of the version already held changes nothing either.
    await publish(svc, notification("x1", "bob", version=3, minutes=3, title="replayed"))
    await publish(svc, notification("sentinel2", "bob", minutes=1))
    await wait_for(svc, "bob", "sentinel2")
    again = await wait_for(svc, "bob", "x1", version=3)
    assert again["title"] == "three"


async def test_changes_update_counts_and_publish_inbox_events(inbox_service: Any) -> None:
    svc = inbox_service
    bob = svc.user_headers("bob")
    await publish(
        svc,
        notification("m1", "bob", minutes=1),
        notification("m2", "bob", minutes=2, category="system"),
        notification("m3", "bob", minutes=3),
        notification("other", "carol", minutes=4),
    )
    await wait_for(svc, "bob", "m3")
    await wait_for(svc, "carol", "other")
    assert await counts(svc, "bob") == {
        "unread": 3,
        "total": 3,
        "categories": {
            "social": {"unread": 2, "total": 2},
            "system": {"unread": 1, "total": 1},
        },
    }

    assert (await svc.http.post("/v1/me/notifications/m1/read", headers=bob)).status_code == 200
    assert (await counts(svc, "bob"))["unread"] == 2
    # Reading again changes nothing and publishes nothing.
    assert (await svc.http.post("/v1/me/notifications/m1/read", headers=bob)).status_code == 200
    unread = await svc.http.post("/v1/me/notifications/m1/unread", headers=bob)
    assert unread.json()["read"] is False
    assert (await counts(svc, "bob"))["unread"] == 3

    all_read = await svc.http.post("/v1/me/notifications:read-all", headers=bob)
    assert all_read.json() == {"updated": 3, "unread_count": 0}
    nothing = await svc.http.post("/v1/me/notifications:read-all", headers=bob)
    assert nothing.json() == {"updated": 0, "unread_count": 0}

    assert (await svc.http.post("/v1/me/notifications/m2/unread", headers=bob)).status_code == 200
    deleted = await svc.http.delete("/v1/me/notifications/m2", headers=bob)
    assert deleted.status_code == 204
    assert (await svc.http.delete("/v1/me/notifications/m2", headers=bob)).status_code == 404
    assert (await counts(svc, "bob")) == {
        "unread": 0,
        "total": 2,
        "categories": {"social": {"unread": 0, "total": 2}},
    }

    batch = await svc.http.post(
        "/v1/me/notifications:batch-delete",
        json={"ids": ["m1", "other", "missing", "m1"]},
        headers=bob,
    )
    assert batch.status_code == 200
    assert batch.json() == {"deleted": ["m1"], "unread_count": 0}
    assert [i["id"] for i in (await inbox(svc, "bob"))["items"]] == ["m3"]
    # carol's notification is untouched
    assert (await counts(svc, "carol"))["total"] == 1

    records = await svc.read_topic(INBOX_EVENTS, 6)
    events = [InboxEvent.from_bytes(r.value) for r in records]
    assert all(r.key == b"bob" for r in records)
    assert [(e.action.value, e.notification_ids, e.unread_count) for e in events] == [
        ("read", ["m1"], 2),
        ("unread", ["m1"], 3),
        ("all_read", [], 0),
        ("unread", ["m2"], 1),
        ("deleted", ["m2"], 0),
        ("deleted", ["m1"], 0),
    ]
    assert len({e.event_id for e in events}) == 6


async def test_another_users_notification_answers_404_like_a_missing_one(
    inbox_service: Any,
) -> None:
    svc = inbox_service
    await publish(svc, notification("secret", "alice"), notification("mine", "bob"))
    await wait_for(svc, "alice", "secret")
    await wait_for(svc, "bob", "mine")
    bob = svc.user_headers("bob")

    def shape(response: Any) -> tuple[int, str, str, str]:
        body = response.json()
        return (
            response.status_code,
            response.headers["content-type"],
            body["title"],
            body["detail"].replace("secret", "ID").replace("nothing-here", "ID"),
        )

    for method, suffix in [
        ("GET", ""),
        ("POST", "/read"),
        ("POST", "/unread"),
        ("DELETE", ""),
    ]:
        theirs = await svc.http.request(method, f"/v1/me/notifications/secret{suffix}", headers=bob)
        missing = await svc.http.request(
            method, f"/v1/me/notifications/nothing-here{suffix}", headers=bob
        )
        assert theirs.status_code == 404, (method, suffix)
        assert shape(theirs) == shape(missing)

    # Guessing ids finds nothing either.
    for guess in ["secret ", "SECRET", "secret%", "a1", "1", "n0", "' OR '1'='1"]:
        response = await svc.http.get(f"/v1/me/notifications/{guess}", headers=bob)
        assert response.status_code == 404, guess

    batch = await svc.http.post(
        "/v1/me/notifications:batch-delete", json={"ids": ["secret"]}, headers=bob
    )
    assert batch.json()["deleted"] == []
    assert "secret" not in [i["id"] for i in (await inbox(svc, "bob"))["items"]]

    alice = await svc.http.get("/v1/me/notifications/secret", headers=svc.user_headers("alice"))
    assert alice.status_code == 200
    assert alice.json()["read"] is False
    assert (await counts(svc, "alice"))["unread"] == 1
    # No inbox event was published for bob's failed attempts.
    assert await svc.read_topic(INBOX_EVENTS, 1, timeout=1.0) == []


async def test_tokens_are_required(ingest: Any) -> None:
    svc = ingest
    from clarion_kit.auth import issue_token

    expired = issue_token(svc.settings, "bob", ttl=-3600)
    forged = issue_token(svc.settings.model_copy(update={"jwt_secret": "x" * 40}), "bob", ttl=600)
    for headers in (
        {},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": f"Bearer {expired}"},
        {"Authorization": f"Bearer {forged}"},
        {"Authorization": f"Basic {forged}"},
        {"X-API-Key": svc.api_key},
    ):
        response = await svc.http.get("/v1/me/notifications", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == "application/problem+json"


async def test_counts_cache_is_rebuilt_after_redis_flush(start_ingest: Any, devstack: Any) -> None:
    # Database 1 of the session's Redis belongs to this test alone, so FLUSHDB is safe.
    redis_url = devstack.redis_url.rsplit("/", 1)[0] + "/1"
    async with start_ingest(redis_url=redis_url, consume_notifications=True) as svc:
        await publish(svc, notification("c1", "bob"), notification("c2", "bob", minutes=1))
        await wait_for(svc, "bob", "c2")
        assert (await counts(svc, "bob"))["unread"] == 2
        client = aioredis.Redis.from_url(redis_url)
        try:
            key = f"{svc.settings.redis_prefix}ingest:counts:bob"
            assert await client.exists(key) == 1
            await client.flushdb()
            assert await client.exists(key) == 0
            assert (await counts(svc, "bob"))["unread"] == 2
            assert await client.exists(key) == 1
            # A change after the flush keeps the rebuilt cache right.
            await svc.http.post("/v1/me/notifications/c1/read", headers=svc.user_headers("bob"))
            await client.flushdb()
            assert (await counts(svc, "bob"))["unread"] == 1
        finally:
            await client.aclose()


async def test_delivery_status_is_recorded_per_channel(start_ingest: Any) -> None:
    async with start_ingest(consume_notifications=True, consume_delivery_status=True) as svc:
        await _delivery_status_is_recorded(svc)


async def _delivery_status_is_recorded(svc: Any) -> None:
    await publish(svc, notification("d1", "bob"))
    await wait_for(svc, "bob", "d1")
    status = DeliveryStatus(
        status_id="d1:1:push",
        notification_id="d1",
        version=1,
        recipient_id="bob",
        channel="push",
        status="delivered",
        occurred_at=datetime.now(UTC),
    )
    await svc.produce(DELIVERY_STATUS, [(b"d1", status.to_bytes())])

    async def delivered() -> bool:
        found = await wait_for(svc, "bob", "d1")
        return bool(found["deliveries"] == {"push": "delivered"})

    await svc.eventually(delivered)


async def test_rate_limits_answer_429_with_retry_after(start_ingest: Any) -> None:
    async with start_ingest(
        rate_limit_user=2,
        rate_limit_api_key=1,
        rate_limit_strategy="fixed",
        rate_limit_window_seconds=86400,
    ) as svc:
        bob = svc.user_headers("bob")
        for _ in range(2):
            assert (await svc.http.get("/v1/me/preferences", headers=bob)).status_code == 200
        limited = await svc.http.get("/v1/me/preferences", headers=bob)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["content-type"] == "application/problem+json"
        # Another user has a budget of their own; a refused write changes nothing.
        carol = svc.user_headers("carol")
        assert (await svc.http.get("/v1/me/preferences", headers=carol)).status_code == 200
        assert (await svc.http.get("/v1/me/preferences", headers=carol)).status_code == 200
        refused = await svc.http.put(
            "/v1/me/preferences", json={"email_digest": "off"}, headers=carol
        )
        assert refused.status_code == 429

        key = svc.producer_headers()
        first = await svc.http.put("/v1/users/u1", json={"name": "U"}, headers=key)
        assert first.status_code in (200, 503)  # 503 only while Kafka is still connecting
        second = await svc.http.put("/v1/users/u2", json={"name": "U"}, headers=key)
        assert second.status_code == 429
        assert int(second.headers["retry-after"]) >= 1


async def test_bad_user_requests_change_nothing(inbox_service: Any) -> None:
    svc = inbox_service
    await publish(svc, notification("b1", "bob"), notification("b2", "bob", minutes=1))
    await wait_for(svc, "bob", "b2")
    bob = svc.user_headers("bob")
    json_headers = {**bob, "content-type": "application/json"}
    too_big = b'{"ids": ["' + b"x" * svc.settings.max_body_bytes + b'"]}'
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        (
            "POST",
            "/v1/me/notifications:batch-delete",
            {"content": b"{", "headers": json_headers},
            422,
        ),
        ("POST", "/v1/me/notifications:batch-delete", {"json": {"ids": "b1"}, "headers": bob}, 422),
        ("POST", "/v1/me/notifications:batch-delete", {"json": {"ids": []}, "headers": bob}, 422),
        ("POST", "/v1/me/notifications:batch-delete", {"json": {"ids": [1]}, "headers": bob}, 422),
        (
            "POST",
            "/v1/me/notifications:batch-delete",
            {"json": {"ids": ["b1"], "all": True}, "headers": bob},
            422,
        ),
        (
            "POST",
            "/v1/me/notifications:batch-delete",
            {"content": too_big, "headers": json_headers},
            413,
        ),
        ("POST", "/v1/me/notifications:batch-delete", {"json": {"ids": ["b1"]}}, 401),
        ("POST", "/v1/me/notifications/b1/read", {}, 401),
        ("DELETE", "/v1/me/notifications/b1", {"headers": svc.user_headers("mallory")}, 404),
        ("PUT", "/v1/me/preferences", {"content": b"[1,", "headers": json_headers}, 422),
        ("PUT", "/v1/me/preferences", {"json": {"digest_hour": "nine"}, "headers": bob}, 422),
        ("POST", "/v1/me/push-subscriptions", {"json": {"endpoint": "x"}, "headers": bob}, 422),
    ]
    for method, path, kwargs, status in cases:
        response = await svc.http.request(method, path, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert (await counts(svc, "bob"))["unread"] == 2
    assert [i["id"] for i in (await inbox(svc, "bob"))["items"]] == ["b2", "b1"]
    prefs = await svc.http.get("/v1/me/preferences", headers=bob)
    assert prefs.json()["updated_at"] is None
    assert await svc.read_topic(INBOX_EVENTS, 1, timeout=1.0) == []


async def test_poison_records_in_a_batch_go_to_the_dlq_and_the_rest_is_applied(
    inbox_service: Any,
) -> None:
    svc = inbox_service
    good = notification("p1", "bob")
    # The contract accepts any actor count but the database column is a 32-bit integer
    # (SQLSTATE 22003): that record alone is refused once the batch is applied record
    # by record.
    refused = notification("p2", "bob").model_copy(update={"actor_count": 2**40})
    later = notification("p3", "bob", minutes=1)
    await svc.produce(
        NOTIFICATIONS,
        [
            (b"bob", good.to_bytes()),
            (b"bob", b"{not json"),
            (b"bob", b'{"schema_version": 1, "notification_id": "half"}'),
            (b"bob", refused.to_bytes()),
            (b"bob", later.to_bytes()),
        ],
        together=True,
    )
    await wait_for(svc, "bob", "p1")
    await wait_for(svc, "bob", "p3")
    missing = await svc.http.get("/v1/me/notifications/p2", headers=svc.user_headers("bob"))
    assert missing.status_code == 404
    assert [n["id"] for n in (await inbox(svc, "bob"))["items"]] == ["p3", "p1"]

    dead = await svc.read_topic(NOTIFICATIONS, 3, dlq=True)
    assert [r.value for r in dead][:2] == [
        b"{not json",
        b'{"schema_version": 1, "notification_id": "half"}',
    ]
    assert Notification.from_bytes(dead[2].value).notification_id == "p2"
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["x-clarion-original-topic"] == svc.topic(NOTIFICATIONS)
        assert headers["x-clarion-error-type"]
        assert headers["x-clarion-error"]
        assert record.key == b"bob"
    types = [dict(r.headers)["x-clarion-error-type"].decode() for r in dead]
    assert types[0] == types[1] == "ValidationError"
    assert types[2] != "ValidationError"

    # The partition is not blocked: a later record is still applied.
    await publish(svc, notification("p4", "bob", minutes=2))
    await wait_for(svc, "bob", "p4")


async def test_a_batch_applies_the_newest_version_and_refreshes_every_users_counts(
    inbox_service: Any,
) -> None:
    svc = inbox_service
    await publish(svc, notification("v1", "bob"), notification("w1", "carol"))
    await wait_for(svc, "bob", "v1")
    await wait_for(svc, "carol", "w1")
    assert (await counts(svc, "bob"))["unread"] == 1  # cached now
    assert (await counts(svc, "carol"))["unread"] == 1
    read = await svc.http.post("/v1/me/notifications/v1/read", headers=svc.user_headers("bob"))
    assert read.status_code == 200
    deleted = await svc.http.delete("/v1/me/notifications/w1", headers=svc.user_headers("carol"))
    assert deleted.status_code == 204

    batch = [
        notification("v1", "bob", version=3, minutes=3, title="three"),
        notification("v1", "bob", version=2, minutes=2, title="two"),
        notification("v2", "bob", minutes=4),
        notification("w1", "carol", version=2, minutes=5, title="after delete"),
        notification("w2", "carol", minutes=6),
        notification("v1", "bob", version=3, minutes=3, title="three again"),
    ]
    await svc.produce(
        NOTIFICATIONS, [(n.recipient_id.encode(), n.to_bytes()) for n in batch], together=True
    )
    await wait_for(svc, "carol", "w2")
    found = await wait_for(svc, "bob", "v2")
    assert found["read"] is False
    v1 = await wait_for(svc, "bob", "v1", version=3)
    assert v1["title"] in ("three", "three again")
    assert v1["read"] is False  # a new version is unread again
    gone = await svc.http.get("/v1/me/notifications/w1", headers=svc.user_headers("carol"))
    assert gone.status_code == 404  # deleted stays deleted
    assert (await counts(svc, "bob"))["unread"] == 2
    assert (await counts(svc, "carol"))["unread"] == 1
    assert (await counts(svc, "carol"))["total"] == 1


async def test_delivery_statuses_of_one_batch_keep_the_latest_per_channel(
    start_ingest: Any,
) -> None:
    async with start_ingest(consume_notifications=True, consume_delivery_status=True) as svc:
        await publish(svc, notification("s1", "bob"))
        await wait_for(svc, "bob", "s1")
        at = datetime.now(UTC)

        def st(channel: str, state: str, user: str = "bob") -> tuple[bytes, bytes]:
            status = DeliveryStatus(
                status_id=f"s1:{channel}:{state}:{user}",
                notification_id="s1",
                version=1,
                recipient_id=user,
                channel=channel,
                status=state,
                occurred_at=at,
            )
            return (b"s1", status.to_bytes())

        await svc.produce(
            DELIVERY_STATUS,
            [
                st("push", "retrying"),
                (b"s1", b"\xff not utf-8"),
                st("email", "deferred"),
                st("push", "delivered"),
                st("push", "failed", user="mallory"),
                st("email", "bounced"),
            ],
            together=True,
        )

        async def recorded() -> bool:
            found = await wait_for(svc, "bob", "s1")
            return bool(found["deliveries"] == {"push": "delivered", "email": "bounced"})

        await svc.eventually(recorded)
        dead = await svc.read_topic(DELIVERY_STATUS, 1, dlq=True)
        assert [r.value for r in dead] == [b"\xff not utf-8"]
