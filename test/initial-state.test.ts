// Initial state (issue 8): `since: -N` gives a fresh subscriber the newest N
// events of each followed topic (merged by id), then the head event, then
// live; a channel's `snapshot(request, params)` is sent first instead of the
// head event, carrying the head's id, so snapshot + following events is
// exact (no gap, no duplicate) and resuming from the snapshot's id is exact
// too. Bad `since` values are coded errors; a failing or invalid snapshot
// closes only its own stream, logged.
import t, { type Test } from 'tap'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { makeApp, SseClient } from './helpers/index.js'
import { closeClients } from './helpers/closing.js'

type Tap = Test
const Item = Type.Object({ n: Type.Integer() })

const seqOf = (id: string | undefined): number => Number(String(id).split('-')[1])

// ---------------------------------------------------------------- since

const BAD_SINCE: unknown[] = [1, 5, -1.5, 0.5, -10001, -1e9, '-3', Number.NaN, -Infinity, true, [-3]]

async function feedApp (t: Tap) {
  let feed!: ReturnType<typeof declare>
  const declare = (app: FastifyInstance) => app.sse.channel('feed/:id', { events: { item: Item } })
  const made = await makeApp(t, app => {
    feed = declare(app)
    // /s?topics=a,b&since=-3
    app.get('/s', (req, reply) => {
      const q = req.query as { topics?: string, since?: string }
      const topics = String(q.topics ?? 'a').split(',').map(id => feed.topic({ id }))
      return reply.sse({ subscribe: topics, ...(q.since === undefined ? {} : { since: Number(q.since) }) })
    })
    app.get('/bad/:i', (req, reply) => reply.sse({ subscribe: [feed.topic({ id: 'a' })], since: BAD_SINCE[Number((req.params as { i: string }).i)] as number }))
  })
  const publish = (id: string, n: number): Promise<string> => feed.topic({ id }).publish('item', { n })
  return { ...made, publish }
}

t.test('since: -3 gives the newest 3 events, in order, then the head event, then live', async t => {
  const { app, url, publish, logs, untilLog } = await feedApp(t)
  const ids: string[] = []
  for (let n = 1; n <= 10; n++) ids.push(await publish('a', n))
  const other = await publish('z', 99) // another topic moves the head past a's newest

  const c = await SseClient.open(url + '/s?topics=a&since=-3')
  await c.waitEvents(3)
  await c.until('head', () => c.heads.length === 1)
  t.same(c.events.map(e => e.id), ids.slice(-3), 'exactly the newest 3, in order')
  t.same(c.events.map(e => JSON.parse(e.data).n), [8, 9, 10])
  t.equal(c.heads[0].id, other, 'then the head event, with the hub\'s head id')
  // The head event comes after the replayed ones on the wire.
  t.ok(c.text.indexOf('event: sse-hub:head') > c.text.indexOf(`id: ${ids[9]}`), 'the head event follows them')
  const live = await publish('a', 11)
  await c.waitEvents(4)
  t.same(c.events.map(e => e.id), [...ids.slice(-3), live], 'then live, nothing twice')
  t.equal(c.lastEventId, live)
  t.equal(app.sse.stats().resumes, 0, 'not a resume')

  // since larger than history: what history has.
  const all = await SseClient.open(url + '/s?topics=a&since=-100')
  await all.waitEvents(11)
  await all.until('head', () => all.heads.length === 1)
  t.same(all.events.map(e => e.id), [...ids, live], 'since -100 on 11 events: all 11')

  // since on a topic with no history: just the head.
  const empty = await SseClient.open(url + '/s?topics=nothing&since=-3')
  await empty.until('head', () => empty.heads.length === 1)
  t.equal(empty.events.length, 0, 'an empty topic: no events, only the head')
  t.equal(empty.heads[0].id, live)

  // Without since: the head only.
  const plain = await SseClient.open(url + '/s?topics=a')
  await plain.until('head', () => plain.heads.length === 1)
  t.equal(plain.events.length, 0, 'no since: nothing replayed')
  await closeClients(logs, untilLog, c, all, empty, plain)
})

