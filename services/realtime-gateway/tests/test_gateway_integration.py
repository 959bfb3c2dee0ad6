"""The gateway on the embedded stack: fan-out, failover recovery, dedup, slow consumers, resets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from clarion_contracts.base import Channel
from clarion_contracts.registry import DELIVERY_STATUS, NOTIFICATIONS, PRESENCE
from clarion_contracts.v1 import DeliveryState, InboxAction, PresenceStatus
from clarion_gateway.protocol import CloseCode

pytestmark = pytest.mark.integration


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [int(f["offset"].split(":")[1]) for f in frames]


def read_frames_in_thread(port: int, token: str, count: int) -> list[str]:
    """Connect with the sync client and return the ids of the first ``count`` notifications."""
    ids: list[str] = []
    with sync_connect(f"ws://127.0.0.1:{port}/v1/ws") as ws:
        ws.send(json.dumps({"type": "connect", "token": token}))
        deadline = time.monotonic() + 90
        while len(ids) < count:
            frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if frame["type"] == "notification.created":
                ids.append(frame["notification"]["notification_id"])
    return ids


async def drain_until_closed(ws: Any, timeout: float = 20.0) -> None:
    """Read and discard frames until the server closes the connection."""
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(_read_forever(ws), timeout)


async def _read_forever(ws: Any) -> None:
    while True:
        await ws.recv()


async def wait_assigned(harness: Any, *gateways: Any) -> None:
    """Until every instance owns at least one partition of the consumer group."""
    await harness.wait_for(
        lambda: all(gw._consumer.assignment() for gw in gateways), what="group assignment"
    )


async def test_user_on_b_receives_what_a_consumed(harness: Any) -> None:
    gw_a = await harness.gateway()
    gw_b = await harness.gateway()
    await wait_assigned(harness, gw_a, gw_b)
    users = [f"user{i}" for i in range(8)]
    clients = {u: await harness.client(gw_b, u) for u in users}
    consumed_by_a: list[str] = []
    a_partitions = {tp.partition for tp in gw_a._consumer.assignment()}
    for user in users:
        meta = await harness.producer.send_and_wait(
            harness.prefix + "clarion.notifications.v1",
            value=harness.notification(user, f"{user}-n1").to_bytes(),
            key=user.encode(),
        )
        if meta.partition in a_partitions:
            consumed_by_a.append(user)
    assert consumed_by_a, "no user key landed on instance A's partitions"
    for user, client in clients.items():
        (frame,) = await client.recv_until(1)
        assert frame["type"] == "notification.created"
        assert frame["notification"]["notification_id"] == f"{user}-n1"
        assert frame["notification"]["recipient_id"] == user
    appended_by_a = gw_a.metrics.records.labels(
        harness.prefix + "clarion.notifications.v1", "appended"
    )._value.get()
    assert appended_by_a == len(consumed_by_a)


async def test_many_sessions_of_one_user_all_receive(harness: Any) -> None:
    gw = await harness.gateway()
    phone = await harness.client(gw, "bob")
    laptop = await harness.client(gw, "bob")
    await harness.notify(harness.notification("bob", "b1"))
    for client in (phone, laptop):
        (frame,) = await client.recv_until(1)
        assert frame["notification"]["notification_id"] == "b1"


async def test_failover_recovers_missed_notifications_in_order(harness: Any) -> None:
    gw_a = await harness.gateway()
    gw_b = await harness.gateway()
    await wait_assigned(harness, gw_a, gw_b)
    client = await harness.client(gw_a, "carol")
    await harness.notify(harness.notification("carol", "c0"))
    await client.recv_until(1)
    last_offset = client.offset

    await gw_a.kill()
    with pytest.raises(ConnectionClosed):
        await client.recv(timeout=10)
    for i in range(1, 6):
        await harness.notify(harness.notification("carol", f"c{i}"))
    # Missed notifications are in the history once the survivor consumed them.
    await harness.wait_for(
        lambda: _top_seq(gw_b, "carol", 6), what="survivor consumed the missed notifications"
    )

    resumed = await harness.client(gw_b, "carol", since=last_offset)
    assert resumed.connected["recovered"] is True
    assert resumed.connected["missed"] == 5
    missed = await resumed.recv_until(5)
    assert [f["notification"]["notification_id"] for f in missed] == [f"c{i}" for i in range(1, 6)]
    assert seqs(missed) == [2, 3, 4, 5, 6]
    await harness.notify(harness.notification("carol", "c6"))
    frames = await resumed.recv_until(6)
    assert frames[-1]["notification"]["notification_id"] == "c6"
    assert seqs(frames) == [2, 3, 4, 5, 6, 7]


async def _top_seq(gw: Any, user: str, expected: int) -> bool:
    state = await gw.history.state(user)
    return bool(state.top_seq >= expected)


async def test_redelivered_records_are_shown_once(harness: Any) -> None:
    gw = await harness.gateway()
    client = await harness.client(gw, "dave")
    v1 = harness.notification("dave", "d1", 1)
    for _ in range(3):
        await harness.notify(v1)
    await client.recv_until(1)
    # The two topics are not ordered with each other: inbox events follow once d1 is seen.
    read = harness.inbox_event("dave", InboxAction.READ, ["d1"], 0)
    for _ in range(3):
        await harness.inbox(read)
    await client.recv_until(2)
    v2 = harness.notification("dave", "d1", 2)
    await harness.notify(v2)
    await harness.notify(v1)  # an older version after a newer one changes nothing
    await harness.notify(v2)
    await harness.notify(harness.notification("dave", "d2", 1))
    await client.recv_until(4)
    with contextlib.suppress(TimeoutError):
        while True:  # anything shown twice would arrive before or right after d2
            await client.recv(timeout=0.5)
    stream = client.stream_frames()
    kinds = [(f["type"], f.get("notification", {}).get("version")) for f in stream]
    assert kinds == [
        ("notification.created", 1),
        ("notification.read", None),
        ("notification.updated", 2),
        ("notification.created", 1),
    ]
    assert seqs(stream) == [1, 2, 3, 4]
    # created: 1 unread; read: ingest-api says 0; the update reopens the read one; d2: 2.
    assert [f["unread_count"] for f in stream] == [1, 0, 1, 2]
    duplicates = gw.metrics.records.labels(
        harness.prefix + "clarion.notifications.v1", "duplicate"
    )._value.get()
    assert duplicates == 4  # two repeats of v1, the stale v1, one repeat of v2


async def test_first_version_seen_counts_unread_even_when_skipped(harness: Any) -> None:
    gw = await harness.gateway()
    client = await harness.client(gw, "erin")
    await harness.notify(harness.notification("erin", "e1", 3))  # v1 and v2 never came
    await harness.notify(harness.notification("erin", "e1", 4))
    await harness.notify(harness.notification("erin", "e2", 1))
    await client.recv_until(3)
    stream = client.stream_frames()
    kinds = [(f["type"], f["notification"]["version"]) for f in stream]
    assert kinds == [
        ("notification.updated", 3),
        ("notification.updated", 4),
        ("notification.created", 1),
    ]
    assert [f["unread_count"] for f in stream] == [1, 1, 2]


async def test_read_event_before_the_notification_keeps_it_read(harness: Any) -> None:
    gw = await harness.gateway()
    client = await harness.client(gw, "fern")
    # ingest-api stored f1 and the user read it; the gateway sees the read event first.
    await harness.inbox(harness.inbox_event("fern", InboxAction.READ, ["f1"], 0))
    await client.recv_until(1)
    await harness.notify(harness.notification("fern", "f1", 1))
    await harness.notify(harness.notification("fern", "f2", 1))
    await client.recv_until(3)
    stream = client.stream_frames()
    assert [f["type"] for f in stream] == [
        "notification.read",
        "notification.created",
        "notification.created",
    ]
    assert [f["unread_count"] for f in stream] == [0, 0, 1]
    await harness.notify(harness.notification("fern", "f1", 2))  # a newer version reopens it
    await client.recv_until(4)
    assert client.stream_frames()[-1]["unread_count"] == 2


async def test_slow_consumer_is_cut_off_without_holding_back_others(harness: Any) -> None:
    # Small buffers so the non-reading client overflows quickly; small consumer batches so
    # a reading client never gets a burst larger than its queue.
    gw = await harness.gateway(
        # The queue leaves a reading client headroom on a loaded machine; the total
        # is well past what a client that never reads can buffer.
        send_queue_size=32,
        write_limit=16 * 1024,
        socket_send_buffer=16 * 1024,
        close_timeout=30.0,
        kafka_max_batch=4,
    )
    token = harness.token("erin")
    big = "x" * 30_000
    total = 80
    # The fast client reads in its own thread (websockets' sync client), so it keeps up
    # whatever this event loop, shared with the gateway, is busy with.
    fast_reader = asyncio.create_task(
        asyncio.to_thread(read_frames_in_thread, gw.ws_port, token, total)
    )
    await harness.wait_for(lambda: gw.connection_count == 1, what="fast client connected")
    sock = socket.create_connection(("127.0.0.1", gw.ws_port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow_ws = await connect(f"ws://127.0.0.1:{gw.ws_port}/v1/ws", sock=sock, max_queue=1)
    await slow_ws.send(json.dumps({"type": "connect", "token": token}))
    await harness.wait_for(lambda: gw.connection_count == 2, what="slow client connected")
    for i in range(total):
        await harness.notify(harness.notification("erin", f"e{i}", body=big))
    await harness.wait_for(
        lambda: gw.metrics.slow_consumer_closes._value.get() >= 1,
        timeout=60,
        what="slow consumer closed",
    )
    ids = await fast_reader
    assert ids == [f"e{i}" for i in range(total)]
    assert gw.metrics.slow_consumer_closes._value.get() == 1
    # Only now does the slow client read: it finds the 4008 close after its backlog.
    await drain_until_closed(slow_ws)
    assert slow_ws.close_code == CloseCode.SLOW_CONSUMER


async def test_history_reset_means_recovered_false(harness: Any) -> None:
    gw = await harness.gateway()
    client = await harness.client(gw, "frank")
    await harness.notify(harness.notification("frank", "f1"))
    await client.recv_until(1)
    old = client.offset
    await client.close()
    await gw.history.reset("frank")  # what losing Redis data does
    await harness.notify(harness.notification("frank", "f2"))
    await harness.wait_for(lambda: _top_seq(gw, "frank", 1), what="f2 appended")
    again = await harness.client(gw, "frank", since=old)
    assert again.connected["recovered"] is False
    assert again.connected["offset"].split(":")[0] != old.split(":")[0]
    assert again.connected["missed"] == 0


async def test_live_epoch_change_closes_with_resync(harness: Any) -> None:
    gw = await harness.gateway()
    client = await harness.client(gw, "gina")
    await harness.notify(harness.notification("gina", "g1"))
    await client.recv_until(1)
    await gw.history.reset("gina")
    await harness.notify(harness.notification("gina", "g2"))
    await drain_until_closed(client.ws)
    assert client.ws.close_code == CloseCode.RESYNC


async def test_trimmed_history_means_recovered_false(harness: Any) -> None:
    gw = await harness.gateway(history_size=3)
    client = await harness.client(gw, "hank")
    await harness.notify(harness.notification("hank", "h0"))
    await client.recv_until(1)
    old = client.offset
    await client.close()
    for i in range(1, 6):
        await harness.notify(harness.notification("hank", f"h{i}"))
    await harness.wait_for(lambda: _top_seq(gw, "hank", 6), what="appended")
    again = await harness.client(gw, "hank", since=old)
    assert again.connected["recovered"] is False
    assert again.connected["offset"].endswith(":6")


async def test_lost_pubsub_message_is_filled_from_history(harness: Any) -> None:
    gw = await harness.gateway(kafka=False)
    client = await harness.client(gw, "ivy")
    history = gw.history
    lost = harness.notification("ivy", "i1")
    from clarion_gateway.domain.entries import entry_from_notification

    dropped = lose_next_pubsub_message(gw)
    await history.append(entry_from_notification(lost))
    await harness.wait_for(lambda: bool(dropped), what="i1 lost on pub/sub")
    await history.append(entry_from_notification(harness.notification("ivy", "i2")))
    frames = await client.recv_until(2)
    assert [f["notification"]["notification_id"] for f in frames] == ["i1", "i2"]
    assert gw.metrics.gap_fills._value.get() == 1


@pytest.mark.parametrize("token", ["not-a-jwt", "expired"])
async def test_bad_token_closes_4001(harness: Any, token: str) -> None:
    gw = await harness.gateway(kafka=False)
    if token == "expired":
        token = harness.token("jo", ttl=-3600)
    async with connect(f"ws://127.0.0.1:{gw.ws_port}/v1/ws") as ws:
        await ws.send(json.dumps({"type": "connect", "token": token, "since": None}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == CloseCode.BAD_TOKEN


async def test_no_connect_frame_closes_4002(harness: Any) -> None:
    gw = await harness.gateway(kafka=False, connect_timeout=0.5)
    async with connect(f"ws://127.0.0.1:{gw.ws_port}/v1/ws") as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == CloseCode.CONNECT_TIMEOUT


async def test_frame_before_connect_closes_4003(harness: Any) -> None:
    gw = await harness.gateway(kafka=False)
    async with connect(f"ws://127.0.0.1:{gw.ws_port}/v1/ws") as ws:
        await ws.send(json.dumps({"type": "ping"}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == CloseCode.PROTOCOL_ERROR


async def test_ping_and_unread_count_requests(harness: Any) -> None:
    gw = await harness.gateway()
    client = await harness.client(gw, "kim")
    await harness.notify(harness.notification("kim", "k1"))
    await client.recv_until(1)
    await client.ws.send(json.dumps({"type": "ping"}))
    assert (await client.recv())["type"] == "pong"
    await client.ws.send(json.dumps({"type": "get_unread_count"}))
    frame = await client.recv()
    assert frame["type"] == "unread_count"
    assert frame["unread_count"] == 1
    assert frame["offset"] == client.offset


async def test_delivery_status_once_per_version_and_presence(harness: Any) -> None:
    gw = await harness.gateway()
    first = await harness.client(gw, "lena")
    second = await harness.client(gw, "lena")
    online = await harness.read_topic(PRESENCE, lambda ms: any(m.user_id == "lena" for m in ms))
    assert [(m.user_id, m.status) for m in online] == [("lena", PresenceStatus.ONLINE)]

    await harness.notify(harness.notification("lena", "l1"))
    await harness.notify(harness.notification("lena", "l1", 2))
    for client in (first, second):
        await client.recv_until(2)
    # Read again after a pause: a second status for the same version would show up.
    await harness.read_topic(DELIVERY_STATUS, lambda ms: len(ms) >= 2)
    await asyncio.sleep(0.5)
    statuses = await harness.read_topic(DELIVERY_STATUS, lambda ms: len(ms) >= 2)
    assert sorted((s.notification_id, s.version) for s in statuses) == [("l1", 1), ("l1", 2)]
    assert {(s.channel, s.status, s.recipient_id) for s in statuses} == {
        (Channel.IN_APP, DeliveryState.DELIVERED, "lena")
    }

    await first.close()
    await second.close()
    events = await harness.read_topic(PRESENCE, lambda ms: len(ms) >= 2)
    assert [(m.user_id, m.status) for m in events] == [
        ("lena", PresenceStatus.ONLINE),
        ("lena", PresenceStatus.OFFLINE),
    ]


async def test_crashed_instance_users_go_offline(harness: Any) -> None:
    gw_a = await harness.gateway()
    await harness.gateway()
    await harness.client(gw_a, "milo")
    await harness.read_topic(PRESENCE, lambda ms: any(m.status == "online" for m in ms))
    await gw_a.kill()
    events = await harness.read_topic(
        PRESENCE, lambda ms: any(m.status == "offline" for m in ms), timeout=30
    )
    assert [(m.user_id, m.status) for m in events] == [
        ("milo", PresenceStatus.ONLINE),
        ("milo", PresenceStatus.OFFLINE),
    ]


async def test_history_script_renders_what_the_template_promises(harness: Any) -> None:
    from clarion_gateway.domain.entries import entry_from_notification
    from clarion_gateway.protocol import Offset

    gw = await harness.gateway(kafka=False)
    entry = entry_from_notification(harness.notification("olga", 'o"1 <x>'))
    result = await gw.history.append(entry)
    (stored,) = await gw.history.read("olga", 1)
    expected = entry.template.render(Offset(result.epoch, 1), 1).encode()
    assert stored.frame == expected
    assert (stored.seq, stored.kind, stored.version) == (1, "n", 1)
    assert json.loads(stored.frame)["notification"]["notification_id"] == 'o"1 <x>'
    again = await gw.history.append(entry)
    assert again.duplicate


async def test_invalid_record_goes_to_dlq_and_the_stream_continues(harness: Any) -> None:
    gw = await harness.gateway()
    client = await harness.client(gw, "pia")
    topic = harness.prefix + NOTIFICATIONS.name
    await harness.producer.send_and_wait(topic, value=b'{"not": "a notification"}', key=b"pia")
    await harness.notify(harness.notification("pia", "p1"))
    (frame,) = await client.recv_until(1)
    assert frame["notification"]["notification_id"] == "p1"
    consumer = AIOKafkaConsumer(
        topic + ".dlq",
        bootstrap_servers=harness.settings["kafka_bootstrap_servers"],
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    headers = dict(record.headers)
    assert record.value == b'{"not": "a notification"}'
    assert headers["x-clarion-original-topic"] == topic.encode()
    assert headers["x-clarion-error-type"] == b"ValidationError"
    assert gw.metrics.records.labels(topic, "invalid")._value.get() == 1


def lose_next_pubsub_message(gw: Any) -> list[Any]:
    """Make the instance's pub/sub reader drop the next message it reads (an at-most-once
    loss); returns the list that receives the dropped message."""
    channels = gw.channels
    real = channels._deliver
    lost: list[Any] = []

    def deliver(user_id: str, msg: Any) -> None:
        if lost:
            real(user_id, msg)
        else:
            lost.append(msg)

    channels._deliver = deliver
    return lost
