// History stays bounded however many topics are published to: at most
// maxIdleTopics topics without subscribers keep history (the one idle longest
// is freed first), and maxHistoryBytes caps the bytes of the whole hub (oldest
// first). Whatever is dropped is never a silent gap: a resume that needs it
// gets `reset` 'trimmed'; a resume that needs nothing dropped gets exactly the
// missed events, or nothing, and no reset. Memory figures are t.comment'ed.
//
// Memory-backend specific (history lives in this process), so it pins memoryBackend().
import t, { type Test } from 'tap'
import v8 from 'node:v8'
import vm from 'node:vm'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { memoryBackend, type SseHubOptions } from '../lib/index.js'
import { makeApp, SseClient } from './helpers/index.js'
import { closeClients } from './helpers/closing.js'

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

/** Heap and ArrayBuffer bytes in use after full collections. */
function memory (): { heap: number, buffers: number } {
  gc(); gc()
  const m = process.memoryUsage()
  return { heap: m.heapUsed, buffers: m.arrayBuffers }
}

const Small = Type.Object({ n: Type.Integer() })
const Line = Type.Object({ text: Type.String() })
/** A distinct 1000-character string per event, as a parsed request body would be. */
const kilobyte = (i: number): string => String(i).padStart(1000, 'x')

/** Topics the memory backend tracks (not in stats(): read from the backend it was given). */
function backendTopics (app: FastifyInstance): number {
  return (app.sse.backend as unknown as { stats: () => { topics: number } }).stats().topics
}

async function roomsApp (t: Test, plugin: SseHubOptions, listen = false) {
  let room!: ReturnType<typeof declare>
  const declare = (app: FastifyInstance) => app.sse.channel('rooms/:roomId', { events: { m: Small, line: Line } })
  const made = await makeApp(t, app => {
    room = declare(app)
    app.get('/rooms/:roomId', (req, reply) => reply.sse({ subscribe: [room.topic({ roomId: (req.params as { roomId: string }).roomId })] }))
  }, { listen, plugin: { ...plugin, backend: memoryBackend() } })
  return { ...made, room }
}

t.test('100,000 distinct topics keep at most maxIdleTopics (1000) topics of history', async t => {
  const { app, room } = await roomsApp(t, { maxIdleTopics: 1000 })
  await room.topic({ roomId: 'warm' }).publish('m', { n: 0 })
  const before = memory()
  let peakEvents = 0
  let peakTopics = 0
  const started = Date.now()
  for (let i = 0; i < 100_000; i++) {
    await room.topic({ roomId: `r${i}` }).publish('m', { n: i })
    if (i % 500 === 0) {
      peakEvents = Math.max(peakEvents, app.sse.stats().historyEvents)
      peakTopics = Math.max(peakTopics, backendTopics(app))
    }
  }
  const ms = Date.now() - started
  const after = memory()
  const stats = app.sse.stats()
  t.equal(stats.published, 100_001)
  t.ok(stats.historyEvents <= 1000, `historyEvents ${stats.historyEvents} <= 1000 at the end`)
  t.ok(peakEvents <= 1000, `and throughout (peak ${peakEvents})`)
  t.equal(stats.historyEvents, 1000, 'the newest 1000 topics keep their one event')
  t.ok(backendTopics(app) <= 1000 && peakTopics <= 1000, `the backend tracks at most 1000 topics (now ${backendTopics(app)}, peak ${peakTopics})`)
  t.equal(stats.topics, 0, 'the hub holds no topic (nobody subscribed)')
  const grown = after.heap - before.heap
  t.ok(grown < 10 * 1024 * 1024, `heap grew ${(grown / 1024).toFixed(0)} KiB over 100,000 topics, i.e. it did not keep them (kept would be ~75 MB)`)
  t.comment(`100,000 awaited publishes to distinct topics: ${ms} ms; heap after vs before: ${(grown / 1024).toFixed(0)} KiB`)
})

t.test('the default maxIdleTopics (10,000) holds with 20,000 topics', async t => {
  const { app, room } = await roomsApp(t, {})
  for (let i = 0; i < 20_000; i++) await room.topic({ roomId: `r${i}` }).publish('m', { n: i })
  const stats = app.sse.stats()
  t.equal(stats.historyEvents, 10_000, `historyEvents ${stats.historyEvents} is the default bound`)
  t.ok(backendTopics(app) <= 10_000, `the backend tracks ${backendTopics(app)} topics`)
})

