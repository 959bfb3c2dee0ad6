"""The aggregator's Redis state: aggregation groups, dedup, users, presence and digests.

Keys (``P`` = ``settings.redis_prefix`` + ``"agg:"``):

| key | type | holds |
| --- | --- | --- |
| ``P open:<recipient>|<type>|<object ref>`` | string | id of the open group (windowed rules only) |
| ``P n:<notification id>`` | hash | the group: version, actors, event ids, times, context |
| ``P na:<notification id>`` | set | distinct actor ids (``actor_count`` = SCARD) |
| ``P seen:<recipient>:<event id>`` | string | the notification an event went into (dedup) |
| ``P prefs:<user>`` | string | ``Preferences`` JSON |
| ``P prof:<user>`` | hash | ``name``, ``locale``, ``tz``, ``segments`` (JSON) |
| ``P users`` / ``P seg:<segment>`` | set | known users / members of a segment |
| ``P presence:<user>`` | hash | gateway instance id -> live sessions (online when non-empty) |
| ``P digest:due`` | sorted set | ``<recipient>|<period key>`` scored by due time (epoch ms) |
| ``P digest:<recipient>|<period key>`` | hash | notification id -> ``EmailItem`` JSON |
| ``P state`` | hash | state marker: ``epoch`` (random), ``built_ms`` (see :mod:`.rebuild_store`) |
| ``P state:lock`` | string | token of the instance rebuilding the state |

A digest hash also keeps ``~period`` -> ``"<start ms> <due ms>"``.

Group state changes only inside the Lua script :data:`AGGREGATE_LUA` (Redis runs
a script alone), so concurrent aggregator instances cannot interleave inside a
group update. The scripts build their key names from the prefix and ids they are
given (a batch of pairs per call, far cheaper than one call per pair), so they
need a single Redis server (or a Redis Cluster proxy), not a sharded cluster.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from clarion_aggregator.domain.grouping import MAX_EVENT_IDS, Outcome
from clarion_contracts.v1 import Preferences, PresenceEvent, PresenceStatus, UserProfile
from clarion_kit.redis import evalsha_many

AGGREGATE_LUA = """
-- ARGV[1] key prefix; ARGV[2] JSON array of inputs, applied in order, each
--   {r: recipient, t: type, o: object ref, e: event id, at: occurred ms (string),
--    w: window ms, a: [actor id, name, avatar|null], c: candidate notification id,
--    now: wall ms (string), ma: max actors, me: max event ids, ttl: seconds,
--    ctx: context JSON (string), al: 1 when this version wants an alert, th: throttle ms}
-- Returns a JSON array of {o: outcome, n: id, s: {stored fields}, k: actor count};
-- s is empty when a duplicate's group already expired, and holds ctx only for duplicates.
-- ARGV[3] the state epoch the caller knows ('' : any).
-- Refuses (error CLARION_STATE_LOST) when the state marker is missing (Redis lost the
-- groups and dedup keys; aggregating on empty state would fork groups and make
-- redeliveries look new) or names another epoch (the state was rebuilt since the
-- caller last looked: the rest of its batch must not run on it before the caller
-- retries the whole batch in order). See clarion_aggregator.handlers.rebuild.
local prefix = ARGV[1]
local epoch = redis.call('HGET', prefix .. 'state', 'epoch')
if not epoch or (ARGV[3] ~= '' and epoch ~= ARGV[3]) then
  return redis.error_reply('CLARION_STATE_LOST state marker missing or rebuilt')
end
local items = cjson.decode(ARGV[2])
local out = {}

