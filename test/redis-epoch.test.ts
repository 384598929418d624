// An id names one event, even when Redis goes backwards: a restart from an
// older RDB snapshot hands out no id twice (the first instance to notice
// starts a new epoch; every stream gets one reset; old ids get reset on
// resume), and FLUSHALL with publishes in flight costs each stream one
// reset per epoch change, not one per publish in flight.
import t from 'tap'
import { RedisServer, redisSkip, checkSequence, reusedIds, epochOf, epochsOf } from './helpers/redis.js'
import { oracle, roomsApp, got, startOf } from './helpers/redis-app.js'
import type { SseClient } from './helpers/index.js'

const skip = redisSkip()

t.test('a restart from an older RDB snapshot: no id names two events, every stream gets one reset, no silent loss', { skip }, async t => {
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  const log = oracle()
  const a = await roomsApp(t, { url: redis.url }, log)
  const b = await roomsApp(t, { url: redis.url }, log)
  const clients: Array<{ c: SseClient, topics: string[] }> = []
  for (let i = 0; i < 4; i++) clients.push({ c: await b.subscribe(['a', 'b']), topics: ['a', 'b'] })
  for (let i = 0; i < 4; i++) clients.push({ c: await a.subscribe(['a']), topics: ['a'] })
  const resumer = await b.subscribe(['a', 'b'])

  let n = 0
  const burst = async (count: number): Promise<void> => {
    for (let i = 0; i < count; i++, n++) await (n % 2 === 0 ? a : b).publish(n % 3 === 0 ? 'b' : 'a', n)
  }
  await burst(200)
  const admin = redis.client()
  t.teardown(() => admin.quit())
  await admin.save() // the snapshot the restart goes back to
  await burst(100)
  const last = log.acked[log.acked.length - 1].id
  await resumer.until('the resumer is in the lost range', () => resumer.lastEventId === last)
  const resumeFrom = resumer.lastEventId as string
  resumer.close()
  await burst(100)
  const before = log.acked[log.acked.length - 1].id
  await Promise.all(clients.map(({ c, topics }) => c.until('all before the restart', () => topics.includes('b') ? c.lastEventId === before : true)))

  await redis.kill()
  await redis.start()
  await a.untilLog('A recovers', l => /redis connection recovered/.test(l.msg), 15_000)
  await b.untilLog('B recovers', l => /redis connection recovered/.test(l.msg), 15_000)
  await burst(100)
  const end = log.acked[log.acked.length - 1]
  await Promise.all(clients.map(async ({ c, topics }) => {
    const lastOfMine = [...log.acked].reverse().find(x => topics.includes(x.topic)) as typeof end
    await c.until('the last event', () => c.lastEventId === lastOfMine.id, 5_000).catch(() => {})
  }))
  const back = await b.subscribe(['a', 'b'], resumeFrom)
  await back.until('an answer', () => back.events.length > 0, 2_000).catch(() => {})

  const reports = clients.map(({ c, topics }) => checkSequence(got(c), log.acked, topics, startOf(c), new Set(log.refused.keys())))
  const lost = reports.reduce((s, r) => s + r.lost, 0)
  const reused = reusedIds(log.acked, clients.map(({ c }) => got(c)))
  t.comment(`acked ${log.acked.length}, refused ${log.refused.size}, lost ${lost}, ids reused ${reused}, resets per stream ${reports.map(r => r.resets).join(',')}`)
  t.equal(reused, 0, 'no id names two events')
  t.same(reports.map(r => r.lost), reports.map(() => 0), 'no subscriber silently lost an event')
  t.same(reports.map(r => r.disorder + r.unknown), reports.map(() => 0), 'nothing out of order or from nowhere')
  t.same(reports.map(r => r.resets), reports.map(() => 1), 'each stream got exactly one reset')
  t.not(epochOf(end.id), epochOf(before), 'publishes after the restart carry a new epoch')
  t.equal(back.events[0]?.event, 'reset', 'a resume from the lost range gets reset')
  t.match(JSON.parse(back.events[0]?.data ?? '{}'), { reason: 'epoch', lastEventId: resumeFrom })
  const switches = [...a.logs, ...b.logs].filter(l => /new epoch/.test(l.msg)).length
  t.equal(switches, 2, 'each instance switched once')
})

