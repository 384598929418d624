// 10,000 topics of 'rooms/:roomId', ONE subscriber each (raw sockets in a
// child process, GET /rooms/{i}): one event published to every topic reaches
// exactly its own room's socket and no other; stats().topics is 10,000 while
// they are connected and 0 once they have left.
import t from 'tap'
import { performance } from 'node:perf_hooks'
import { Type } from '@sinclair/typebox'
import { memoryBackend } from '../lib/index.js'
import { makeApp } from './helpers/index.js'
import { LoadClient, badSockets, idsHash, memoryAfterGc, mib, now, turn } from './helpers/load.js'
import { heavySuite } from './helpers/heavy.js'

await heavySuite()

const N = 10_000
const WARM = 200

t.setTimeout(120_000)

t.test(`${N} topics with one subscriber each: every socket gets its own room's events and nothing else`, async t => {
  t.setTimeout(120_000)
  const testStart = performance.now()
  let closes = 0
  let closeTarget = Infinity
  let allClosed = (): void => {}
  let publishRoom!: (roomId: string, n: number) => Promise<string>
  const { app, url } = await makeApp(t, app => {
    const room = app.sse.channel('rooms/:roomId', {
      events: { message: Type.Object({ roomId: Type.String(), n: Type.Integer(), text: Type.String() }) }
    })
    app.get<{ Params: { roomId: string } }>('/rooms/:roomId', (req, reply) => {
      const stream = reply.sse({ subscribe: [room.topic({ roomId: req.params.roomId })] })
      stream.onClose(() => { if (++closes === closeTarget) allClosed() })
    })
    // The app's publisher: the room id goes into the payload, so a client can
    // tell whose event it received (the topic is not on the wire).
    publishRoom = (roomId, n) => room.topic({ roomId }).publish('message', { roomId, n, text: `hello room ${roomId}` })
  }, { fastify: { logger: false }, plugin: { heartbeat: false, backend: memoryBackend() } })
  const port = Number(new URL(url).port)
  const closedUntil = (target: number): Promise<void> => new Promise((resolve, reject) => {
    if (closes >= target) return resolve()
    const timer = setTimeout(() => reject(new Error(`timed out: ${closes} of ${target} streams closed`)), 30_000)
    closeTarget = target
    allClosed = () => { clearTimeout(timer); resolve() }
  })

  // Warm up on rooms far from the measured ones, so the baseline is fair.
  const warm = await LoadClient.start(t, { port, count: WARM, path: '/rooms/warm-{i}', concurrency: 100, timeoutMs: 30_000 })
  t.match(await warm.connected(15_000), { ready: WARM, failed: 0 }, 'warm-up clients connected')
  warm.expect(1)
  await Promise.all(Array.from({ length: WARM }, (_, i) => publishRoom(`warm-${i}`, -1)))
  await warm.complete(1, 10_000)
  const warmDone = closedUntil(WARM)
  await warm.close()
  await warmDone
  closes = 0
  closeTarget = Infinity
  t.match(app.sse.stats(), { openStreams: 0, topics: 0 }, 'warm-up streams and topics released')

  const base = memoryAfterGc()

  // --- connect 10,000, one per room --------------------------------------
  const load = await LoadClient.start(t, {
    port, count: N, path: '/rooms/{i}', concurrency: 500, timeoutMs: 115_000, expectData: '"roomId":"{i}"'
  })
  const connected = await load.connected(90_000)
  t.same({ ready: connected.ready, failed: connected.failed }, { ready: N, failed: 0 },
    `every socket connected and got its head id (failures: ${JSON.stringify(connected.failures)})`)
  if (connected.ready !== N) return // the rest would only time out
  let stats = app.sse.stats()
  t.match(stats, { openStreams: N, subscriptions: N, topics: N, channels: { 'rooms/:roomId': { topics: N, subscribers: N } } },
    'the hub holds 10,000 topics with one subscription each')
  const open = memoryAfterGc()
  const rssPer = (open.rss - base.rss) / N
  const heapPer = (open.heap - base.heap) / N
  t.comment(`connect: ${N} streams on ${N} topics in ${connected.ms.toFixed(0)} ms; RSS ${mib(base.rss)} -> ${mib(open.rss)} = ` +
    `${(rssPer / 1024).toFixed(1)} KiB per topic+subscriber (heap ${(heapPer / 1024).toFixed(1)} KiB)`)
  t.ok(rssPer < 64 * 1024, `RSS per topic+subscriber ${(rssPer / 1024).toFixed(1)} KiB < 64 KiB`)

  // In a block, so what it holds (ids, the 10,000-socket report) is garbage by the final heap reading.
  {
    // --- round 1: one event to every topic, all in ONE turn -----------------
    const rooms = Array.from({ length: N }, (_, i) => String(i))
    let writes0 = stats.writes
    let deliveries0 = stats.deliveries
    const published0 = stats.published
    load.expect(1)
    const r1Start = now()
    const ids1 = await Promise.all(rooms.map(r => publishRoom(r, 1)))
    const r1Done = await load.complete(1, 30_000)
    stats = app.sse.stats()
    t.equal(stats.published - published0, N, '10,000 events published')
    t.equal(stats.deliveries - deliveries0, N, 'stats.deliveries grew by 10,000: each event went to one subscriber')
    t.equal(stats.writes - writes0, N, 'one socket write per connection for the turn')

    // --- round 2: one more to every topic, over 20 turns of 500 ---------------
    // Also a fence for round 1: TCP keeps each socket's order, so an event
    // wrongly sent to socket i in round 1 would arrive before its round-2 event.
    writes0 = stats.writes
    deliveries0 = stats.deliveries
    load.expect(2)
    const r2Start = now()
    const ids2: string[] = []
    for (let k = 0; k < N; k += 500) {
      ids2.push(...await Promise.all(rooms.slice(k, k + 500).map(r => publishRoom(r, 2))))
      await turn()
    }
    const r2Done = await load.complete(2, 30_000)
    stats = app.sse.stats()
    t.equal(stats.deliveries - deliveries0, N, 'round 2: 10,000 deliveries')
    t.equal(stats.writes - writes0, N, 'round 2: one write per connection (each in its own turn)')
    t.comment(`round 1 (10,000 topics, one turn): first publish -> last socket has its event: ${(r1Done - r1Start).toFixed(1)} ms; ` +
      `round 2 (20 turns of 500): ${(r2Done - r2Start).toFixed(1)} ms`)

    // --- every socket: exactly its own room's two events --------------------
    const report = await load.report()
    t.equal(report.count.length, N, 'a report for every socket')
    const { bad, examples } = badSockets(report, i => {
      if (report.count[i] !== 2) return `${report.count[i]} events (first data ${report.firstData[i]})`
      if (report.dataMismatch[i] !== 0) return `${report.dataMismatch[i]} events of another room (first data ${report.firstData[i]})`
      if (report.hash[i] !== idsHash([ids1[i], ids2[i]])) return `ids ${report.firstId[i]}, ${report.lastId[i]}; expected ${ids1[i]}, ${ids2[i]}`
      let first: { roomId?: unknown, n?: unknown }
      try { first = JSON.parse(report.firstData[i] as string) } catch { return `unparsable data ${report.firstData[i]}` }
      if (first.roomId !== String(i) || first.n !== 1) return `first event ${report.firstData[i]}`
      if (report.outOfOrder[i] !== 0 || report.idOnly[i] !== 0 || report.noId[i] !== 0) return 'bad id sequence'
      if (report.closed[i]) return `closed early (${report.error[i]})`
      return null
    })
    t.equal(bad, 0, `every socket got exactly its own room's 2 events${bad > 0 ? ` — ${bad} did not: ${examples}` : ''}`)
  }

  // --- leave --------------------------------------------------------------
  const leaveStart = performance.now()
  const gone = closedUntil(N)
  await load.close()
  await gone
  const leaveMs = performance.now() - leaveStart
  stats = app.sse.stats()
  t.match(stats, { openStreams: 0, subscriptions: 0, topics: 0, channels: { 'rooms/:roomId': { topics: 0, subscribers: 0 } } },
    'every topic and subscription released')
  t.comment(`leave: ${N} streams closed in ${leaveMs.toFixed(0)} ms; history kept for resume: ${stats.historyEvents} events, ${mib(stats.historyBytes)}`)
  // What stays after everyone left is the history kept for resume (10,000
  // idle topics, within maxIdleTopics): reported against what the history
  // accounts for itself. Closed sockets are freed by close callbacks a loop
  // iteration or two later, so give them a few turns (not a timer) first.
  for (let k = 0; k < 20; k++) await turn()
  const after = memoryAfterGc()
  const retained = after.heap + after.arrayBuffers - base.heap - base.arrayBuffers
  t.comment(`heap: before ${mib(base.heap)}, with ${N} open ${mib(open.heap)}, after leaving ${mib(after.heap)} ` +
    `(+${mib(after.arrayBuffers - base.arrayBuffers)} array buffers); retained ${mib(retained)} for ${stats.historyEvents} history events ` +
    `that account for ${mib(stats.historyBytes)} (${(retained / stats.historyEvents).toFixed(0)} B real vs ` +
    `${(stats.historyBytes / stats.historyEvents).toFixed(0)} B accounted per event)`)
  t.comment(`total ${((performance.now() - testStart) / 1000).toFixed(1)} s`)
})
