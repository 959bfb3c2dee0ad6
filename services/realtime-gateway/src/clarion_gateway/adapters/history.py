"""Per-user bounded history in Redis: streams, epochs, sequences, dedup and unread counters.

Keys of one user (``P`` = ``<redis_prefix>gw:``; ``{user}`` is a cluster hash tag so
the script's keys share a slot)::

    P{user}:meta   hash  epoch, seq (last assigned), unread     TTL meta_ttl
    P{user}:hist   stream, entry id "<seq>-0", field m = wire   MAXLEN history_size,
                                                                TTL history_ttl
    P{user}:ver    hash  notification_id -> latest version      TTL meta_ttl
    P{user}:read   set   notification ids known to be read      TTL meta_ttl
    P{user}:ev:<event_id>  inbox event dedup marker             TTL meta_ttl
    P{user}:ch     pub/sub channel carrying the same wire messages

Appending is one Lua script (atomic in Redis): dedup, unread counter, next seq,
XADD and PUBLISH happen together or not at all, so a Kafka redelivery is a no-op
and offsets stay consecutive. A missing ``meta`` means the history was lost: the
script starts a new epoch and clears the user's other keys (Centrifugo's
epoch + offset model).
"""

from __future__ import annotations

import json
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from clarion_gateway.adapters.resp import NoScriptError, pack_command, run_packed
from clarion_gateway.domain.entries import StreamEntry
from clarion_gateway.protocol import KIND_NOTIFICATION, FrameTemplate, WireMessage, decode_wire

_KEY_CACHE_SIZE = 4096
"""Users whose encoded key names are kept (the busiest recipients of a batch repeat)."""

_NEW_EPOCH = """
local function new_epoch(epoch)
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0, 'unread', 0)
  return epoch
end
"""

APPEND_LUA = (
    _NEW_EPOCH
    + """
-- KEYS: 1 meta, 2 hist, 3 ver, 4 read, 5 inbox event dedup marker (kind i only)
-- ARGV: 1 kind, 2 dedup id, 3 version, 4 action, 5 unread (inbox), 6 ids (JSON, inbox),
--       7 ts_ms, 8 head, 9 tail, 10 candidate epoch, 11 header id
-- @MAXLEN@, @HISTORY_TTL@, @META_TTL@ are the store's settings, written into the
-- source (one script per configuration) so no call carries them.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then epoch = new_epoch(ARGV[10]) end
local meta_ttl = @META_TTL@
local kind = ARGV[1]
local unread
if kind == 'n' then
  local ver = tonumber(ARGV[3])
  local prev = redis.call('HGET', KEYS[3], ARGV[2])
  if prev and tonumber(prev) >= ver then
    return {0, epoch, tonumber(redis.call('HGET', KEYS[1], 'unread'))}
  end
  redis.call('HSET', KEYS[3], ARGV[2], ver)
  redis.call('EXPIRE', KEYS[3], meta_ttl)
  -- A notification seen for the first time is unread whatever its version (a version
  -- can be skipped: the aggregator re-publishes only the current one after a failed
  -- produce), unless its read event came first (the topics are not ordered with each
  -- other; ingest-api's count in that event already covers it). A newer version of a
  -- read notification is unread again.
  local reopened
  if not prev then
    reopened = redis.call('SISMEMBER', KEYS[4], ARGV[2]) == 0
  else
    reopened = redis.call('SREM', KEYS[4], ARGV[2]) == 1
  end
  if reopened then
    unread = redis.call('HINCRBY', KEYS[1], 'unread', 1)
  else
    unread = tonumber(redis.call('HGET', KEYS[1], 'unread'))
  end
else
  if not redis.call('SET', KEYS[5], '1', 'NX', 'EX', meta_ttl) then
    return {0, epoch, tonumber(redis.call('HGET', KEYS[1], 'unread'))}
  end
  local action = ARGV[4]
  local ids = cjson.decode(ARGV[6])
  if action == 'read' then
    for _, id in ipairs(ids) do redis.call('SADD', KEYS[4], id) end
  elseif action == 'unread' or action == 'deleted' then
    for _, id in ipairs(ids) do redis.call('SREM', KEYS[4], id) end
  elseif action == 'all_read' then
    for _, id in ipairs(redis.call('HKEYS', KEYS[3])) do redis.call('SADD', KEYS[4], id) end
  end
  if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('EXPIRE', KEYS[4], meta_ttl) end
  unread = tonumber(ARGV[5])
  redis.call('HSET', KEYS[1], 'unread', unread)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('EXPIRE', KEYS[1], meta_ttl)
local frame = ARGV[8] .. epoch .. ':' .. seq .. '","unread_count":' .. unread .. ARGV[9]
local ver_field = ARGV[3]
local msg = epoch .. ' ' .. seq .. ' ' .. kind .. ' ' .. ARGV[11] .. ' ' .. ver_field .. ' '
  .. ARGV[7] .. '\\n' .. frame
redis.call('XADD', KEYS[2], 'MAXLEN', @MAXLEN@, seq .. '-0', 'm', msg)
redis.call('EXPIRE', KEYS[2], @HISTORY_TTL@)
-- The channel is not a key: "<P>{user}:meta" minus "meta" plus "ch".
redis.call('PUBLISH', string.sub(KEYS[1], 1, -5) .. 'ch', msg)
return {seq, epoch, unread}
"""
)