local function snapshot(outcome, nid)
  local nkey = prefix .. 'n:' .. nid
  local flat = redis.call('HGETALL', nkey)
  local fields = {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  -- the caller holds the context it just sent; only a duplicate needs the stored one
  if outcome ~= 'duplicate' then fields['ctx'] = nil end
  return {o = outcome, n = nid, s = fields, k = redis.call('SCARD', prefix .. 'na:' .. nid)}
end

local function absorb(it)
  local seen_key = prefix .. 'seen:' .. it.r .. ':' .. it.e
  local seen = redis.call('GET', seen_key)
  if seen then return snapshot('duplicate', seen) end
  local open_key = prefix .. 'open:' .. it.r .. '|' .. it.t .. '|' .. it.o
  local occurred = tonumber(it.at)
  local window = tonumber(it.w)
  local ttl = tonumber(it.ttl)
  local nid = nil
  local outcome = 'created'
  if window > 0 then
    local open = redis.call('GET', open_key)
    if open then
      local first = tonumber(redis.call('HGET', prefix .. 'n:' .. open, 'first_ms'))
      if first and occurred < first + window then
        nid = open
        outcome = 'updated'
      end
    end
  end
  local actor_id = it.a[1]
  local nkey
  if nid then
    nkey = prefix .. 'n:' .. nid
    redis.call('HINCRBY', nkey, 'version', 1)
    local kept = {it.a}
    for _, a in ipairs(cjson.decode(redis.call('HGET', nkey, 'actors'))) do
      if #kept >= it.ma then break end
      if a[1] ~= actor_id then kept[#kept + 1] = a end
    end
    local newer = {it.e}
    for _, e in ipairs(cjson.decode(redis.call('HGET', nkey, 'events'))) do
      if #newer >= it.me then break end
      newer[#newer + 1] = e
    end
    redis.call('HSET', nkey, 'actors', cjson.encode(kept), 'events', cjson.encode(newer),
               'updated_ms', it.now, 'ctx', it.ctx)
    if occurred > tonumber(redis.call('HGET', nkey, 'last_ms')) then
      redis.call('HSET', nkey, 'last_ms', it.at)
    end
  else
    nid = it.c
    nkey = prefix .. 'n:' .. nid
    redis.call('HSET', nkey, 'version', 1, 'first_ms', it.at, 'last_ms', it.at,
               'first_event', it.e, 'actors', cjson.encode({it.a}),
               'events', cjson.encode({it.e}), 'created_ms', it.now, 'updated_ms', it.now,
               'ctx', it.ctx)
    if window > 0 then redis.call('SET', open_key, nid, 'EX', ttl) end
  end
  local akey = prefix .. 'na:' .. nid
  redis.call('SADD', akey, actor_id)
  if it.al == 1 then
    local last = tonumber(redis.call('HGET', nkey, 'alert_ms'))
    if (not last) or (tonumber(it.now) - last >= tonumber(it.th)) then
      redis.call('HSET', nkey, 'alert_ms', it.now, 'alert_v', redis.call('HGET', nkey, 'version'))
    end
  end
  redis.call('SET', seen_key, nid, 'EX', ttl)
  redis.call('EXPIRE', nkey, ttl)
  redis.call('EXPIRE', akey, ttl)
  if window > 0 then redis.call('EXPIRE', open_key, ttl) end
  return snapshot(outcome, nid)
end

for i, it in ipairs(items) do out[i] = absorb(it) end
return cjson.encode(out)
"""

CONTEXTS_LUA = """
-- ARGV[1] key prefix, ARGV[2..] user ids. Returns a JSON array, per user:
-- [preferences JSON or false, locale or false, timezone or false, live sessions]
local prefix = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local uid = ARGV[i]
  local prof = redis.call('HMGET', prefix .. 'prof:' .. uid, 'locale', 'tz')
  out[i - 1] = {redis.call('GET', prefix .. 'prefs:' .. uid), prof[1], prof[2],
                redis.call('HLEN', prefix .. 'presence:' .. uid)}
end
return cjson.encode(out)
"""

PROFILE_LUA = """
-- KEYS[1] profile hash, KEYS[2] users set; ARGV: 1 prefix, 2 user, 3 name, 4 locale, 5 tz,
-- 6 segments JSON array
local old = redis.call('HGET', KEYS[1], 'segments')
if old then
  for _, s in ipairs(cjson.decode(old)) do
    redis.call('SREM', ARGV[1] .. 'seg:' .. s, ARGV[2])
  end
end
for _, s in ipairs(cjson.decode(ARGV[6])) do
  redis.call('SADD', ARGV[1] .. 'seg:' .. s, ARGV[2])
end
redis.call('HSET', KEYS[1], 'name', ARGV[3], 'locale', ARGV[4], 'tz', ARGV[5], 'segments', ARGV[6])
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"""

CLAIM_DIGESTS_LUA = """
-- KEYS[1] due zset; ARGV: 1 now ms, 2 lease ms, 3 limit
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local lease = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], lease, m) end
return due
"""

FINISH_DIGEST_LUA = """
-- KEYS[1] due zset, KEYS[2] digest hash; ARGV: 1 member, 2 now ms, then field/value pairs sent
for i = 3, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
if redis.call('HLEN', KEYS[2]) <= 1 then
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 0
"""

DIGEST_ADD_LUA = """
-- ARGV[1] key prefix, ARGV[2] ttl seconds, ARGV[3] JSON array of
-- [member, notification id, item JSON, "start_ms due_ms", due_ms]
local prefix = ARGV[1]
for _, e in ipairs(cjson.decode(ARGV[3])) do
  local hkey = prefix .. 'digest:' .. e[1]
  redis.call('HSET', hkey, e[2], e[3], '~period', e[4])
  redis.call('EXPIRE', hkey, ARGV[2])
  redis.call('ZADD', prefix .. 'digest:due', 'NX', e[5], e[1])
end
return 1
"""

PERIOD_FIELD = "~period"

STATE_LOST_ERROR = "CLARION_STATE_LOST"
"""Prefix of the error the aggregation script answers when the state marker is missing."""


class StateLost(Exception):
    """Redis no longer holds the aggregation state (restart without persistence,
    FLUSHALL, failover to an empty replica): nothing was aggregated; rebuild, then retry."""


@dataclass(frozen=True)
class AggregateInput:
    """One (recipient, event) pair to absorb.

    Attributes:
        recipient_id / event_type / object_ref / event_id: the group and dedup identity.
        occurred_ms: event time, epoch ms.
        window_ms / max_actors: from the rule.
        actor: ``[id, name, avatar_url or null]``.
        candidate_id: the notification id if this event starts a group.
        now_ms: wall time, epoch ms (created/updated times, alert throttle).
        context: JSON of the latest event's object, data, priority, tenant, ingested_at.
        alert_wanted: this version asks for a push or an immediate email.
        throttle_ms: at most one alert per notification per this many ms.
        ttl_seconds: lifetime of group state and dedup keys.
    """

    recipient_id: str
    event_type: str
    object_ref: str
    event_id: str
    occurred_ms: int
    window_ms: int
    max_actors: int
    actor: Sequence[str | None]
    candidate_id: str
    now_ms: int
    context: str
    alert_wanted: bool
    throttle_ms: int
    ttl_seconds: int


@dataclass(frozen=True)
class GroupSnapshot:
    """A group as it is right after (or, for duplicates, before) an event.

    ``alert_version`` is the version whose push/immediate email is due, so a
    version equal to it sends (again, with the same request id, on redelivery).
    """

    outcome: Outcome
    notification_id: str
    version: int
    actor_count: int
    actors: list[list[Any]]
    event_ids: list[str]
    first_occurred_ms: int
    last_occurred_ms: int
    created_ms: int
    updated_ms: int
    context_json: str
    alert_version: int | None

    @property
    def context(self) -> dict[str, Any]:
        """The latest absorbed event's object, data, priority, tenant and ingested_at."""
        return _parse_context(self.context_json)

    @classmethod
    def from_reply(cls, reply: dict[str, Any], sent_context: str) -> GroupSnapshot | None:
        """Parse one element of the script's reply (``None``: a duplicate whose state expired).

        ``sent_context`` is the context JSON of the input, which a created or
        updated group now stores (the script returns the stored one for duplicates).
        """
        raw = reply["s"]
        if not raw or "version" not in raw:
            return None
        return cls(
            outcome=Outcome(reply["o"]),
            notification_id=reply["n"],
            version=int(raw["version"]),
            actor_count=int(reply["k"]),
            actors=orjson.loads(raw["actors"]),
            event_ids=orjson.loads(raw["events"]),
            first_occurred_ms=int(raw["first_ms"]),
            last_occurred_ms=int(raw["last_ms"]),
            created_ms=int(raw["created_ms"]),
            updated_ms=int(raw["updated_ms"]),
            context_json=raw.get("ctx", sent_context),
            alert_version=int(raw["alert_v"]) if "alert_v" in raw else None,
        )


@dataclass(frozen=True)
class UserContext:
    """What the aggregator knows about a recipient (all optional)."""

    prefs: Preferences | None = None
    locale: str | None = None
    timezone: str | None = None
    online: bool = False


@dataclass(frozen=True)
class DigestEntry:
    """One buffered digest item to add: ``item_json`` is an ``EmailItem`` JSON."""

    recipient_id: str
    period_key: str
    period_start_ms: int
    due_ms: int
    notification_id: str
    item_json: str


@dataclass
class ClaimedDigest:
    """A due digest read from Redis: ``items`` maps notification id -> EmailItem JSON."""

    member: str
    recipient_id: str
    period_start_ms: int | None
    period_end_ms: int | None
    items: dict[str, str] = field(default_factory=dict)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@lru_cache(maxsize=4096)
def _parse_context(raw: str) -> dict[str, Any]:
    # Cached: a broadcast's recipients share one context string. Callers must not mutate.
    value: dict[str, Any] = json.loads(raw)
    return value


@lru_cache(maxsize=8192)
def _parse_prefs(raw: str) -> Preferences:
    return Preferences.model_validate_json(raw)


class RedisStateStore:
    """All Redis I/O of the aggregator (see the module docstring for the keys).

    Args:
        redis: an asyncio client (bytes replies).
        prefix: key prefix, normally ``settings.redis_prefix``; ``"agg:"`` is appended.
        ttl_seconds: lifetime of groups and dedup keys (refreshed on each event).
    """

    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_seconds: int = 7 * 86400) -> None:
        self.redis = redis
        self.prefix = prefix + "agg:"
        self.ttl_seconds = ttl_seconds
        # The state epoch the aggregation script must find (None: any); set by the
        # state rebuilder once the marker is known.
        self.state_epoch: str | None = None
        self._aggregate = redis.register_script(AGGREGATE_LUA)
        self._contexts = redis.register_script(CONTEXTS_LUA)
        self._digest_add = redis.register_script(DIGEST_ADD_LUA)
        self._profile = redis.register_script(PROFILE_LUA)
        self._claim = redis.register_script(CLAIM_DIGESTS_LUA)
        self._finish = redis.register_script(FINISH_DIGEST_LUA)

    def key(self, *parts: str) -> str:
        """``prefix + "agg:" + parts joined by ":"``."""
        return self.prefix + ":".join(parts)

    # -- aggregation -------------------------------------------------------------------

    async def aggregate_many(
        self, items: Sequence[AggregateInput], chunk: int = 500
    ) -> list[GroupSnapshot | None]:
        """Absorb each pair, in order, with :data:`AGGREGATE_LUA`.

        One script call handles up to ``chunk`` pairs (atomically: Redis runs a
        script alone), so a pair's group update can never interleave with another
        instance's; the calls of one batch are pipelined. Returns one snapshot
        per input, in order (``None`` when a duplicate's group state already expired).

        Raises:
            StateLost: the state marker is missing or names another epoch than
                :attr:`state_epoch` (a chunk that saw it so changed nothing; chunks
                run before a loss were wiped with it).
            redis.exceptions.RedisError: Redis failed; some pairs may be applied,
                which redelivery handles (they come back as duplicates).
        """
        if not items:
            return []

        def payload(start: int) -> bytes:
            return orjson.dumps(
                [
                    {
                        "r": it.recipient_id,
                        "t": it.event_type,
                        "o": it.object_ref,
                        "e": it.event_id,
                        "at": str(it.occurred_ms),
                        "w": it.window_ms,
                        "a": list(it.actor),
                        "c": it.candidate_id,
                        "now": str(it.now_ms),
                        "ma": it.max_actors,
                        "me": MAX_EVENT_IDS,
                        "ttl": it.ttl_seconds,
                        "ctx": it.context,
                        "al": 1 if it.alert_wanted else 0,
                        "th": it.throttle_ms,
                    }
                    for it in items[start : start + chunk]
                ]
            )

        try:
            replies = await evalsha_many(
                self.redis,
                self._aggregate,
                [
                    ((), (self.prefix, payload(start), self.state_epoch or ""))
                    for start in range(0, len(items), chunk)
                ],
            )
        except ResponseError as exc:
            if STATE_LOST_ERROR in str(exc):
                raise StateLost(str(exc)) from exc
            raise
        results = [r for reply in replies for r in orjson.loads(reply)]
        return [
            GroupSnapshot.from_reply(r, it.context) for r, it in zip(results, items, strict=True)
        ]

    # -- users -------------------------------------------------------------------------

    async def load_contexts(
        self, user_ids: Iterable[str], chunk: int = 1000
    ) -> dict[str, UserContext]:
        """Preferences, profile locale/timezone and presence of each user.

        Read with :data:`CONTEXTS_LUA`, ``chunk`` users per call, pipelined.
        """
        users = list(dict.fromkeys(user_ids))
        if not users:
            return {}
        replies = await evalsha_many(
            self.redis,
            self._contexts,
            [
                ((), (self.prefix, *users[start : start + chunk]))
                for start in range(0, len(users), chunk)
            ],
        )
        rows = [row for reply in replies for row in orjson.loads(reply)]
        out: dict[str, UserContext] = {}
        for uid, (raw_prefs, locale, tz, sessions) in zip(users, rows, strict=True):
            out[uid] = UserContext(
                prefs=_parse_prefs(raw_prefs) if raw_prefs else None,
                locale=locale or None,
                timezone=tz or None,
                online=int(sessions) > 0,
            )
        return out

    async def put_preferences(self, prefs: Preferences) -> None:
        """Store a user's preferences (the whole document; last write wins)."""
        await self.put_preferences_many([prefs])

    async def put_preferences_many(self, items: Sequence[Preferences]) -> None:
        """Store preferences documents in order (one pipeline)."""
        if not items:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for prefs in items:
                pipe.set(self.key("prefs", prefs.user_id), prefs.model_dump_json())
            await pipe.execute()

    async def put_profiles(self, profiles: Sequence[UserProfile]) -> None:
        """Store profiles in order, registering each user and moving them between segments.

        Each profile is one atomic Lua call (segment sets never half-updated); calls are
        pipelined.
        """
        if not profiles:
            return
        await evalsha_many(
            self.redis,
            self._profile,
            [
                (
                    (self.key("prof", profile.user_id), self.key("users")),
                    (
                        self.prefix,
                        profile.user_id,
                        profile.name,
                        profile.locale,
                        profile.timezone,
                        json.dumps(sorted(set(profile.segments))),
                    ),
                )
                for profile in profiles
            ],
        )

    async def put_presence(self, event: PresenceEvent) -> None:
        """Record how many sessions the reporting gateway instance has for the user."""
        key = self.key("presence", event.user_id)
        if event.status is PresenceStatus.ONLINE and event.sessions > 0:
            await self.redis.hset(key, event.instance_id, event.sessions)
        elif event.status is PresenceStatus.ONLINE:
            await self.redis.hset(key, event.instance_id, 1)
        else:
            await self.redis.hdel(key, event.instance_id)

    async def audience(
        self, *, segment: str | None = None, batch_size: int = 1000
    ) -> AsyncIterator[list[str]]:
        """Yield the known users (``segment=None``) or a segment's members, in batches.

        Uses SSCAN, so a user may (rarely) be yielded twice while the set changes;
        dedup by event id makes that harmless.
        """
        key = self.key("seg", segment) if segment is not None else self.key("users")
        batch: list[str] = []
        async for member in self.redis.sscan_iter(key, count=batch_size):
            batch.append(_s(member))
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    # -- digests -----------------------------------------------------------------------

    async def add_digest_items(self, entries: Sequence[DigestEntry]) -> None:
        """Buffer digest items (a newer version of a notification replaces the older).

        One :data:`DIGEST_ADD_LUA` call per batch of entries.
        """
        if not entries:
            return
        payload = [
            [
                f"{e.recipient_id}|{e.period_key}",
                e.notification_id,
                e.item_json,
                f"{e.period_start_ms} {e.due_ms}",
                str(e.due_ms),
            ]
            for e in entries
        ]
        await self._digest_add(args=[self.prefix, self.ttl_seconds, json.dumps(payload)])

    async def claim_due_digests(
        self, now_ms: int, lease_ms: int, limit: int = 500
    ) -> list[ClaimedDigest]:
        """Claim digests due at ``now_ms`` for ``lease_ms`` and read their items.

        A claimed digest not finished within the lease is claimed again (by any
        instance), so a crash between send and finish re-sends with the same
        request id instead of losing the digest.
        """
        members = await self._claim(
            keys=[self.key("digest", "due")], args=[now_ms, lease_ms, limit]
        )
        if not members:
            return []
        names = [_s(m) for m in members]
        async with self.redis.pipeline(transaction=False) as pipe:
            for m in names:
                pipe.hgetall(self.key("digest", m))
            contents = await pipe.execute()
        out = []
        for member, raw in zip(names, contents, strict=True):
            fields = {_s(k): _s(v) for k, v in raw.items()}
            period = fields.pop(PERIOD_FIELD, None)
            start_ms = end_ms = None
            if period:
                start_s, end_s = period.split()
                start_ms, end_ms = int(start_s), int(end_s)
            out.append(
                ClaimedDigest(
                    member=member,
                    recipient_id=member.rsplit("|", 1)[0],
                    period_start_ms=start_ms,
                    period_end_ms=end_ms,
                    items=fields,
                )
            )
        return out

    async def finish_digest(self, digest: ClaimedDigest, now_ms: int) -> bool:
        """Remove the items that were sent; True when the digest is gone entirely.

        Items that changed or arrived after the claim stay and are due again at ``now_ms``.
        """
        args: list[Any] = [digest.member, now_ms]
        for nid, value in digest.items.items():
            args += [nid, value]
        done = await self._finish(
            keys=[self.key("digest", "due"), self.key("digest", digest.member)], args=args
        )
        return bool(done)

    async def pending_digests(self) -> int:
        """How many digests are buffered (due or not)."""
        return int(await self.redis.zcard(self.key("digest", "due")))
