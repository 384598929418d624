// Redis evicting keys (maxmemory with an LRU policy) never costs a silent
// partial replay or a reused id: a topic stream evicted and recreated by the
// next publish marks what it lost (a resume from before it gets reset), and
// evicted epoch, seq or clock keys cost at most one reset per stream per
// new epoch. The backend warns once at start when the policy is not
// noeviction.
import t from 'tap'
import { RedisServer, redisSkip, checkSequence, reusedIds, epochOf, epochsOf } from './helpers/redis.js'
import { oracle, roomsApp, got, startOf } from './helpers/redis-app.js'

const skip = redisSkip()
const PAD = 'x'.repeat(2_000)

t.test('volatile-lru evicts a topic stream: the resume from before the lost range gets reset, never a partial replay', { skip }, async t => {
  const redis = await new RedisServer(['--maxmemory', '4mb', '--maxmemory-policy', 'volatile-lru']).start()
  t.teardown(() => redis.stop())
  const log = oracle()
  const a = await roomsApp(t, { url: redis.url }, log)
  const client = await a.subscribe(['a'])
  await a.publish('a', -1)
  await client.waitEvents(1)
  const from = client.lastEventId as string
  client.close()
  // Events the client misses while away.
  for (let i = 0; i < 5; i++) await a.publish('a', -2 - i)
  // Fill Redis until the topic's stream is evicted (bounded).
  const admin = redis.client()
  t.teardown(() => admin.quit())
  const gone = async (): Promise<boolean> => {
    // SCAN does not touch the key's LRU clock, EXISTS would.
    const [, keys] = await admin.scan('0', 'MATCH', '{sse}:t:*rooms/a', 'COUNT', 100_000)
    return keys.length === 0
  }
  let filled = 0
  const room = a.room
  while (!(await gone()) && filled < 20_000) {
    const batch: Array<Promise<unknown>> = []
    for (let i = 0; i < 100; i++, filled++) batch.push(room.topic({ id: `f${filled % 400}` }).publish('e', { n: filled, pad: PAD } as never).catch(() => {}))
    await Promise.all(batch)
  }
  t.ok(await gone(), `the stream was evicted (after ${filled} filler publishes)`)
  await a.publish('a', -100) // recreates the key
  const back = await a.subscribe(['a'], from)
  await back.waitEvents(1)
  t.comment(`resume after eviction got: ${back.events.map(e => e.event === 'reset' ? 'reset' : JSON.parse(e.data).n).join(',')}`)
  t.equal(back.events[0].event, 'reset', 'the resume gets reset first')
  t.match(JSON.parse(back.events[0].data), { reason: 'trimmed', lastEventId: from })
  await a.untilLog('the policy is warned about at start', l => /maxmemory-policy is "volatile-lru"/.test(l.msg), 1_000)
  t.equal(a.logs.filter(l => /maxmemory-policy/.test(l.msg)).length, 1, 'once')
})

