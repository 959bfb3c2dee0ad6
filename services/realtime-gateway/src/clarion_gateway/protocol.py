"""The Clarion gateway protocol, without I/O.

Everything here is pure: parsing and validating client frames, building server
frames, the ``epoch:seq`` offset of a user's stream, the recovery decision made
when a client reconnects with its last offset, and the gap/duplicate decision
made for every live message. The split follows python-websockets' sans-I/O
design (the protocol state lives apart from sockets and event loops) so it can
be unit-tested exhaustively; ``docs/gateway-protocol.md`` is its specification.

Wire message
    What the gateway stores in a user's history (a Redis stream entry) and
    publishes on the user's Redis channel: one header line then the server frame,
    ``"<epoch> <seq> <kind> <notification_id> <version> <ts_ms>\\n<frame JSON>"``.
    ``kind`` is ``n`` (a notification version) or ``i`` (an inbox event);
    ``notification_id``/``version`` are ``-``/``0`` for inbox events; ``ts_ms`` is
    the notification's ``updated_at`` (or the inbox event's ``occurred_at``) in
    Unix milliseconds. The frame JSON already carries its ``offset`` so every
    instance forwards the bytes unchanged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, Final

# --------------------------------------------------------------------------- close codes


class CloseCode(IntEnum):
    """WebSocket close codes the gateway uses (RFC 6455 §7.4; 4000-4999 are private use)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    BAD_TOKEN = 4001
    CONNECT_TIMEOUT = 4002
    PROTOCOL_ERROR = 4003
    IDLE_TIMEOUT = 4004
    SLOW_CONSUMER = 4008
    RESYNC = 4009


CLOSE_REASONS: Final[dict[CloseCode, str]] = {
    CloseCode.NORMAL: "bye",
    CloseCode.GOING_AWAY: "gateway shutting down",
    CloseCode.POLICY_VIOLATION: "policy violation",
    CloseCode.MESSAGE_TOO_BIG: "frame too large",
    CloseCode.INTERNAL_ERROR: "internal error",
    CloseCode.TRY_AGAIN_LATER: "history store unavailable",
    CloseCode.BAD_TOKEN: "invalid or expired token",
    CloseCode.CONNECT_TIMEOUT: "no connect frame in time",
    CloseCode.PROTOCOL_ERROR: "protocol error",
    CloseCode.IDLE_TIMEOUT: "idle timeout",
    CloseCode.SLOW_CONSUMER: "slow consumer",
    CloseCode.RESYNC: "history reset, reconnect and refetch",
}
"""Default close reason per code (a reason is at most 123 UTF-8 bytes, RFC 6455 §5.5)."""


class ProtocolError(Exception):
    """A client frame broke the protocol; close the connection with ``code`` and ``reason``."""

    def __init__(self, reason: str, code: CloseCode = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason[:120]


# --------------------------------------------------------------------------- offsets


@dataclass(frozen=True, slots=True, order=True)
class Offset:
    """A position in one user's stream: ``epoch`` names the history generation, ``seq`` counts.

    ``seq`` is consecutive per user within an epoch, starting at 1 (0 means "before
    the first message"). A new epoch means the history was lost (Redis restarted or
    evicted the user's keys) and sequence numbers restarted, as in Centrifugo's
    epoch + offset stream positions. Text form: ``"<epoch>:<seq>"``.
    """

    epoch: str
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.seq}"

    @classmethod
    def parse(cls, value: object) -> Offset:
        """Parse ``"<epoch>:<seq>"`` or ``{"epoch": str, "seq": int}``.

        Raises:
            ProtocolError: malformed offset (close code 4003).
        """
        if isinstance(value, dict):
            epoch, seq = value.get("epoch"), value.get("seq")
        elif isinstance(value, str) and value.count(":") == 1:
            epoch, _, raw = value.partition(":")
            # ASCII digits only: str.isdigit() accepts '²' or '٣', which int() refuses,
            # and the length bound keeps int() away from its digit limit.
            seq = int(raw) if 0 < len(raw) <= 19 and raw.isascii() and raw.isdigit() else None
        else:
            raise ProtocolError("offset must be 'epoch:seq'")
        if not isinstance(epoch, str) or not is_valid_epoch(epoch):
            raise ProtocolError("offset has an invalid epoch")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
            raise ProtocolError("offset has an invalid seq")
        return cls(epoch, seq)


MAX_SEQ: Final = 2**63 - 1
"""Largest seq an offset may name (a signed 64-bit integer, as Redis stream ids hold)."""

