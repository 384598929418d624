// A Redis that stops answering (CLIENT PAUSE, SIGSTOP) never hangs a
// publish past commandTimeout, is reported (connected: false, one warning)
// within probeInterval + commandTimeout, and once it answers again every
// stream catches up from history: nothing acknowledged is lost. A Redis
// that is not there at start fails register() with a coded error naming it.
import t from 'tap'
import Fastify from 'fastify'
import ssePlugin from '../lib/index.js'
import { RedisServer, redisSkip, checkSequence, reusedIds, freePort } from './helpers/redis.js'
import { oracle, roomsApp, got, startOf } from './helpers/redis-app.js'
import type { SseClient } from './helpers/index.js'
import { redisBackend, createPublisher } from '../lib/redis.js'

const skip = redisSkip()

interface Bounds { commandTimeout: number, probeInterval: number }

async function stallCase (t: Parameters<Parameters<typeof t.test>[1]>[0], bounds: Bounds, stall: (redis: RedisServer) => Promise<() => void>, stallMs: number): Promise<void> {
  const { commandTimeout: COMMAND_TIMEOUT, probeInterval: PROBE_INTERVAL } = bounds
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  const log = oracle()
  const a = await roomsApp(t, { url: redis.url, ...bounds }, log)
  const b = await roomsApp(t, { url: redis.url, ...bounds }, log)
  const clients: Array<{ c: SseClient, topics: string[] }> = []
  for (let i = 0; i < 4; i++) clients.push({ c: await b.subscribe(['a', 'b']), topics: ['a', 'b'] })
  for (let i = 0; i < 4; i++) clients.push({ c: await a.subscribe(['b']), topics: ['b'] })

  // Publish steadily from both instances through the whole test.
  let n = 0
  let publishing = true
  // Three loops, so publishes keep arriving while one waits.
  const loop = Promise.all([0, 1, 2].map(async () => {
    while (publishing) {
      const k = n++
      await (k % 2 === 0 ? a : b).publish(k % 3 === 0 ? 'b' : 'a', k)
      await new Promise(resolve => setTimeout(resolve, 10))
    }
  }))
  await new Promise(resolve => setTimeout(resolve, 300))
  const began = performance.now()
  const resume = await stall(redis)
  const reported = await a.untilLog('the stall is reported', l => /redis stopped answering/.test(l.msg), 8_000).then(() => performance.now() - began, () => Infinity)
  const connectedDuring = a.app.sse.stats().backend.connected
  // Let it stall the full time, then let Redis answer again.
  await new Promise(resolve => setTimeout(resolve, Math.max(0, stallMs - (performance.now() - began))))
  resume()
  const healA = await a.untilLog('A heals', l => /redis answers again/.test(l.msg), 8_000).then(() => performance.now() - began, () => Infinity)
  const healB = await b.untilLog('B heals', l => /redis answers again/.test(l.msg), 8_000).then(() => performance.now() - began, () => Infinity)
  t.comment(`healed at ${Math.round(healA)} / ${Math.round(healB)} ms`)
  await new Promise(resolve => setTimeout(resolve, 500))
  publishing = false
  await loop
  const connectedAfter = a.app.sse.stats().backend.connected
  const tailFrom = performance.now()
  await Promise.all(clients.map(async ({ c, topics }) => {
    const last = [...log.acked].reverse().find(x => topics.includes(x.topic))
    await c.until('the last event', () => c.events.some(e => e.id === last?.id), 5_000).catch(() => {})
  }))
  t.comment(`tail waited ${Math.round(performance.now() - tailFrom)} ms`)
  const reports = clients.map(({ c, topics }) => checkSequence(got(c), log.acked, topics, startOf(c), new Set(log.refused.keys())))
  const lost = reports.reduce((s, r) => s + r.lost, 0)
  const stallLines = [...a.logs, ...b.logs].filter(l => /redis stopped answering/.test(l.msg)).length
  t.comment(`acked ${log.acked.length}, refused ${log.refused.size} (${[...new Set(log.refused.values())].join(',')}), longest publish ${Math.round(log.longestMs)} ms, stall reported after ${Math.round(reported)} ms, lost ${lost}, resets ${reports.map(r => r.resets).join(',')}`)
  t.ok(log.longestMs <= COMMAND_TIMEOUT + 1_000, `no publish waited past commandTimeout (longest ${Math.round(log.longestMs)} ms)`)
  t.ok(log.refused.size > 0, 'publishes during the stall were refused')
  t.ok([...log.refused.values()].every(code => code === 'FST_ERR_SSEHUB_BACKEND_TIMEOUT' || code === 'FST_ERR_SSEHUB_BACKEND_UNAVAILABLE'), 'with coded errors')
  t.ok(reported <= PROBE_INTERVAL + COMMAND_TIMEOUT + 1_000, `the stall was reported within probeInterval + commandTimeout (${Math.round(reported)} ms)`)
  t.equal(connectedDuring, false, 'stats said disconnected during the stall')
  t.equal(stallLines, 2, 'one line per instance')
  t.equal(connectedAfter, true, 'and connected after')
  t.same(reports.map(r => r.lost + r.disorder + r.unknown), reports.map(() => 0), 'every acknowledged event reached every subscriber once, in order, or after a reset')
  t.equal(reusedIds(log.acked, clients.map(({ c }) => got(c))), 0, 'no id names two events')
}