t.test('maxHistoryBytes 100,000 with 1 KB payloads: bytes stay under it, and an early resume gets reset "trimmed"', async t => {
  const { app, room, url, logs, untilLog } = await roomsApp(t, { maxHistoryBytes: 100_000 }, true)
  const log = room.topic({ roomId: 'log' })
  const ids: string[] = []
  let peak = 0
  for (let i = 0; i < 300; i++) {
    ids.push(await log.publish('line', { text: kilobyte(i) }))
    peak = Math.max(peak, app.sse.stats().historyBytes)
  }
  const stats = app.sse.stats()
  t.ok(peak <= 100_000, `historyBytes never passed 100,000 (peak ${peak})`)
  // 300 KB published into 100,000 bytes: whatever the per-event accounting, most events went.
  t.ok(stats.historyEvents >= 2 && stats.historyEvents < 100, `old events were trimmed: ${stats.historyEvents} of 300 kept`)
  const kept = stats.historyEvents
  const head = ids[ids.length - 1]

  // From the first id: its successors are gone, so reset, and nothing replayed.
  const early = await SseClient.open(url + '/rooms/log', { 'last-event-id': ids[0] })
  await early.waitEvents(1)
  t.equal(early.events[0].event, 'reset', 'the first event is reset')
  t.same(JSON.parse(early.events[0].data), { lastEventId: ids[0], reason: 'trimmed' })
  t.equal(early.events[0].id, head, 'carrying the head id')
  // Nothing from history follows it: the next event is a live one.
  const live = await log.publish('line', { text: 'live' })
  await early.until('the live event', () => early.events.some(e => e.id === live))
  t.same(early.events.map(e => e.id), [head, live], 'reset, then live, no replay')

  // From the newest dropped id: nothing it lacks was dropped, so an exact replay, no reset.
  const lastDropped = ids[300 - kept - 1]
  const edge = await SseClient.open(url + '/rooms/log', { 'last-event-id': lastDropped })
  await edge.until('the live event', () => edge.events.some(e => e.id === live))
  t.same(edge.events.map(e => e.id), [...ids.slice(300 - kept), live], `from the newest dropped id: the ${kept} kept events, then live`)
  // One before it: the dropped event is missing, so reset.
  const gap = await SseClient.open(url + '/rooms/log', { 'last-event-id': ids[300 - kept - 2] })
  await gap.waitEvents(1)
  t.match(JSON.parse(gap.events[0].data), { reason: 'trimmed' }, 'one id earlier: reset')
  t.equal(gap.events[0].event, 'reset')
  await closeClients(logs, untilLog, early, edge, gap)
})

t.test('a freed topic resumed from an old id gets reset; a never-used topic resumed from the head replays nothing', async t => {
  const { app, room, url, logs, untilLog } = await roomsApp(t, { maxIdleTopics: 10 }, true)
  const headBefore = await room.topic({ roomId: 'filler0' }).publish('m', { n: -1 })
  const a1 = await room.topic({ roomId: 'a' }).publish('m', { n: 1 })
  // Twenty more idle topics: 'a' is the longest idle and is freed.
  for (let i = 1; i <= 20; i++) await room.topic({ roomId: `filler${i}` }).publish('m', { n: i })
  t.ok(app.sse.stats().historyEvents <= 10)

  const freed = await SseClient.open(url + '/rooms/a', { 'last-event-id': headBefore })
  await freed.waitEvents(1)
  t.equal(freed.events[0].event, 'reset', 'the freed topic: reset, not silence')
  t.same(JSON.parse(freed.events[0].data), { lastEventId: headBefore, reason: 'trimmed' })
  t.notOk(freed.events.some(e => e.id === a1), 'the freed event is not replayed')
  await closeClients(logs, untilLog, freed)

  // The topic is re-created by a new publish: the event of its earlier life is still missing, so still reset.
  for (let i = 21; i <= 40; i++) await room.topic({ roomId: `filler${i}` }).publish('m', { n: i })
  const a2 = await room.topic({ roomId: 'a' }).publish('m', { n: 2 })
  const reborn = await SseClient.open(url + '/rooms/a', { 'last-event-id': headBefore })
  await reborn.waitEvents(1)
  t.equal(reborn.events[0].event, 'reset', 're-created topic: still reset (a1 is gone), not a2 alone')
  t.equal(reborn.events[0].id, a2, 'the reset carries the head id (a2 is the newest event)')
  const afterReborn = await room.topic({ roomId: 'a' }).publish('m', { n: 3 })
  await reborn.until('the live event', () => reborn.events.some(e => e.id === afterReborn))
  t.same(reborn.events.map(e => [e.event, e.id]), [['reset', a2], ['m', afterReborn]], 'a2 is not replayed after the reset: reset, then live')

  // A topic that never had an event, resumed from the current head: nothing to replay, no reset.
  const head = await room.topic({ roomId: 'filler0' }).publish('m', { n: 99 })
  const fresh = await SseClient.open(url + '/rooms/fresh', { 'last-event-id': head })
  // The first thing it gets is the live event published after it subscribed.
  await fresh.until('open', () => fresh.retries.length > 0)
  const live = await room.topic({ roomId: 'fresh' }).publish('m', { n: 100 })
  await fresh.until('the live event', () => fresh.events.some(e => e.id === live))
  t.same(fresh.events.map(e => [e.event, e.id]), [['m', live]], 'no reset, no replay: just the live event')
  t.equal(app.sse.stats().resets, 2, 'two resets counted: the freed and the re-created topic')
  await closeClients(logs, untilLog, reborn, fresh)
})