STATE_LUA = (
    _NEW_EPOCH
    + """
-- KEYS: 1 meta, 2 hist, 3 ver, 4 read; ARGV: 1 candidate epoch, 2 meta ttl
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  new_epoch(ARGV[1])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'unread')
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local first_seq = -1
if #first > 0 then first_seq = tonumber(string.match(first[1][1], '^(%d+)-')) end
return {m[1], tonumber(m[2]), tonumber(m[3]), first_seq}
"""
)


@dataclass(frozen=True, slots=True)
class StreamState:
    """A user's stream as seen at one instant.

    ``top_seq`` is the last assigned seq, ``first_seq`` the oldest one still in the
    history (``None``: empty), ``unread`` the gateway's unread counter.
    """

    epoch: str
    top_seq: int
    unread: int
    first_seq: int | None


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Outcome of one append: ``seq`` 0 means the entry was a duplicate and nothing changed."""

    seq: int
    epoch: str
    unread: int

    @property
    def duplicate(self) -> bool:
        """True when the entry had already been appended."""
        return self.seq == 0


def new_epoch_id() -> str:
    """A fresh random epoch (8 hex characters)."""
    return secrets.token_hex(4)


class HistoryStore:
    """Reads and appends users' streams in Redis.

    Args:
        redis: a ``redis.asyncio.Redis`` client (``decode_responses=False``).
        prefix: key prefix (``<redis_prefix>gw:``).
        history_size: MAXLEN of each stream (exact trimming).
        history_ttl: seconds a stream lives after its last entry.
        meta_ttl: seconds epoch/seq/unread/dedup keys live after the last entry.
    """

    def __init__(
        self, redis: Redis, prefix: str, *, history_size: int, history_ttl: int, meta_ttl: int
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.meta_ttl = meta_ttl
        self._append = redis.register_script(
            APPEND_LUA.replace("@MAXLEN@", str(int(history_size)))
            .replace("@HISTORY_TTL@", str(int(history_ttl)))
            .replace("@META_TTL@", str(int(meta_ttl)))
        )
        self._state = redis.register_script(STATE_LUA)
        self._user_keys: OrderedDict[str, tuple[bytes, bytes, bytes, bytes]] = OrderedDict()

    def _key(self, user_id: str, name: str) -> str:
        return f"{self.prefix}{{{user_id}}}:{name}"

    def channel(self, user_id: str) -> str:
        """The user's pub/sub channel."""
        return self._key(user_id, "ch")

    def user_keys(self, user_id: str) -> list[str]:
        """meta, hist, ver, read keys of a user (for scripts and for tests that reset them)."""
        return [self._key(user_id, n) for n in ("meta", "hist", "ver", "read")]

    def _encoded_keys(self, user_id: str) -> tuple[bytes, bytes, bytes, bytes]:
        keys = self._user_keys.get(user_id)
        if keys is None:
            meta, hist, ver, read = self.user_keys(user_id)
            keys = (meta.encode(), hist.encode(), ver.encode(), read.encode())
            self._user_keys[user_id] = keys
            if len(self._user_keys) > _KEY_CACHE_SIZE:
                self._user_keys.popitem(last=False)
        return keys

    def _pack_appends(self, sha: bytes, entries: Sequence[StreamEntry]) -> bytes:
        out: list[bytes] = []
        for entry in entries:
            meta, hist, ver, read = self._encoded_keys(entry.user_id)
            if entry.kind == KIND_NOTIFICATION:
                # KEYS[5] and the ids are only read for inbox events.
                marker: Any = meta
                ids = "[]"
                unread = 0
            else:
                marker = self._key(entry.user_id, f"ev:{entry.dedup_id}")
                ids = json.dumps(list(entry.notification_ids))
                unread = entry.unread_count if entry.unread_count is not None else 0
            pack_command(
                (
                    b"EVALSHA",
                    sha,
                    5,
                    meta,
                    hist,
                    ver,
                    read,
                    marker,
                    entry.kind,
                    entry.dedup_id,
                    entry.version,
                    entry.action,
                    unread,
                    ids,
                    entry.ts_ms,
                    entry.template.head,
                    entry.template.tail,
                    new_epoch_id(),
                    entry.header_id,
                ),
                out,
            )
        return b"".join(out)

    async def append(self, entry: StreamEntry) -> AppendResult:
        """Append one entry atomically (dedup, seq, XADD, PUBLISH).

        Raises:
            redis.RedisError: Redis unreachable or the script failed; nothing was applied.
        """
        return (await self.append_many([entry]))[0]

    async def append_many(self, entries: Sequence[StreamEntry]) -> list[AppendResult]:
        """Append entries in order in one pipelined write (each one atomic).

        One ``EVALSHA`` per entry, packed by :mod:`clarion_gateway.adapters.resp`.
        When Redis answers ``NOSCRIPT`` (script cache flushed, server restarted) the
        script is loaded and only the refused entries are sent again, in order:
        pipelined commands are independent, so an entry Redis ran is not repeated.

        Raises:
            redis.RedisError: Redis unreachable, or a script call failed (the first
                failure; the other entries were applied).
        """
        if not entries:
            return []
        replies = await self._append_pipelined(entries)
        refused = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if refused:
            self._append.sha = await self.redis.script_load(self._append.script)
            again = await self._append_pipelined([entries[i] for i in refused])
            for i, reply in zip(refused, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [AppendResult(int(r[0]), _text(r[1]), int(r[2])) for r in replies]

    async def _append_pipelined(self, entries: Sequence[StreamEntry]) -> list[Any]:
        sha = self._append.sha
        payload = self._pack_appends(sha.encode() if isinstance(sha, str) else sha, entries)
        return await run_packed(self.redis, payload, len(entries))

    async def state(self, user_id: str) -> StreamState:
        """The user's epoch, top seq, unread counter and oldest retained seq.

        Starts a new epoch when the user has none (first contact or lost data).
        """
        raw = await self._state(keys=self.user_keys(user_id), args=[new_epoch_id(), self.meta_ttl])
        first = int(raw[3])
        return StreamState(
            epoch=_text(raw[0]),
            top_seq=int(raw[1]),
            unread=int(raw[2]),
            first_seq=None if first < 0 else first,
        )

    async def read(
        self, user_id: str, from_seq: int, to_seq: int | None = None
    ) -> list[WireMessage]:
        """Entries with ``from_seq <= seq <= to_seq`` (``None``: to the end), oldest first."""
        end = "+" if to_seq is None else f"{to_seq}-0"
        rows: Any = await self.redis.xrange(self._key(user_id, "hist"), f"{from_seq}-0", end)
        return [decode_wire(fields[b"m"]) for _id, fields in rows]

    async def reset(self, user_id: str) -> None:
        """Forget a user's stream (what a Redis data loss does; used by operators and tests)."""
        await self.redis.delete(*self.user_keys(user_id))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__ = [
    "AppendResult",
    "FrameTemplate",
    "HistoryStore",
    "StreamState",
    "new_epoch_id",
]