t.test('since on several topics: the newest N of each, merged by id', async t => {
  const { url, publish, logs, untilLog } = await feedApp(t)
  const byTopic: Record<string, string[]> = { a: [], b: [] }
  // Interleaved unevenly: a a b a b b b a b a
  for (const [i, topic] of ['a', 'a', 'b', 'a', 'b', 'b', 'b', 'a', 'b', 'a'].entries()) byTopic[topic].push(await publish(topic, i))
  const c = await SseClient.open(url + '/s?topics=a,b&since=-3')
  await c.waitEvents(6)
  await c.until('head', () => c.heads.length === 1)
  const expected = [...byTopic.a.slice(-3), ...byTopic.b.slice(-3)].sort((x, y) => seqOf(x) - seqOf(y))
  t.same(c.events.map(e => e.id), expected, 'newest 3 of a and of b, merged in id order')
  const seqs = c.events.map(e => seqOf(e.id))
  t.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), 'strictly increasing')
  const live = await publish('b', 100)
  await c.waitEvents(7)
  t.equal(c.events[6].id, live, 'then live')
  await closeClients(logs, untilLog, c)
})

t.test('a subscriber with Last-Event-ID ignores since and resumes', async t => {
  const { app, url, publish, logs, untilLog } = await feedApp(t)
  const ids: string[] = []
  for (let n = 1; n <= 10; n++) ids.push(await publish('a', n))
  const c = await SseClient.open(url + '/s?topics=a&since=-3', { 'last-event-id': ids[4] })
  await c.waitEvents(5)
  t.same(c.events.map(e => e.id), ids.slice(5), 'exactly the events after its id, not the newest 3')
  t.equal(c.heads.length, 0, 'no head event on a resume')
  const live = await publish('a', 11)
  await c.waitEvents(6)
  t.same(c.events.map(e => e.id), [...ids.slice(5), live])
  t.equal(app.sse.stats().resumes, 1)
  await closeClients(logs, untilLog, c)
})

t.test('invalid since: FST_ERR_SSEHUB_REPLY_OPTION_INVALID (500), no stream; the bounds are valid', async t => {
  const { app, url, logs, untilLog } = await feedApp(t)
  for (let i = 0; i < BAD_SINCE.length; i++) {
    const what = `since ${typeof BAD_SINCE[i] === 'string' ? JSON.stringify(BAD_SINCE[i]) : String(BAD_SINCE[i])}`
    const before = app.sse.stats()
    const res = await fetch(`${url}/bad/${i}`, { headers: { accept: 'text/event-stream' } })
    t.equal(res.status, 500, `${what}: 500`)
    t.match(res.headers.get('content-type'), /^application\/json/, `${what}: not an event stream`)
    const body = await res.json() as { code: string, message: string }
    t.equal(body.code, 'FST_ERR_SSEHUB_REPLY_OPTION_INVALID', `${what}: coded error`)
    t.match(body.message, /since/, `${what}: the message names the option`)
    t.equal(app.sse.stats().streamsOpened, before.streamsOpened, `${what}: no stream opened`)
  }
  for (const since of [-1, -10000]) {
    const c = await SseClient.open(`${url}/s?topics=a&since=${since}`)
    t.equal(c.status, 200, `since ${since} is valid`)
    await c.until('head', () => c.heads.length === 1)
    await closeClients(logs, untilLog, c)
  }
})

// ---------------------------------------------------------------- snapshot