t.test('FLUSHALL with publishes in flight: one reset per stream per epoch change', { skip }, async t => {
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  const log = oracle()
  const a = await roomsApp(t, { url: redis.url }, log)
  const b = await roomsApp(t, { url: redis.url }, log)
  const clients: SseClient[] = []
  for (let i = 0; i < 5; i++) clients.push(await b.subscribe(['a', 'b']))
  for (let i = 0; i < 5; i++) clients.push(await a.subscribe(['a', 'b']))
  const admin = redis.client()
  t.teardown(() => admin.quit())

  let n = 0
  const FLUSHES = 3
  for (let round = 0; round < 8; round++) {
    const batch: Array<Promise<unknown>> = []
    for (let i = 0; i < 50; i++, n++) batch.push((n % 2 === 0 ? a : b).publish(n % 3 === 0 ? 'b' : 'a', n))
    // The first half is on its way (auto-pipelined at setImmediate); the
    // flush lands between it and the second half, with replies and messages
    // of the old epoch still in flight.
    await new Promise(resolve => setImmediate(resolve))
    if (round >= 2 && round < 2 + FLUSHES) batch.push(admin.flushall())
    for (let i = 0; i < 50; i++, n++) batch.push((n % 2 === 0 ? a : b).publish(n % 3 === 0 ? 'b' : 'a', n))
    await Promise.all(batch)
  }
  const epochs = epochsOf(log.acked)
  // Wait until every client has the newest epoch's last event.
  const newest = log.acked.filter(x => x.id.startsWith([...epochs].pop() as string))
  const tail = newest.reduce((m, x) => Number(x.id.split('-')[1]) > Number(m.id.split('-')[1]) ? x : m)
  await Promise.all(clients.map(c => c.until('the last event', () => c.events.some(e => e.id === tail.id), 5_000).catch(() => {})))
  const reports = clients.map(c => checkSequence(got(c), log.acked, ['a', 'b'], startOf(c), new Set(log.refused.keys())))
  const resets = reports.map(r => r.resets)
  t.comment(`acked ${log.acked.length}, refused ${log.refused.size} (${[...new Set(log.refused.values())].join(',')}), epochs ${epochs.size}, resets per stream ${resets.join(',')}, lost ${reports.reduce((s, r) => s + r.lost, 0)}`)
  // An epoch can come and go with no acknowledged publish in it (a flush
  // right after the one that made it): the resets name it all the same.
  const named = new Set([...epochs, ...clients.flatMap(c => c.events.filter(e => e.event === 'reset').map(e => epochOf(String(e.id))))])
  t.ok(named.size >= 2 && named.size <= FLUSHES + 1, `a new epoch per flush (${named.size - 1} for ${FLUSHES})`)
  t.ok(resets.every(r => r === named.size - 1), `each stream got one reset per epoch change (${named.size - 1})`)
  t.same(reports.map(r => r.lost + r.disorder + r.unknown), reports.map(() => 0), 'exact between resets')
  t.equal(reusedIds(log.acked, clients.map(got)), 0, 'no id names two events')
})

t.test('AOF appendfsync always: kill -9 and restart loses nothing: same epoch, no reset, streams catch up', { skip }, async t => {
  const redis = await new RedisServer(['--appendonly', 'yes', '--appendfsync', 'always']).start()
  t.teardown(() => redis.stop())
  const log = oracle()
  const a = await roomsApp(t, { url: redis.url }, log)
  const b = await roomsApp(t, { url: redis.url }, log)
  const clients = [await b.subscribe(['a', 'b']), await a.subscribe(['a'])]
  const topics = [['a', 'b'], ['a']]
  let n = 0
  const burst = async (count: number): Promise<void> => {
    for (let i = 0; i < count; i++, n++) await (n % 2 === 0 ? a : b).publish(n % 3 === 0 ? 'b' : 'a', n)
  }
  await burst(100)
  await redis.kill()
  await redis.start()
  await a.untilLog('A recovers', l => /redis connection recovered/.test(l.msg), 15_000)
  await b.untilLog('B recovers', l => /redis connection recovered/.test(l.msg), 15_000)
  await burst(100)
  await Promise.all(clients.map((c, i) => {
    const last = [...log.acked].reverse().find(x => topics[i].includes(x.topic))
    return c.until('the last event', () => c.events.some(e => e.id === last?.id), 5_000).catch(() => {})
  }))
  const reports = clients.map((c, i) => checkSequence(got(c), log.acked, topics[i], startOf(c), new Set(log.refused.keys())))
  t.equal(epochsOf(log.acked).size, 1, 'one epoch throughout')
  t.same(reports.map(r => r.lost + r.disorder + r.unknown + r.resets), reports.map(() => 0), 'exact, no reset')
})
