"""Unit tests of the pure protocol module (no I/O)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clarion_gateway.protocol import (
    CloseCode,
    ConnectFrame,
    LiveAction,
    Offset,
    PingFrame,
    ProtocolError,
    ServerSessionProtocol,
    SessionState,
    UnreadCountRequest,
    WireMessage,
    connected_frame,
    decide_live,
    decide_recovery,
    decode_wire,
    encode_wire,
    inbox_template,
    json_depth_exceeds,
    notification_template,
    parse_client_frame,
    replay_is_complete,
    unread_count_frame,
)

# ------------------------------------------------------------------ offsets


def test_offset_text_round_trip() -> None:
    off = Offset("ab12cd34", 42)
    assert str(off) == "ab12cd34:42"
    assert Offset.parse("ab12cd34:42") == off


def test_offset_object_form() -> None:
    assert Offset.parse({"epoch": "e1", "seq": 3}) == Offset("e1", 3)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "e1",
        "e1:",
        "e1:-1",
        "e1:x",
        ":3",
        "e 1:3",
        "a:b:c",
        7,
        None,
        {"epoch": "e"},
        {"epoch": "e", "seq": True},
        {"epoch": "e", "seq": -2},
        "x" * 40 + ":1",
    ],
)
def test_offset_rejects_malformed(bad: object) -> None:
    with pytest.raises(ProtocolError) as exc:
        Offset.parse(bad)
    assert exc.value.code == CloseCode.PROTOCOL_ERROR


@given(st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True), st.integers(0, 2**53))
def test_offset_round_trip_property(epoch: str, seq: int) -> None:
    assert Offset.parse(str(Offset(epoch, seq))) == Offset(epoch, seq)


# ------------------------------------------------------------------ client frames


def test_parse_connect_with_and_without_since() -> None:
    frame = parse_client_frame('{"type":"connect","token":"t","since":"e:5"}')
    assert frame == ConnectFrame(token="t", since=Offset("e", 5))
    assert parse_client_frame('{"type":"connect","token":"t"}') == ConnectFrame("t", None)


def test_parse_other_frames() -> None:
    assert parse_client_frame('{"type":"ping"}') == PingFrame()
    assert parse_client_frame('{"type":"get_unread_count"}') == UnreadCountRequest()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("not json", CloseCode.PROTOCOL_ERROR),
        ("[1]", CloseCode.PROTOCOL_ERROR),
        ('{"type":"subscribe"}', CloseCode.PROTOCOL_ERROR),
        ('{"token":"t"}', CloseCode.PROTOCOL_ERROR),
        ('{"type":"connect"}', CloseCode.BAD_TOKEN),
        ('{"type":"connect","token":""}', CloseCode.BAD_TOKEN),
        ('{"type":"connect","token":5}', CloseCode.BAD_TOKEN),
        ('{"type":"connect","token":"t","since":"nope"}', CloseCode.PROTOCOL_ERROR),
        (b'{"type":"ping"}', CloseCode.PROTOCOL_ERROR),
        ('{"type":"ping","pad":"' + "x" * 20000 + '"}', CloseCode.MESSAGE_TOO_BIG),
        # 6,000 characters but 18,000 UTF-8 bytes: the bound is on bytes.
        ('{"type":"ping","pad":"' + "€" * 6000 + '"}', CloseCode.MESSAGE_TOO_BIG),
        ("[" * 8000 + "]" * 8000, CloseCode.PROTOCOL_ERROR),
        ('{"type":"ping","x":' + "[" * 5000, CloseCode.PROTOCOL_ERROR),
        ('{"type":"ping","x":' + '{"a":' * 2000 + "1" + "}" * 2001, CloseCode.PROTOCOL_ERROR),
        ('{"type":"connect","token":"t","since":"abcd1234:²"}', CloseCode.PROTOCOL_ERROR),
        ('{"type":"connect","token":"t","since":"abcd1234:٣"}', CloseCode.PROTOCOL_ERROR),
        ('{"type":"connect","token":"t","since":"abcd1234:"}', CloseCode.PROTOCOL_ERROR),
        ('{"type":"connect","token":"t","since":"abcd1234:-1"}', CloseCode.PROTOCOL_ERROR),
        (
            '{"type":"connect","token":"t","since":"abcd1234:' + "9" * 5000 + '"}',
            CloseCode.PROTOCOL_ERROR,
        ),
        ('{"type":"connect","token":"t","since":"abéd:1"}', CloseCode.PROTOCOL_ERROR),
        (
            '{"type":"connect","token":"t","since":{"epoch":"ab","seq":1e400}}',
            CloseCode.PROTOCOL_ERROR,
        ),
        (
            '{"type":"connect","token":"t","since":{"epoch":"ab","seq":' + "9" * 30 + "}}",
            CloseCode.PROTOCOL_ERROR,
        ),
        (
            '{"type":"connect","token":"t","since":{"epoch":["ab"],"seq":1}}',
            CloseCode.PROTOCOL_ERROR,
        ),
        ('{"type":"connect","token":"t","since":5}', CloseCode.PROTOCOL_ERROR),
        ('{"type":"connect","token":"t","since":true}', CloseCode.PROTOCOL_ERROR),
        ('{"type":"connect","token":"t\u00e9"}', CloseCode.BAD_TOKEN),
        ('{"type":"connect","token":"\ud800"}', CloseCode.BAD_TOKEN),
        ('{"type":["connect"]}', CloseCode.PROTOCOL_ERROR),
        ('{"type":{"a":1}}', CloseCode.PROTOCOL_ERROR),
        ("", CloseCode.PROTOCOL_ERROR),
        ("null", CloseCode.PROTOCOL_ERROR),
        ('"\ud800"', CloseCode.PROTOCOL_ERROR),
        ("[1e99999]", CloseCode.PROTOCOL_ERROR),
        ("1" * 5000, CloseCode.PROTOCOL_ERROR),
    ],
)
def test_parse_rejects(data: str | bytes, code: CloseCode) -> None:
    with pytest.raises(ProtocolError) as exc:
        parse_client_frame(data)
    assert exc.value.code == code
    assert len(exc.value.reason.encode()) <= 123


@pytest.mark.parametrize(
    ("text", "deeper"),
    [
        ('{"type":"ping"}', False),
        ('{"since":{"epoch":"a","seq":1}}', False),
        ("[" * 8 + "]" * 8, False),
        ("[" * 9 + "]" * 9, True),
        ('["' + "[" * 50 + '"]', False),  # brackets inside a string do not nest
        ('["\\"' + ",[" * 4 + "]" * 4 + "]", False),  # an escaped backslash ends no string
        ('["\\"' + "[" * 50 + '"]', False),  # an escaped quote does not end the string
        ("{" * 20, True),
    ],
)
def test_json_depth(text: str, deeper: bool) -> None:
    assert json_depth_exceeds(text) is deeper


def test_frame_size_bound_is_configurable() -> None:
    frame = '{"type":"ping","pad":"' + "x" * 2000 + '"}'
    assert parse_client_frame(frame) == PingFrame()
    with pytest.raises(ProtocolError) as exc:
        parse_client_frame(frame, max_bytes=1024)
    assert exc.value.code == CloseCode.MESSAGE_TOO_BIG
    with pytest.raises(ProtocolError):
        ServerSessionProtocol(max_bytes=1024).receive(frame)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=30,
    )
    | st.text()
)
def test_parse_raises_only_protocol_errors(value: object) -> None:
    candidates = [value if isinstance(value, str) else json.dumps(value)]
    if isinstance(value, dict):
        candidates.append(json.dumps({**value, "type": "connect", "token": "t"}))
        candidates.append(json.dumps({"type": "connect", "token": "t", "since": value}))
    if isinstance(value, str):
        candidates.append(json.dumps({"type": "connect", "token": "t", "since": value}))
        candidates.append(json.dumps({"type": "connect", "token": value}))
    errors: list[ProtocolError] = []
    for data in candidates:
        try:
            parse_client_frame(data)
        except ProtocolError as exc:  # anything else fails the test
            errors.append(exc)
    allowed = {CloseCode.PROTOCOL_ERROR, CloseCode.BAD_TOKEN, CloseCode.MESSAGE_TOO_BIG}
    assert all(e.code in allowed and len(e.reason.encode()) <= 123 for e in errors)


def test_state_machine_requires_connect_first() -> None:
    proto = ServerSessionProtocol()
    with pytest.raises(ProtocolError):
        proto.receive('{"type":"ping"}')
    assert proto.state is SessionState.CLOSED
    with pytest.raises(ProtocolError):
        proto.receive('{"type":"connect","token":"t"}')


def test_state_machine_open_then_second_connect_fails() -> None:
    proto = ServerSessionProtocol()
    assert isinstance(proto.receive('{"type":"connect","token":"t"}'), ConnectFrame)
    assert proto.state is SessionState.OPEN
    assert proto.receive('{"type":"ping"}') == PingFrame()
    with pytest.raises(ProtocolError):
        proto.receive('{"type":"connect","token":"t"}')
    assert proto.state is SessionState.CLOSED


# ------------------------------------------------------------------ server frames


def test_connected_frame_fields() -> None:
    frame = json.loads(
        connected_frame(
            session="s1", offset=Offset("e", 3), unread_count=2, recovered=True, missed=1
        )
    )
    assert frame == {
        "type": "connected",
        "session": "s1",
        "offset": "e:3",
        "unread_count": 2,
        "recovered": True,
        "missed": 1,
    }


def test_notification_template_renders_valid_json_with_untrusted_text() -> None:
    payload = {"notification_id": "n1", "title": '<img src=x onerror="alert(1)">\n"quoted"'}
    frame = json.loads(
        notification_template("notification.created", payload).render(Offset("e", 9), 4)
    )
    assert frame == {
        "type": "notification.created",
        "offset": "e:9",
        "unread_count": 4,
        "notification": payload,
    }


@pytest.mark.parametrize("action", ["read", "unread", "deleted", "all_read"])
def test_inbox_templates(action: str) -> None:
    frame = json.loads(
        inbox_template(action, ["a", "b"], "2026-01-01T00:00:00+00:00").render(Offset("e", 1), 0)
    )
    expected_type = "notifications.all_read" if action == "all_read" else f"notification.{action}"
    assert frame["type"] == expected_type
    assert frame["offset"] == "e:1"
    assert frame["unread_count"] == 0
    assert ("notification_ids" in frame) is (action != "all_read")


def test_unread_count_frame() -> None:
    assert json.loads(unread_count_frame(offset=Offset("e", 2), unread_count=5)) == {
        "type": "unread_count",
        "offset": "e:2",
        "unread_count": 5,
    }


def test_unknown_inbox_action_is_refused() -> None:
    with pytest.raises(KeyError):
        inbox_template("archived", [], "2026-01-01T00:00:00+00:00")


# ------------------------------------------------------------------ wire messages


def test_wire_round_trip() -> None:
    msg = WireMessage("e1", 7, "n", "n%20x", 3, 1700000000123, b'{"type":"x"}\n{"more":1}')
    assert decode_wire(encode_wire(msg)) == msg
    assert msg.offset == Offset("e1", 7)


@pytest.mark.parametrize("bad", [b"", b"e1 7 n\n{}", b"e1 7 n x 1 2", b"e1 x n - 0 1\n{}"])
def test_wire_rejects_malformed(bad: bytes) -> None:
    with pytest.raises(ValueError, match=r"malformed|invalid literal"):
        decode_wire(bad)


# ------------------------------------------------------------------ recovery


def test_fresh_client_is_not_recovered_and_starts_at_top() -> None:
    r = decide_recovery(None, epoch="e", top_seq=10, first_seq=1)
    assert (r.recovered, r.replay_from, r.start_after) == (False, None, 10)


def test_up_to_date_client_is_recovered_without_replay() -> None:
    r = decide_recovery(Offset("e", 10), epoch="e", top_seq=10, first_seq=1)
    assert (r.recovered, r.replay_from, r.start_after) == (True, None, 10)


def test_missed_messages_in_history_are_replayed() -> None:
    r = decide_recovery(Offset("e", 4), epoch="e", top_seq=10, first_seq=3)
    assert (r.recovered, r.replay_from, r.start_after) == (True, 5, 4)


def test_boundary_first_retained_is_next_needed() -> None:
    r = decide_recovery(Offset("e", 4), epoch="e", top_seq=10, first_seq=5)
    assert r.recovered is True
    assert r.replay_from == 5


@pytest.mark.parametrize(
    ("since", "first_seq"),
    [
        (Offset("old", 4), 1),  # epoch changed: history was reset
        (Offset("e", 3), 5),  # seq 4 was trimmed
        (Offset("e", 3), None),  # history expired entirely
        (Offset("e", 11), 1),  # ahead of the stream: cannot be trusted
    ],
)
def test_unrecoverable_offsets(since: Offset, first_seq: int | None) -> None:
    r = decide_recovery(since, epoch="e", top_seq=10, first_seq=first_seq)
    assert (r.recovered, r.replay_from, r.start_after) == (False, None, 10)


def test_replay_completeness() -> None:
    assert replay_is_complete(4, [5, 6, 7])
    assert replay_is_complete(4, [])
    assert not replay_is_complete(4, [6, 7])
    assert not replay_is_complete(4, [5, 7])


# ------------------------------------------------------------------ live stream


def test_live_decisions() -> None:
    assert (
        decide_live(epoch="e", last_sent=5, msg_epoch="e", msg_seq=6).action is LiveAction.DELIVER
    )
    assert decide_live(epoch="e", last_sent=5, msg_epoch="e", msg_seq=5).action is LiveAction.SKIP
    assert decide_live(epoch="e", last_sent=5, msg_epoch="e", msg_seq=2).action is LiveAction.SKIP
    gap = decide_live(epoch="e", last_sent=5, msg_epoch="e", msg_seq=9)
    assert (gap.action, gap.gap_from, gap.gap_to) == (LiveAction.FILL_GAP, 6, 8)
    assert decide_live(epoch="e", last_sent=5, msg_epoch="f", msg_seq=1).action is LiveAction.RESYNC


@given(
    st.integers(0, 50),
    st.lists(st.integers(1, 60), max_size=80),
)
def test_live_stream_never_duplicates_or_reorders(start: int, arrivals: list[int]) -> None:
    """Whatever pub/sub delivers (lost, repeated, reordered), a session writes each seq once,
    in increasing consecutive order, gaps filled from a complete history."""
    last = start
    written: list[int] = []
    for seq in arrivals:
        d = decide_live(epoch="e", last_sent=last, msg_epoch="e", msg_seq=seq)
        if d.action is LiveAction.FILL_GAP:
            written.extend(range(d.gap_from, d.gap_to + 1))
            written.append(seq)
            last = seq
        elif d.action is LiveAction.DELIVER:
            written.append(seq)
            last = seq
    assert written == list(range(start + 1, last + 1))