t.test('allkeys-lru under pressure: a live stream is exact or reset first, ids never reused, few resets', { skip }, async t => {
  const redis = await new RedisServer(['--maxmemory', '3mb', '--maxmemory-policy', 'allkeys-lru', '--maxmemory-samples', '3']).start()
  t.teardown(() => redis.stop())
  const log = oracle()
  const a = await roomsApp(t, { url: redis.url, commandTimeout: 5_000 }, log)
  const b = await roomsApp(t, { url: redis.url, commandTimeout: 5_000 }, log)
  const clients = [await b.subscribe(['a']), await b.subscribe(['a', 'b']), await a.subscribe(['b'])]
  const topics = [['a'], ['a', 'b'], ['b']]
  // Epochs the filler publishes were acknowledged in: an epoch only they
  // carried is a new epoch all the same (the bound counts every one).
  const fillerEpochs = new Set<string>()
  let n = 0
  for (let round = 0; round < 60; round++) {
    const batch: Array<Promise<unknown>> = []
    for (let i = 0; i < 40; i++, n++) {
      const app = n % 2 === 0 ? a : b
      // Mostly filler with big payloads on many topics, some on the followed ones.
      if (i % 8 === 0) batch.push(app.publish(n % 3 === 0 ? 'b' : 'a', n))
      else batch.push(app.room.topic({ id: `f${n % 500}` }).publish('e', { n, pad: PAD } as never).then(id => fillerEpochs.add(epochOf(id)), () => {}))
    }
    await Promise.all(batch)
  }
  const admin = redis.client()
  t.teardown(() => admin.quit())
  const evicted = Number(/evicted_keys:(\d+)/.exec(await admin.info('stats'))?.[1])
  await Promise.all(clients.map((c, i) => {
    const last = [...log.acked].reverse().find(x => topics[i].includes(x.topic))
    return c.until('the last event', () => c.events.some(e => e.id === last?.id), 5_000).catch(() => {})
  }))
  const reports = clients.map((c, i) => checkSequence(got(c), log.acked, topics[i], startOf(c), new Set(log.refused.keys())))
  const acked = epochsOf(log.acked)
  const epochs = new Set([...acked, ...fillerEpochs]).size
  const reused = reusedIds(log.acked, clients.map(got))
  t.comment(`evicted keys ${evicted}, acked ${log.acked.length}, refused ${log.refused.size}, epochs ${epochs}, resets per stream ${reports.map(r => r.resets).join(',')}, lost ${reports.reduce((s, r) => s + r.lost, 0)}, ids reused ${reused}`)
  // Which epoch each reset moved a stream into, and why: a failure of the
  // bound below says whether the extra reset was into an epoch no acked
  // publish carried, or a second one into the same epoch.
  const resetsOf = (c: typeof clients[number]): string => got(c).filter(e => e.event === 'reset')
    .map(e => `${epochOf(e.id ?? '')}:${(JSON.parse(e.data) as { reason: string }).reason}`).join(' ')
  t.comment(`acked epochs ${[...acked].join(' ')}; filler only ${[...fillerEpochs].filter(e => !acked.has(e)).join(' ') || 'none'}; resets into ${clients.map(resetsOf).join(' | ')}`)
  t.ok(evicted > 0, 'Redis evicted keys')
  t.equal(reused, 0, 'no id names two events')
  t.same(reports.map(r => r.lost + r.disorder + r.unknown), reports.map(() => 0), 'exact, or reset first')
  t.ok(reports.every(r => r.resets <= epochs - 1), 'at most one reset per stream per new epoch')
})

t.test('an evicted epoch or seq key alone is restored (no reset, no reused id); with the topic marks gone too, one new epoch', { skip }, async t => {
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  const log = oracle()
  const a = await roomsApp(t, { url: redis.url }, log)
  const b = await roomsApp(t, { url: redis.url }, log)
  const client = await b.subscribe(['a', 'b'])
  const admin = redis.client()
  t.teardown(() => admin.quit())
  let n = 0
  const some = async (): Promise<void> => { for (let i = 0; i < 20; i++, n++) await (n % 2 === 0 ? a : b).publish(n % 3 === 0 ? 'b' : 'a', n) }
  await some()
  await admin.del('{sse}:epoch') // as an eviction would
  await some()
  await admin.del('{sse}:seq')
  await some()
  await admin.del('{sse}:epoch', '{sse}:seq')
  await some()
  const epochsBefore = epochsOf(log.acked).size
  await admin.del('{sse}:epoch', '{sse}:tops')
  await some()
  const last = log.acked[log.acked.length - 1]
  await client.until('the last event', () => client.events.some(e => e.id === last.id), 5_000).catch(() => {})
  const report = checkSequence(got(client), log.acked, ['a', 'b'], startOf(client), new Set(log.refused.keys()))
  const epochs = epochsOf(log.acked).size
  t.comment(`epochs ${epochsBefore} then ${epochs}, resets ${report.resets}, lost ${report.lost}, ids reused ${reusedIds(log.acked, [got(client)])}`)
  t.equal(epochsBefore, 1, 'epoch and seq keys evicted (alone or together) keep the epoch')
  t.equal(epochs, 2, 'epoch and marks evicted: one new epoch')
  t.equal(report.resets, 1, 'one reset')
  t.equal(report.lost + report.disorder + report.unknown, 0, 'exact, or reset first')
  t.equal(reusedIds(log.acked, [got(client)]), 0, 'no id names two events')
  t.equal(log.refused.size, 0, 'no publish refused')
})