t.test('snapshot under a steady publisher: snapshot + the increments after it always equals the server\'s state', async t => {
  const state = { total: 0 }
  let snapshots = 0
  let counter!: ReturnType<typeof declare>
  const declare = (app: FastifyInstance) => app.sse.channel('counter', {
    events: { inc: Type.Object({ by: Type.Integer({ minimum: 1 }) }), state: Type.Object({ total: Type.Integer() }) },
    snapshot: () => { snapshots++; return { event: 'state' as const, data: { total: state.total } } }
  })
  const { app, url, logs, untilLog } = await makeApp(t, app => {
    counter = declare(app)
    app.get('/s', (req, reply) => reply.sse({ subscribe: [counter] }))
  })
  // The publishing code updates the state and publishes in the same tick.
  const increment = (): Promise<string> => {
    const by = 1 + Math.floor(Math.random() * 5)
    state.total += by
    return counter.publish('inc', { by })
  }
  await increment()
  let last: Promise<string> = Promise.resolve('')
  let publishing = true
  const publisher = (async () => {
    while (publishing) {
      last = increment()
      await last
      await new Promise(resolve => setTimeout(resolve, 2))
    }
  })()

  // Clients join throughout: 5 waves of 6, each wave once the previous has its snapshot.
  const clients: SseClient[] = []
  for (let wave = 0; wave < 5; wave++) {
    const joined = await Promise.all(Array.from({ length: 6 }, () => SseClient.open(url + '/s')))
    await Promise.all(joined.map(c => c.waitEvents(1)))
    clients.push(...joined)
  }
  publishing = false
  await publisher
  const finalId = await last
  const finalTotal = state.total
  await Promise.all(clients.map(c => c.until('the last increment', () => c.lastEventId === finalId, 5_000)))

  t.equal(snapshots, clients.length, 'one snapshot per fresh subscriber')
  const snapIds = new Set<string>()
  let exact = 0
  for (const [i, c] of clients.entries()) {
    const [first, ...rest] = c.events
    if (first.event !== 'state' || c.heads.length !== 0) {
      t.fail(`client ${i}: the first event is ${first.event}, heads ${c.heads.length}`)
      continue
    }
    snapIds.add(first.id as string)
    const ids = rest.map(e => seqOf(e.id))
    const increasing = ids.every((s, k) => s > (k === 0 ? seqOf(first.id) : ids[k - 1]))
    const total = JSON.parse(first.data).total + rest.reduce((sum, e) => sum + JSON.parse(e.data).by, 0)
    if (!increasing || rest.some(e => e.event !== 'inc') || total !== finalTotal) {
      t.fail(`client ${i}: snapshot ${first.data} @${first.id} + ${rest.length} increments = ${total}, server has ${finalTotal}`)
    } else exact++
  }
  t.equal(exact, clients.length, `all ${clients.length} clients: snapshot + increments = ${finalTotal}, ids strictly increasing after the snapshot's`)
  t.ok(snapIds.size > 1, `the clients joined at different points (${snapIds.size} distinct snapshot ids)`)
  const incs = clients.map(c => c.events.length - 1)
  t.ok(Math.max(...incs) > Math.min(...incs), `they saw different numbers of increments (${Math.min(...incs)}..${Math.max(...incs)}, final id ${finalId})`)

  // Resume from a snapshot's id: exactly the increments after it.
  const donor = clients[Math.floor(clients.length / 2)]
  const snap = donor.events[0]
  const resumed = await SseClient.open(url + '/s', { 'last-event-id': snap.id as string })
  await resumed.until('the last increment', () => resumed.lastEventId === finalId)
  t.equal(snapshots, clients.length, 'a resume takes no snapshot')
  t.same(resumed.events.map(e => e.id), donor.events.slice(1).map(e => e.id), 'resuming from the snapshot\'s id replays exactly what followed it')
  t.equal(JSON.parse(snap.data).total + resumed.events.reduce((s, e) => s + JSON.parse(e.data).by, 0), finalTotal)
  t.equal(app.sse.stats().resets, 0, 'no reset anywhere')
  await closeClients(logs, untilLog, ...clients, resumed)
})

