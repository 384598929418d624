// A failover to a replica that missed writes: master + replica (its link
// through a proxy the test stalls) + redis-sentinel, apps following
// Sentinel. The master is killed with writes the replica never got. No id
// then names two events (the promoted replica is behind what the instances
// saw: a new epoch, one reset per stream), no subscriber silently loses an
// event, a resume from the lost range gets reset. With `durable`, a
// publish the replica did not acknowledge is refused, and every
// acknowledged event is still in the promoted replica's history.
import t from 'tap'
import { RedisServer, Sentinel, sentinelSkip, checkSequence, reusedIds } from './helpers/redis.js'
import { TcpProxy } from './helpers/proxy.js'
import { oracle, roomsApp, got, startOf } from './helpers/redis-app.js'
import type { SseClient } from './helpers/index.js'
import type { RedisBackendOptions } from '../lib/redis.js'

const skip = sentinelSkip()
const NAME = 'hub'

async function failover (t: Parameters<Parameters<typeof t.test>[1]>[0], extra: Partial<RedisBackendOptions>) {
  const master = await new RedisServer().start()
  t.teardown(() => master.stop())
  const proxy = await new TcpProxy(master.port).start()
  t.teardown(() => proxy.stop())
  const replica = await new RedisServer(['--replicaof', '127.0.0.1', String(proxy.port)]).start()
  t.teardown(() => replica.stop())
  const admin = master.client()
  t.teardown(() => admin.disconnect())
  // The replica's first full sync can take a few seconds on a loaded machine.
  let synced = 0
  for (let i = 0; i < 4 && synced < 1; i++) {
    await admin.set('probe', String(i))
    synced = await admin.wait(1, 5_000)
  }
  t.equal(synced, 1, 'the replica is in sync')
  // As docs/redis.md used to advise; it does not help against a short stall.
  await admin.config('SET', 'min-replicas-to-write', '1')
  const sentinel = await new Sentinel(NAME, master.port).start()
  t.teardown(() => sentinel.stop())
  await sentinel.until('+slave slave', 15_000)

  const log = oracle()
  const options: RedisBackendOptions = { redisOptions: { sentinels: [{ host: '127.0.0.1', port: sentinel.port }], name: NAME }, ...extra }
  const a = await roomsApp(t, options, log)
  const b = await roomsApp(t, options, log)
  const clients: SseClient[] = []
  for (let i = 0; i < 5; i++) clients.push(await b.subscribe(['a', 'b']))
  for (let i = 0; i < 5; i++) clients.push(await a.subscribe(['a', 'b']))
  const resumer = await b.subscribe(['a', 'b'])

  let n = 0
  let publishing = true
  const loops = Promise.all([a, b].map(async app => {
    while (publishing) {
      const k = n++
      await app.publish(k % 3 === 0 ? 'b' : 'a', k)
      await new Promise(resolve => setTimeout(resolve, 3))
    }
  }))
  const pause = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))
  await pause(600)
  proxy.pause() // the replica stops getting writes; the link stays open
  const ackedBeforeStall = log.acked.length
  await pause(400)
  const lostRange = resumer.lastEventId as string
  resumer.close()
  const ackedAtKill = log.acked.length
  await master.kill()
  proxy.cut() // what the replica never got is gone
  await sentinel.until('+switch-master', 15_000)
  await a.untilLog('A recovers', l => /redis connection recovered/.test(l.msg), 15_000)
  await b.untilLog('B recovers', l => /redis connection recovered/.test(l.msg), 15_000)
  await pause(500)
  publishing = false
  await loops
  await Promise.all(clients.map(c => {
    const last = log.acked[log.acked.length - 1]
    return c.until('the last event', () => c.events.some(e => e.id === last.id), 5_000).catch(() => {})
  }))
  const back = await b.subscribe(['a', 'b'], lostRange)
  await back.until('an answer', () => back.events.length > 0, 3_000).catch(() => {})

  // What the promoted replica still holds of what was acknowledged.
  const promoted = replica.client()
  t.teardown(() => promoted.disconnect())
  let missing = 0
  for (const x of log.acked) {
    const [epoch, seq] = x.id.split('-')
    const entries = await promoted.xrange(`{sse}:t:${epoch}:rooms/${x.topic}`, `${seq}-0`, `${seq}-0`)
    if (entries.length === 0) missing++
  }
  const reports = clients.map(c => checkSequence(got(c), log.acked, ['a', 'b'], startOf(c), new Set(log.refused.keys())))
  const reused = reusedIds(log.acked, clients.map(got))
  const refusedCodes = [...new Set(log.refused.values())]
  t.comment(`acked ${log.acked.length} (${ackedAtKill - ackedBeforeStall} while the link stalled), refused ${log.refused.size} (${refusedCodes.join(',')}), ` +
    `acked but missing from the promoted replica ${missing}, lost ${reports.reduce((s, r) => s + r.lost, 0)}, ids reused ${reused}, resets per stream ${reports.map(r => r.resets).join(',')}, longest publish ${Math.round(log.longestMs)} ms`)
  t.equal(reused, 0, 'no id names two events')
  t.same(reports.map(r => r.lost + r.disorder + r.unknown), reports.map(() => 0), 'every subscriber: exact, or reset first')
  t.ok(reports.every(r => r.resets === 1), 'one reset per stream')
  t.equal(back.events[0]?.event, 'reset', 'a resume from the lost range gets reset')
  return { log, missing, ackedWhileStalled: ackedAtKill - ackedBeforeStall }
}

t.test('failover to a lagging replica: a new epoch, one reset per stream, no id reused, nothing lost silently', { skip }, async t => {
  const { missing } = await failover(t, {})
  t.ok(missing > 0, `without durable, acknowledged events can be lost in a failover (${missing}): the staging works`)
})

t.test('durable publish: what the replica did not acknowledge is refused; every acknowledged event survives the failover', { skip }, async t => {
  const { log, missing, ackedWhileStalled } = await failover(t, { durable: { replicas: 1, timeout: 200 } })
  t.equal(missing, 0, 'every acknowledged event is in the promoted replica\'s history')
  t.ok([...log.refused.values()].includes('FST_ERR_SSEHUB_PUBLISH_NOT_REPLICATED'), 'publishes the replica did not acknowledge were refused with the coded error')
  t.equal(ackedWhileStalled, 0, 'nothing was acknowledged while the replica got nothing')
  t.ok(log.longestMs < 2_000 + 300, `no publish waited past commandTimeout (${Math.round(log.longestMs)} ms)`)
})
