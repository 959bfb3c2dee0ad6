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

A digest hash also keeps ``~period`` -> ``"<start ms> <due ms>"``.

Group state changes in ONE Lua script per (recipient, event) (:data:`AGGREGATE_LUA`),
so concurrent aggregator instances cannot interleave inside a group update. The
script derives the ``n:``/``na:`` keys from the notification id it finds, so all
keys of a call must live on one node (a single Redis, or Redis Cluster with
hash-tagged prefixes per recipient).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import redis.asyncio as aioredis

from clarion_aggregator.domain.grouping import MAX_EVENT_IDS, Outcome
from clarion_contracts.v1 import Preferences, PresenceEvent, PresenceStatus, UserProfile

AGGREGATE_LUA = """
-- KEYS[1] open-group pointer, KEYS[2] dedup key of (recipient, event id)
-- ARGV: 1 key prefix, 2 event id, 3 occurred ms, 4 window ms, 5 actor id,
--       6 actor JSON [id, name, avatar], 7 candidate notification id, 8 now ms,
--       9 max actors, 10 max event ids, 11 ttl seconds, 12 context JSON,
--       13 alert wanted (0/1), 14 alert throttle ms
local prefix = ARGV[1]
local ttl = tonumber(ARGV[11])
local seen = redis.call('GET', KEYS[2])
if seen then
  return {'duplicate', seen, redis.call('HGETALL', prefix .. 'n:' .. seen),
          redis.call('SCARD', prefix .. 'na:' .. seen)}
end
local occurred = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local nid = nil
local outcome = 'created'
if window > 0 then
  local open = redis.call('GET', KEYS[1])
  if open then
    local first = tonumber(redis.call('HGET', prefix .. 'n:' .. open, 'first_ms'))
    if first and occurred < first + window then
      nid = open
      outcome = 'updated'
    end
  end
end
local maxa = tonumber(ARGV[9])
local maxe = tonumber(ARGV[10])
local actor = cjson.decode(ARGV[6])
local nkey
if nid then
  nkey = prefix .. 'n:' .. nid
  redis.call('HINCRBY', nkey, 'version', 1)
  local actors = cjson.decode(redis.call('HGET', nkey, 'actors'))
  local kept = {actor}
  for _, a in ipairs(actors) do
    if #kept >= maxa then break end
    if a[1] ~= ARGV[5] then kept[#kept + 1] = a end
  end
  local events = cjson.decode(redis.call('HGET', nkey, 'events'))
  local newer = {ARGV[2]}
  for _, e in ipairs(events) do
    if #newer >= maxe then break end
    newer[#newer + 1] = e
  end
  redis.call('HSET', nkey, 'actors', cjson.encode(kept), 'events', cjson.encode(newer),
             'updated_ms', ARGV[8], 'ctx', ARGV[12])
  if occurred > tonumber(redis.call('HGET', nkey, 'last_ms')) then
    redis.call('HSET', nkey, 'last_ms', ARGV[3])
  end
else
  nid = ARGV[7]
  nkey = prefix .. 'n:' .. nid
  redis.call('HSET', nkey, 'version', 1, 'first_ms', ARGV[3], 'last_ms', ARGV[3],
             'first_event', ARGV[2], 'actors', cjson.encode({actor}),
             'events', cjson.encode({ARGV[2]}), 'created_ms', ARGV[8], 'updated_ms', ARGV[8],
             'ctx', ARGV[12])
  if window > 0 then
    redis.call('SET', KEYS[1], nid, 'EX', ttl)
  end
end
local akey = prefix .. 'na:' .. nid
redis.call('SADD', akey, ARGV[5])
if ARGV[13] == '1' then
  local last = tonumber(redis.call('HGET', nkey, 'alert_ms'))
  if (not last) or (tonumber(ARGV[8]) - last >= tonumber(ARGV[14])) then
    redis.call('HSET', nkey, 'alert_ms', ARGV[8], 'alert_v', redis.call('HGET', nkey, 'version'))
  end
end
redis.call('SET', KEYS[2], nid, 'EX', ttl)
redis.call('EXPIRE', nkey, ttl)
redis.call('EXPIRE', akey, ttl)
if window > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return {outcome, nid, redis.call('HGETALL', nkey), redis.call('SCARD', akey)}
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

PERIOD_FIELD = "~period"


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
    context: dict[str, Any]
    alert_version: int | None

    @classmethod
    def from_reply(cls, reply: Sequence[Any]) -> GroupSnapshot | None:
        """Parse the script reply ``[outcome, id, HGETALL list, actor count]`` (``None``: gone)."""
        outcome, nid, flat, count = reply
        raw = {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}
        if "version" not in raw:
            return None
        return cls(
            outcome=Outcome(_s(outcome)),
            notification_id=_s(nid),
            version=int(raw["version"]),
            actor_count=int(count),
            actors=json.loads(raw["actors"]),
            event_ids=json.loads(raw["events"]),
            first_occurred_ms=int(raw["first_ms"]),
            last_occurred_ms=int(raw["last_ms"]),
            created_ms=int(raw["created_ms"]),
            updated_ms=int(raw["updated_ms"]),
            context=json.loads(raw["ctx"]),
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


@lru_cache(maxsize=8192)
def _parse_prefs(raw: bytes) -> Preferences:
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
        self._aggregate = redis.register_script(AGGREGATE_LUA)
        self._profile = redis.register_script(PROFILE_LUA)
        self._claim = redis.register_script(CLAIM_DIGESTS_LUA)
        self._finish = redis.register_script(FINISH_DIGEST_LUA)

    def key(self, *parts: str) -> str:
        """``prefix + "agg:" + parts joined by ":"``."""
        return self.prefix + ":".join(parts)

    # -- aggregation -------------------------------------------------------------------

    async def aggregate_many(self, items: Sequence[AggregateInput]) -> list[GroupSnapshot | None]:
        """Absorb each pair atomically (one Lua call each, pipelined in order).

        Returns one snapshot per input, in order (``None`` when a duplicate's
        group state already expired).

        Raises:
            redis.exceptions.RedisError: Redis failed; some pairs may be applied,
                which redelivery handles (they come back as duplicates).
        """
        if not items:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for it in items:
                await self._aggregate(
                    keys=[
                        self.key("open", f"{it.recipient_id}|{it.event_type}|{it.object_ref}"),
                        self.key("seen", it.recipient_id, it.event_id),
                    ],
                    args=[
                        self.prefix,
                        it.event_id,
                        it.occurred_ms,
                        it.window_ms,
                        json.dumps(it.actor[0]),
                        json.dumps(list(it.actor)),
                        it.candidate_id,
                        it.now_ms,
                        it.max_actors,
                        MAX_EVENT_IDS,
                        it.ttl_seconds,
                        it.context,
                        "1" if it.alert_wanted else "0",
                        it.throttle_ms,
                    ],
                    client=pipe,
                )
            replies = await pipe.execute()
        return [GroupSnapshot.from_reply(r) for r in replies]

    # -- users -------------------------------------------------------------------------

    async def load_contexts(self, user_ids: Iterable[str]) -> dict[str, UserContext]:
        """Preferences, profile locale/timezone and presence of each user (one pipeline)."""
        users = list(dict.fromkeys(user_ids))
        if not users:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for uid in users:
                pipe.get(self.key("prefs", uid))
                pipe.hmget(self.key("prof", uid), ["locale", "tz"])
                pipe.hlen(self.key("presence", uid))
            replies = await pipe.execute()
        out: dict[str, UserContext] = {}
        for i, uid in enumerate(users):
            raw_prefs, (locale, tz), sessions = replies[3 * i : 3 * i + 3]
            out[uid] = UserContext(
                prefs=_parse_prefs(raw_prefs) if raw_prefs else None,
                locale=_s(locale) if locale else None,
                timezone=_s(tz) if tz else None,
                online=int(sessions) > 0,
            )
        return out

    async def put_preferences(self, prefs: Preferences) -> None:
        """Store a user's preferences (the whole document; last write wins)."""
        await self.redis.set(self.key("prefs", prefs.user_id), prefs.model_dump_json())

    async def put_profiles(self, profiles: Sequence[UserProfile]) -> None:
        """Store profiles in order, registering each user and moving them between segments.

        Each profile is one atomic Lua call (segment sets never half-updated); calls are
        pipelined.
        """
        if not profiles:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for profile in profiles:
                await self._profile(
                    keys=[self.key("prof", profile.user_id), self.key("users")],
                    args=[
                        self.prefix,
                        profile.user_id,
                        profile.name,
                        profile.locale,
                        profile.timezone,
                        json.dumps(sorted(set(profile.segments))),
                    ],
                    client=pipe,
                )
            await pipe.execute()

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
        """Buffer digest items (a newer version of a notification replaces the older)."""
        if not entries:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for e in entries:
                member = f"{e.recipient_id}|{e.period_key}"
                hkey = self.key("digest", member)
                pipe.hset(
                    hkey,
                    mapping={
                        e.notification_id: e.item_json,
                        PERIOD_FIELD: f"{e.period_start_ms} {e.due_ms}",
                    },
                )
                pipe.expire(hkey, self.ttl_seconds)
                pipe.zadd(self.key("digest", "due"), {member: e.due_ms}, nx=True)
            await pipe.execute()

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