t.test('snapshot gets the request and the topic params; with no events yet its id resumes exactly', async t => {
  const seen: Array<{ params: Record<string, string>, user: unknown }> = []
  let room!: ReturnType<typeof declare>
  const declare = (app: FastifyInstance) => app.sse.channel('room/:roomId', {
    events: { msg: Type.Object({ text: Type.String() }), members: Type.Object({ list: Type.Array(Type.String()) }) },
    snapshot: async (request, params) => {
      seen.push({ params, user: request.headers['x-user'] })
      await new Promise(resolve => setTimeout(resolve, 10))
      return { event: 'members' as const, data: { list: ['ann', String(request.headers['x-user'])] } }
    }
  })
  const { url, logs, untilLog } = await makeApp(t, app => {
    room = declare(app)
    app.get('/r/:id', (req, reply) => reply.sse({ subscribe: [room.topic({ roomId: (req.params as { id: string }).id })] }))
  })
  const c = await SseClient.open(url + '/r/blue', { 'x-user': 'bob' })
  await c.waitEvents(1)
  t.same(seen, [{ params: { roomId: 'blue' }, user: 'bob' }])
  t.same(c.events[0].event, 'members')
  t.same(JSON.parse(c.events[0].data), { list: ['ann', 'bob'] }, 'an async snapshot is sent first')
  t.match(c.events[0].id, /^[a-z0-9]+-0$/, 'with the head id (seq 0: nothing published yet)')
  const id = await room.topic({ roomId: 'blue' }).publish('msg', { text: 'hi' })
  await c.waitEvents(2)
  t.same(c.events[1].id, id)
  const again = await SseClient.open(url + '/r/blue', { 'last-event-id': c.events[0].id as string })
  await again.waitEvents(1)
  t.same(again.events.map(e => e.id), [id], 'resuming from the snapshot id (seq 0) replays the event after it')
  await closeClients(logs, untilLog, c, again)
})

t.test('a snapshot that throws, rejects or is invalid closes only that stream, logged at level 50', async t => {
  const modes: Record<string, () => unknown> = {
    throw: () => { throw new Error('state store down') },
    reject: () => Promise.reject(new Error('state store down later')),
    unknownEvent: () => ({ event: 'nope', data: {} }),
    schema: () => ({ event: 'state', data: { total: 'many' } }),
    noEvent: () => ({ data: { total: 1 } }),
    null: () => null,
    string: () => 'state',
    unserialisable: () => ({ event: 'state', data: { total: 1n } }),
    ok: () => ({ event: 'state', data: { total: 7 } })
  }
  let feed!: ReturnType<typeof declare>
  const declare = (app: FastifyInstance) => app.sse.channel('snap/:mode', {
    events: { state: Type.Object({ total: Type.Integer() }), item: Item },
    snapshot: (_request, params) => modes[params.mode]() as { event: 'state', data: { total: number } }
  })
  const { app, url, logs, untilLog } = await makeApp(t, app => {
    feed = declare(app)
    app.get('/s/:mode', (req, reply) => reply.sse({ subscribe: [feed.topic({ mode: (req.params as { mode: string }).mode })] }))
  })
  const healthy = await SseClient.open(url + '/s/ok')
  await healthy.waitEvents(1)
  t.same(JSON.parse(healthy.events[0].data), { total: 7 })

  const reasons: string[] = []
  app.sse.on('disconnect', (_s, reason) => { reasons.push(reason) })
  for (const mode of Object.keys(modes).filter(m => m !== 'ok')) {
    const errorsBefore = logs.filter(l => l.level === 50).length
    const c = await SseClient.open(`${url}/s/${mode}`)
    t.equal(c.status, 200, `${mode}: opened`)
    t.equal(await c.waitEnd(3_000), 'end', `${mode}: a clean end`)
    t.same([c.events, c.heads], [[], []], `${mode}: no event, no head`)
    const line = await untilLog(`${mode}: an error logged`, l => l.level === 50 && logs.filter(x => x.level === 50).length > errorsBefore)
    t.ok(line, `${mode}: logged at level 50`)
  }
  t.equal(reasons.length, Object.keys(modes).length - 1, 'each bad one closed')
  t.equal(app.sse.stats().openStreams, 1, 'only the healthy stream is left')
  const id = await feed.topic({ mode: 'ok' }).publish('item', { n: 1 })
  await healthy.waitEvents(2)
  t.equal(healthy.events[1].id, id, 'the healthy stream still receives')
  t.equal(healthy.ending, null)
  await closeClients(logs, untilLog, healthy)
})
