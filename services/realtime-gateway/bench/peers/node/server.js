// Peer of Clarion's realtime-gateway for services/realtime-gateway/bench/peer_bench.py:
// the architecture of a hand-rolled Node server, one process.
//
// * socket.io 4 over WebSocket, one room per user (every session of the user joins it);
// * @socket.io/redis-adapter: a room emit is published on Redis pub/sub, so a user
//   connected to another instance receives it (fan-out across instances);
// * kafkajs consumes clarion.notifications.v1 in a consumer group, latest offset on
//   first join, offsets committed after each batch was handled (at-least-once);
// * JWT (HS256, Clarion's development secret) checked in the connection middleware;
// * per-user bounded history in Redis (../history.lua: dedup by notification id and
//   version, seq, unread counter, XADD MAXLEN) so that a client reconnecting with the
//   last seq it saw (`auth.since`) receives what it missed. The Redis adapter has no
//   connection state recovery of its own, hence this history.
//
// Settings from PEER_* environment variables (set by the driver).
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const Redis = require('ioredis');
const { Kafka, logLevel } = require('kafkajs');
const jwt = require('jsonwebtoken');

const env = process.env;
const prefix = env.PEER_REDIS_PREFIX;
const historySize = Number(env.PEER_HISTORY_SIZE || 200);
const historyTtl = Number(env.PEER_HISTORY_TTL || 86400);
const secret = env.PEER_JWT_SECRET;

const pub = new Redis(env.PEER_REDIS_URL);
const sub = pub.duplicate();
const store = pub.duplicate();
store.defineCommand('appendHistory', {
  numberOfKeys: 3,
  lua: fs.readFileSync(path.join(__dirname, '..', 'history.lua'), 'utf8'),
});

const keys = (user) => [`${prefix}${user}:meta`, `${prefix}${user}:hist`, `${prefix}${user}:dedup`];

const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ['websocket'],
  serveClient: false,
  adapter: createAdapter(pub, sub, { key: `${prefix}socket.io` }),
});

io.use((socket, next) => {
  try {
    const claims = jwt.verify(String(socket.handshake.auth.token || ''), secret, {
      algorithms: ['HS256'],
    });
    socket.data.user = String(claims.sub);
    next();
  } catch (err) {
    next(new Error('unauthorized'));
  }
});

io.on('connection', async (socket) => {
  const user = socket.data.user;
  // Join first, then replay: a live frame during the replay may arrive twice and the
  // client drops it by seq.
  socket.join(user);
  const since = socket.handshake.auth.since;
  if (since === undefined || since === null) return;
  const entries = await store.xrange(keys(user)[1], `${Number(since) + 1}-0`, '+');
  for (const [id, fields] of entries) {
    socket.emit('notification', {
      type: 'notification.created',
      offset: Number(id.split('-')[0]),
      notification: JSON.parse(fields[1]),
    });
  }
});

async function main() {
  const kafka = new Kafka({
    clientId: 'socketio-peer',
    brokers: env.PEER_KAFKA.split(','),
    logLevel: logLevel.ERROR,
  });
  const consumer = kafka.consumer({
    groupId: env.PEER_GROUP,
    maxWaitTimeInMs: Number(env.PEER_FETCH_MAX_WAIT_MS || 5),
  });
  await consumer.connect();
  await consumer.subscribe({ topic: env.PEER_TOPIC, fromBeginning: false });
  await consumer.run({
    eachBatch: async ({ batch, resolveOffset, heartbeat }) => {
      const appended = await Promise.all(
        batch.messages.map((m) => {
          const value = m.value.toString();
          const n = JSON.parse(value);
          return store
            .appendHistory(...keys(n.recipient_id), n.notification_id, n.version, value, historySize, historyTtl)
            .then((r) => [n, r]);
        }),
      );
      for (const [n, [seq, unread]] of appended) {
        if (seq === 0) continue;
        io.to(n.recipient_id).emit('notification', {
          type: n.version === 1 ? 'notification.created' : 'notification.updated',
          offset: seq,
          unread_count: unread,
          notification: n,
        });
      }
      resolveOffset(batch.messages[batch.messages.length - 1].offset);
      await heartbeat();
    },
  });
  httpServer.listen(Number(env.PEER_PORT), '127.0.0.1', () => {
    process.stdout.write(JSON.stringify({ ready: true, port: httpServer.address().port }) + '\n');
  });
  const stop = async () => {
    await consumer.disconnect().catch(() => {});
    io.close();
    process.exit(0);
  };
  // The driver asks for a full collection before it reads RSS (node --expose-gc), so
  // the idle-connection figure counts live memory, not garbage V8 has not collected yet.
  process.on('SIGUSR2', () => global.gc && global.gc());
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