t.test('CLIENT PAUSE 4000 ALL (default bounds): bounded publishes, the stall reported, nothing lost', { skip }, async t => {
  await stallCase(t, { commandTimeout: 2_000, probeInterval: 1_000 }, async (redis) => {
    const admin = redis.client()
    t.teardown(() => admin.quit())
    await admin.client('PAUSE', 4_000, 'ALL')
    return () => {}
  }, 4_000)
})

t.test('SIGSTOP of redis-server for 3 s (commandTimeout 1000): bounded publishes, the stall reported, nothing lost', { skip }, async t => {
  await stallCase(t, { commandTimeout: 1_000, probeInterval: 500 }, async (redis) => {
    redis.signal('SIGSTOP')
    t.teardown(() => redis.signal('SIGCONT'))
    return () => redis.signal('SIGCONT')
  }, 3_000)
})

t.test('Redis not running: register fails within startTimeout with a coded error naming Redis and the cause', { skip }, async t => {
  const port = await freePort()
  const app = Fastify()
  t.teardown(() => app.close())
  const began = performance.now()
  await t.rejects(app.register(ssePlugin, { backend: redisBackend({ url: `redis://user:secret@127.0.0.1:${port}`, startTimeout: 1_000 }) }).ready(), {
    code: 'FST_ERR_SSEHUB_REDIS_UNREACHABLE',
    message: new RegExp(`Redis at redis://127\\.0\\.0\\.1:${port}.*within 1000 ms \\(.*ECONNREFUSED`)
  })
  const took = performance.now() - began
  t.ok(took < 2_000, `within the bound (${Math.round(took)} ms)`)
  let error: Error | undefined
  await createPublisher({ url: `redis://127.0.0.1:${port}`, startTimeout: 500 }).catch((err: Error) => { error = err })
  t.match(error, { code: 'FST_ERR_SSEHUB_REDIS_UNREACHABLE' }, 'createPublisher too')
  t.notMatch(error?.message, /secret/, 'the password is not in the message')
})

t.test('a wedged subscriber connection (its bytes held, Redis fine): reported, reconnected, every stream catches up', { skip }, async t => {
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  const { TcpProxy } = await import('./helpers/proxy.js')
  const proxy = await new TcpProxy(redis.port).start()
  t.teardown(() => proxy.stop())
  const log = oracle()
  const a = await roomsApp(t, { url: `redis://127.0.0.1:${proxy.port}`, commandTimeout: 1_000, probeInterval: 500 }, log)
  const b = await roomsApp(t, { url: redis.url }, log)
  const clients = [await a.subscribe(['a', 'b']), await a.subscribe(['a'])]
  const topics = [['a', 'b'], ['a']]
  const admin = redis.client()
  t.teardown(() => admin.quit())
  let n = 0
  let publishing = true
  const loop = (async () => {
    while (publishing) {
      const k = n++
      await b.publish(k % 3 === 0 ? 'b' : 'a', k)
      await new Promise(resolve => setTimeout(resolve, 5))
    }
  })()
  await new Promise(resolve => setTimeout(resolve, 200))
  // A's subscriber connection: the pubsub client that came through the proxy.
  const list = await admin.client('LIST', 'TYPE', 'pubsub') as string
  const ports = [...list.matchAll(/addr=127\.0\.0\.1:(\d+)/g)].map(m => Number(m[1]))
  t.ok(ports.some(port => proxy.wedge(port)), 'A\'s subscriber connection is wedged')
  const began = performance.now()
  await a.untilLog('the stall is reported', l => /redis stopped answering/.test(l.msg), 5_000)
  const reported = performance.now() - began
  await a.untilLog('the wedge is found', l => /subscriber connection is wedged/.test(l.msg), 5_000)
  await a.untilLog('A recovers', l => /redis connection recovered/.test(l.msg), 5_000)
  const healed = performance.now() - began
  await new Promise(resolve => setTimeout(resolve, 300))
  publishing = false
  await loop
  await Promise.all(clients.map((c, i) => {
    const last = [...log.acked].reverse().find(x => topics[i].includes(x.topic))
    return c.until('the last event', () => c.events.some(e => e.id === last?.id), 5_000).catch(() => {})
  }))
  const reports = clients.map((c, i) => checkSequence(got(c), log.acked, topics[i], startOf(c), new Set(log.refused.keys())))
  t.comment(`acked ${log.acked.length}, stall reported after ${Math.round(reported)} ms, reconnected and caught up after ${Math.round(healed)} ms, lost ${reports.reduce((s, r) => s + r.lost, 0)}, resets ${reports.map(r => r.resets).join(',')}`)
  t.same(reports.map(r => r.lost + r.disorder + r.unknown + r.resets), reports.map(() => 0), 'every acknowledged event, once, in order, no reset')
  t.equal(a.app.sse.stats().backend.connected, true, 'connected again')
})
