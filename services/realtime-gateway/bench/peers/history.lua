-- Per-user bounded history of the socket.io peers, one round trip per record:
-- dedup by (notification_id, version), next seq, unread counter, XADD with MAXLEN.
-- The same duties as Clarion's append script, without epochs or pub/sub (the
-- socket.io Redis adapter publishes the frame itself).
-- KEYS: meta hash, history stream, dedup hash.
-- ARGV: notification_id, version, record value, history size, ttl seconds.
-- Returns {seq, unread}, or {0, 0} for a version already seen.
local known = redis.call('HGET', KEYS[3], ARGV[1])
local version = tonumber(ARGV[2])
if known and tonumber(known) >= version then
  return {0, 0}
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local unread
if known then
  unread = tonumber(redis.call('HGET', KEYS[1], 'unread') or '0')
else
  unread = redis.call('HINCRBY', KEYS[1], 'unread', 1)
end
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], seq .. '-0', 'v', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[5])
return {seq, unread}