_EPOCH_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def is_valid_epoch(epoch: str) -> bool:
    """An epoch is 1-32 characters from ``[A-Za-z0-9_-]`` (ASCII only)."""
    return 0 < len(epoch) <= 32 and all(c in _EPOCH_CHARS for c in epoch)


# --------------------------------------------------------------------------- client frames

MAX_CLIENT_FRAME_BYTES: Final = 16 * 1024
"""Largest client frame accepted in UTF-8 bytes (a connect frame with a JWT fits easily);
a larger one closes the connection with 1009, as the WebSocket layer does (its ``max_size``)."""

MAX_JSON_DEPTH: Final = 8
"""Deepest nesting of arrays/objects accepted in a client frame (valid frames need 2)."""

_JSON_TOKENS: Final = re.compile(r'[\\"\[\]{}]')


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON ``text`` nests arrays/objects deeper than ``limit`` (RFC 8259).

    A linear scan that skips string contents and stops at the first level over
    ``limit``, so a frame of thousands of ``[`` costs next to nothing instead of
    driving the JSON decoder's recursion into ``RecursionError``. Malformed text
    is scanned as well as it can be; the decoder rejects it afterwards.
    """
    depth = 0
    in_string = False
    skip_to = -1
    for match in _JSON_TOKENS.finditer(text):
        pos = match.start()
        if pos < skip_to:
            continue  # the character escaped by a backslash
        char = match.group()
        if in_string:
            if char == "\\":
                skip_to = pos + 2
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


@dataclass(frozen=True, slots=True)
class ConnectFrame:
    """``{"type": "connect", "token": JWT, "since": "<epoch>:<seq>" | null}``."""

    token: str
    since: Offset | None


@dataclass(frozen=True, slots=True)
class PingFrame:
    """``{"type": "ping"}``: application keepalive for clients that cannot send WebSocket pings."""


@dataclass(frozen=True, slots=True)
class UnreadCountRequest:
    """``{"type": "get_unread_count"}``: ask for an ``unread_count`` frame."""


ClientFrame = ConnectFrame | PingFrame | UnreadCountRequest


def parse_client_frame(data: str | bytes, max_bytes: int = MAX_CLIENT_FRAME_BYTES) -> ClientFrame:
    """Parse and validate one client frame (a text message holding a JSON object, RFC 8259).

    Args:
        data: the message as received (``bytes`` for a binary frame).
        max_bytes: the largest frame accepted, in UTF-8 bytes.

    Raises:
        ProtocolError: with code 1009 when larger than ``max_bytes``; 4001 when
            ``connect`` has no usable token (absent, empty, not printable ASCII);
            4003 for everything else: binary, not JSON, nested deeper than
            :data:`MAX_JSON_DEPTH`, not an object, unknown ``type``, bad ``since``.
            Never anything but ``ProtocolError``, whatever ``data`` holds.
    """
    if isinstance(data, bytes):
        raise ProtocolError("binary frames are not accepted")
    # A character is 1 to 4 UTF-8 bytes: encode only when the length leaves a doubt.
    size = len(data)
    if size > max_bytes or (
        size * 4 > max_bytes and len(data.encode("utf-8", "surrogatepass")) > max_bytes
    ):
        raise ProtocolError("frame too large", CloseCode.MESSAGE_TOO_BIG)
    if json_depth_exceeds(data):
        raise ProtocolError("frame nested too deeply")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise ProtocolError("frame is not JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("frame is not a JSON object")
    kind = obj.get("type")
    if kind == "connect":
        token = obj.get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolError("connect needs a token", CloseCode.BAD_TOKEN)
        # A JWT is base64url segments joined by dots (RFC 7519); anything else cannot
        # verify, and refusing it here keeps odd code points away from the verifier.
        if not (token.isascii() and token.isprintable()):
            raise ProtocolError("malformed", CloseCode.BAD_TOKEN)
        since = obj.get("since")
        return ConnectFrame(token=token, since=None if since is None else Offset.parse(since))
    if kind == "ping":
        return PingFrame()
    if kind == "get_unread_count":
        return UnreadCountRequest()
    raise ProtocolError("unknown frame type")


class SessionState(Enum):
    """Where a connection is in the protocol."""

    AWAITING_CONNECT = "awaiting_connect"
    OPEN = "open"
    CLOSED = "closed"


class ServerSessionProtocol:
    """The per-connection protocol state machine (no I/O).

    Feed it every text message with :meth:`receive`; it answers what the connection
    must do. The first frame must be ``connect``; a second ``connect`` or any frame
    before it is a protocol error.
    """

    __slots__ = ("max_bytes", "state")

    def __init__(self, max_bytes: int = MAX_CLIENT_FRAME_BYTES) -> None:
        self.state = SessionState.AWAITING_CONNECT
        self.max_bytes = max_bytes

    def receive(self, data: str | bytes) -> ClientFrame:
        """Validate ``data`` against the current state.

        Returns:
            the parsed frame; the state moves to OPEN after a valid ``connect``.

        Raises:
            ProtocolError: the frame is malformed or not allowed now; the state
                becomes CLOSED.
        """
        try:
            frame = parse_client_frame(data, self.max_bytes)
            if self.state is SessionState.AWAITING_CONNECT and not isinstance(frame, ConnectFrame):
                raise ProtocolError("first frame must be connect")
            if self.state is SessionState.OPEN and isinstance(frame, ConnectFrame):
                raise ProtocolError("already connected")
            if self.state is SessionState.CLOSED:
                raise ProtocolError("connection is closed")
        except ProtocolError:
            self.state = SessionState.CLOSED
            raise
        if isinstance(frame, ConnectFrame):
            self.state = SessionState.OPEN
        return frame


# --------------------------------------------------------------------------- server frames

NOTIFICATION_CREATED: Final = "notification.created"
NOTIFICATION_UPDATED: Final = "notification.updated"
INBOX_FRAME_TYPES: Final[dict[str, str]] = {
    "read": "notification.read",
    "unread": "notification.unread",
    "deleted": "notification.deleted",
    "all_read": "notifications.all_read",
}
"""Inbox action (``InboxEvent.action``) → server frame type."""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def connected_frame(
    *, session: str, offset: Offset, unread_count: int, recovered: bool, missed: int
) -> str:
    """The answer to a valid ``connect``.

    ``offset`` is where the live stream continues (the client's offset after the
    replayed frames when ``recovered`` is true, else the stream's current top);
    ``missed`` is how many frames follow as replay.
    """
    return _dumps(
        {
            "type": "connected",
            "session": session,
            "offset": str(offset),
            "unread_count": unread_count,
            "recovered": recovered,
            "missed": missed,
        }
    )


def unread_count_frame(*, offset: Offset, unread_count: int) -> str:
    """``{"type": "unread_count", "unread_count": N, "offset": ...}``: the current count."""
    return _dumps({"type": "unread_count", "offset": str(offset), "unread_count": unread_count})


def pong_frame() -> str:
    """The answer to a client ``ping``."""
    return '{"type":"pong"}'


@dataclass(frozen=True, slots=True)
class FrameTemplate:
    """A stream frame split around its offset and unread count, completed atomically in Redis.

    The full frame is ``head + "<epoch>:<seq>" + mid + "<unread>" + tail``; the
    history script fills the offset and the count it assigns in the same step.
    """

    head: str
    tail: str

    MID: Final = '","unread_count":'

    def render(self, offset: Offset, unread_count: int) -> str:
        """The frame as the history script produces it (used by tests and the benchmark)."""
        return f"{self.head}{offset}{self.MID}{unread_count}{self.tail}"


def notification_template(frame_type: str, notification: dict[str, Any] | str) -> FrameTemplate:
    """Template of ``notification.created`` / ``notification.updated``.

    ``notification`` is the ``Notification`` contract either as compact JSON text
    (``model_dump_json()``, serialised once by pydantic-core: the live path) or as a
    JSON-ready dict (``model_dump(mode="json")``); both give the same object. Its
    text stays data, the client renders it as text.
    """
    body = notification if isinstance(notification, str) else _dumps(notification)
    return FrameTemplate(
        head=f'{{"type":"{frame_type}","offset":"',
        tail=f',"notification":{body}}}',
    )


def inbox_template(action: str, notification_ids: list[str], occurred_at: str) -> FrameTemplate:
    """Template of the read-state frames (``notification.read`` ... ``notifications.all_read``).

    Raises:
        ValueError: unknown action.
    """
    frame_type = INBOX_FRAME_TYPES[action]
    body: dict[str, Any] = {"occurred_at": occurred_at}
    if action != "all_read":
        body["notification_ids"] = notification_ids
    return FrameTemplate(head=f'{{"type":"{frame_type}","offset":"', tail=f",{_dumps(body)[1:]}")


# --------------------------------------------------------------------------- wire messages

KIND_NOTIFICATION: Final = "n"
KIND_INBOX: Final = "i"


@dataclass(frozen=True, slots=True)
class WireMessage:
    """One entry of a user's stream as stored and published (see the module docstring)."""

    epoch: str
    seq: int
    kind: str
    notification_id: str
    version: int
    ts_ms: int
    frame: bytes

    @property
    def offset(self) -> Offset:
        """This message's stream position."""
        return Offset(self.epoch, self.seq)


def encode_wire(msg: WireMessage) -> bytes:
    """Serialise ``msg`` (the history script builds the same bytes in Lua)."""
    header = f"{msg.epoch} {msg.seq} {msg.kind} {msg.notification_id} {msg.version} {msg.ts_ms}\n"
    return header.encode() + msg.frame


def decode_wire(data: bytes) -> WireMessage:
    """Parse a stored or published message.

    Raises:
        ValueError: malformed header.
    """
    header, sep, frame = data.partition(b"\n")
    parts = header.split(b" ")
    if not sep or len(parts) != 6:
        raise ValueError("malformed wire message")
    epoch, seq, kind, nid, version, ts_ms = parts
    return WireMessage(
        epoch=epoch.decode(),
        seq=int(seq),
        kind=kind.decode(),
        notification_id=nid.decode(),
        version=int(version),
        ts_ms=int(ts_ms),
        frame=frame,
    )


# --------------------------------------------------------------------------- recovery


@dataclass(frozen=True, slots=True)
class Recovery:
    """What to do for a connecting client.

    Attributes:
        recovered: true when the client's state plus the replay is complete.
        replay_from: first seq to replay (``None``: nothing to replay).
        start_after: the seq the session has delivered before the live stream
            starts (live messages at or below it are skipped).
    """

    recovered: bool
    replay_from: int | None
    start_after: int


def decide_recovery(
    since: Offset | None, *, epoch: str, top_seq: int, first_seq: int | None
) -> Recovery:
    """Decide whether a reconnecting client can be served from the history.

    Args:
        since: the last offset the client saw (``None``: a fresh client).
        epoch: the user's current stream epoch.
        top_seq: the last seq assigned in that epoch (0: none yet).
        first_seq: the oldest seq still in the history (``None``: history empty).

    A client is recovered when its epoch is current and every seq after its
    offset is still in the history (or it missed nothing). Otherwise it must
    refetch its inbox (``recovered=False``) and continues live from ``top_seq``.
    """
    fresh = Recovery(recovered=False, replay_from=None, start_after=top_seq)
    if since is None or since.epoch != epoch or since.seq > top_seq:
        return fresh
    if since.seq == top_seq:
        return Recovery(recovered=True, replay_from=None, start_after=top_seq)
    if first_seq is None or first_seq > since.seq + 1:
        return fresh
    return Recovery(recovered=True, replay_from=since.seq + 1, start_after=since.seq)


def replay_is_complete(start_after: int, seqs: list[int]) -> bool:
    """True when ``seqs`` are exactly ``start_after+1, start_after+2, ...`` (no hole)."""
    return all(seq == start_after + i for i, seq in enumerate(seqs, start=1))


# --------------------------------------------------------------------------- live stream


class LiveAction(Enum):
    """What to do with a live message for one session."""

    DELIVER = "deliver"
    SKIP = "skip"
    FILL_GAP = "fill_gap"
    RESYNC = "resync"


@dataclass(frozen=True, slots=True)
class LiveDecision:
    """The action and, for ``FILL_GAP``, the missing seq range ``[gap_from, gap_to]``."""

    action: LiveAction
    gap_from: int = 0
    gap_to: int = 0


_DELIVER: Final = LiveDecision(LiveAction.DELIVER)
_SKIP: Final = LiveDecision(LiveAction.SKIP)
_RESYNC: Final = LiveDecision(LiveAction.RESYNC)


def decide_live(*, epoch: str, last_sent: int, msg_epoch: str, msg_seq: int) -> LiveDecision:
    """Gap and duplicate detection for one live message of a session.

    Redis pub/sub is at-most-once and the recovery seam overlaps the history, so a
    message may arrive twice (``msg_seq <= last_sent``: skip) or after a loss
    (``msg_seq > last_sent + 1``: fill ``[last_sent+1, msg_seq-1]`` from the
    history first). A different epoch means the history was reset: the client
    must reconnect and refetch.
    """
    if msg_epoch != epoch:
        return _RESYNC
    if msg_seq <= last_sent:
        return _SKIP
    if msg_seq == last_sent + 1:
        return _DELIVER
    return LiveDecision(LiveAction.FILL_GAP, gap_from=last_sent + 1, gap_to=msg_seq - 1)