t.test('memory per idle topic and per history event', async t => {
  // Idle topics: one small event each, nobody subscribed. (A block: the
  // part below reuses these names for its own app.)
  // eslint-disable-next-line no-lone-blocks
  {
    const { app, room } = await roomsApp(t, { maxIdleTopics: 20_000 })
    await room.topic({ roomId: 'warm' }).publish('m', { n: 0 })
    const before = memory()
    for (let i = 0; i < 20_000; i++) await room.topic({ roomId: `r${i}` }).publish('m', { n: i })
    const after = memory()
    const s = app.sse.stats()
    t.equal(s.historyEvents, 20_000)
    t.comment(`per idle topic (one small event): ${((after.heap - before.heap) / 20_000).toFixed(0)} B heap; historyBytes counts ${(s.historyBytes / s.historyEvents).toFixed(0)} B per event`)
  }
})

t.test('history costs about what maxHistoryBytes counts (1 KB events, with and without a subscriber)', async t => {
  const N = 5_000
  for (const withSubscriber of [false, true]) {
    const { app, room, url, logs, untilLog } = await roomsApp(t, { history: N, historyTtl: 0 }, true)
    const log = room.topic({ roomId: 'log' })
    let client: SseClient | null = null
    if (withSubscriber) {
      client = await SseClient.open(url + '/rooms/log')
      await client.until('head id', () => /^id: /m.test(client!.text))
    }
    await log.publish('line', { text: 'warm' })
    if (client !== null) await client.waitEvents(1)
    const before = memory()
    for (let i = 0; i < N; i++) {
      const id = await log.publish('line', { text: kilobyte(i) })
      // With a subscriber, let it read every 200 events (the client is in this
      // process; it keeps no text, so only the server's side is measured).
      if (client !== null && i % 200 === 199) {
        await client.until(`event ${i}`, () => client!.events.at(-1)?.id === id)
        client.events.length = 0
        client.text = ''
      }
    }
    if (client !== null) t.equal(app.sse.stats().slowClientCuts, 0, 'the subscriber kept up')
    const after = memory()
    const s = app.sse.stats()
    const counted = s.historyBytes / s.historyEvents
    const heap = (after.heap - before.heap) / N
    const buffers = (after.buffers - before.buffers) / N
    const real = heap + buffers
    t.comment(`${withSubscriber ? 'with' : 'without'} a subscriber, per 1 KB event: ${heap.toFixed(0)} B heap + ${buffers.toFixed(0)} B buffers = ${real.toFixed(0)} B; historyBytes counts ${counted.toFixed(0)} B (${(real / counted).toFixed(2)}x)`)
    t.ok(real <= counted * 1.5, `${withSubscriber ? 'with' : 'without'} a subscriber: real cost ${real.toFixed(0)} B within 1.5x of the ${counted.toFixed(0)} B counted`)
    if (client !== null) await closeClients(logs, untilLog, client)
    await app.close()
  }
})
