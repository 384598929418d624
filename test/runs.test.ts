// Producer runs (issue 16): `fastify.sse.run()` publishes a generation in
// order and always ends it with one `end`; followers (`since: 'start'`,
// `until`) get all of it, continue exactly after a reconnect, end after the
// terminal event, get 204 once they have it and 404 when there is nothing to
// follow. Cancel reaches the producer's signal and fences it off. Runs on the
// memory backend, and on Redis with HUB_BACKEND=redis (the Redis suite).
import t from 'tap'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { makeApp, SseClient, type T } from './helpers/index.js'
import type { Run } from '../lib/index.js'

const events = {
  token: Type.Object({ text: Type.String() }),
  done: Type.Object({ reason: Type.String() })
}

interface Setup {
  app: FastifyInstance
  url: string
  runs: Map<string, Run>
  start: (id: string, tokens: string[], opts?: { gate?: Promise<void>, throwAt?: number, invalidAt?: number, noDone?: boolean }) => Promise<Run>
}

async function setup (t: T, plugin: Record<string, unknown> = {}, ttl = 60_000): Promise<Setup> {
  const runs = new Map<string, Run>()
  let generation: any
  const { app, url } = await makeApp(t, app => {
    generation = app.sse.channel('generations/:id', { events, history: { limit: 100_000, ttl } })
    app.sse.channel('other/:id', { events })
    app.get<{ Params: { id: string } }>('/generations/:id/stream', (req, reply) =>
      reply.sse({ subscribe: [generation.topic(req.params)], since: 'start', until: 'done' }))
    app.get<{ Params: { id: string } }>('/generations/:id/all', (req, reply) =>
      reply.sse({ subscribe: [generation.topic(req.params)], since: 'start' }))
    app.post<{ Params: { id: string } }>('/generations/:id/cancel', async (req) => ({ cancelled: await app.sse.cancel(generation.topic(req.params)) }))
  }, { plugin })
  const start: Setup['start'] = async (id, tokens, opts = {}) => {
    const run = app.sse.run(generation.topic({ id }), async function * (signal: AbortSignal) {
      for (let i = 0; i < tokens.length; i++) {
        if (i === opts.throwAt) throw new Error('model failed')
        if (i === opts.invalidAt) yield { event: 'token', data: { text: 42 } } as any
        if (opts.gate !== undefined && i === Math.floor(tokens.length / 2)) await opts.gate
        if (signal.aborted) return
        yield { event: 'token' as const, data: { text: tokens[i] } }
      }
      if (opts.noDone !== true) yield { event: 'done' as const, data: { reason: 'stop' } }
    })
    runs.set(id, run)
    await run.started
    return run
  }
  return { app, url, runs, start }
}

const texts = (c: SseClient): string[] => c.events.filter(e => e.event === 'token').map(e => JSON.parse(e.data).text)
const names = (c: SseClient): string[] => c.events.map(e => e.event)

function tokens (n: number): string[] {
  return Array.from({ length: n }, (_, i) => `t${i} `)
}

t.test('a follower from the start gets every token once, in order, then done, and the response ends', async t => {
  const { url, start } = await setup(t)
  let open!: () => void
  const gate = new Promise<void>(resolve => { open = resolve })
  const all = tokens(200)
  const run = await start('g1', all, { gate })
  const early = await SseClient.open(url + '/generations/g1/stream')
  t.equal(early.status, 200)
  await early.waitEvents(100)
  // A second viewer joins mid-generation: it gets the first half from history.
  const second = await SseClient.open(url + '/generations/g1/stream')
  await second.waitEvents(100)
  open()
  for (const c of [early, second]) {
    t.equal(await c.waitEnd(), 'end', 'the response ends after the terminal event')
    t.same(texts(c), all, 'every token, once, in order')
    t.equal(names(c).indexOf('done'), all.length, 'done right after the last token')
    t.ok(c.events.every((e, i) => i === 0 || Number(e.id?.split('-')[1]) > Number(c.events[i - 1].id?.split('-')[1])), 'ids strictly increase')
  }
  const outcome = await run.finished
  t.equal(outcome.reason, 'complete')
  // Without until, the hub's end closes the generation too.
  const all2 = await SseClient.open(url + '/generations/g1/all')
  await all2.waitEvents(all.length + 2)
  t.same(all2.events.at(-1)?.data, '{"reason":"complete"}', 'the last event is the hub\'s end')
  t.equal(all2.events.at(-1)?.event, 'end')
  t.equal(all2.events.at(-1)?.id, outcome.lastId, 'run.finished names the end event')
  all2.close()
})

t.test('a reconnect mid-generation continues exactly; after the end it replays the rest and ends; then 204', async t => {
  const { url, start } = await setup(t)
  let open!: () => void
  const gate = new Promise<void>(resolve => { open = resolve })
  const all = tokens(120)
  const run = await start('g2', all, { gate })
  const first = await SseClient.open(url + '/generations/g2/stream')
  await first.waitEvents(37)
  const cut = first.events[36]
  first.close()
  const again = await SseClient.open(url + '/generations/g2/stream', { 'last-event-id': cut.id as string })
  await again.waitEvents(60 - 37)
  open()
  t.equal(await again.waitEnd(), 'end')
  t.same(texts(again), all.slice(37), 'exactly the tokens after the last id: none missing, none doubled')
  await run.finished

  // After the end: a reconnect from mid-way replays the rest, then ends.
  const late = await SseClient.open(url + '/generations/g2/stream', { 'last-event-id': cut.id as string })
  t.equal(await late.waitEnd(), 'end')
  t.same(texts(late), all.slice(37))
  t.equal(late.events.at(-1)?.event, 'done')

  // What a native EventSource does next: reconnect with the id of the last event it got.
  const after = await SseClient.open(url + '/generations/g2/stream', { 'last-event-id': late.lastEventId as string })
  t.equal(after.status, 204, '204: nothing more, so EventSource stops reconnecting')
  after.close()
  // Without until, the end event follows done; its id is the last of the topic.
  const all2 = await SseClient.open(url + '/generations/g2/all', { 'last-event-id': late.lastEventId as string })
  await all2.waitEvents(1)
  t.equal(all2.events[0].event, 'end', 'the hub\'s end follows done')
  const endId = all2.events[0].id as string
  all2.close()
  const stop = await SseClient.open(url + '/generations/g2/stream', { 'last-event-id': endId })
  t.equal(stop.status, 204, '204 after the end event too')
  stop.close()
})

t.test('unknown and expired generations are 404 with a code; a finished one within its ttl replays whole', async t => {
  const { url, start } = await setup(t, {}, 400)
  const none = await fetch(url + '/generations/nope/stream')
  t.equal(none.status, 404)
  t.equal((await none.json()).code, 'FST_ERR_SSEHUB_STREAM_NOT_FOUND')

  const all = tokens(30)
  const run = await start('g3', all)
  await run.finished
  const whole = await SseClient.open(url + '/generations/g3/stream')
  t.equal(await whole.waitEnd(), 'end')
  t.same(texts(whole), all, 'replayed whole within the ttl')
  // Past the ttl (400 ms) the history is gone: 404, polled with a bound.
  const deadline = Date.now() + 5_000
  let status = 200
  while (status !== 404 && Date.now() < deadline) {
    const r = await fetch(url + '/generations/g3/stream', { signal: AbortSignal.timeout(2_000) })
    status = r.status
    await r.body?.cancel()
    if (status !== 404) await new Promise(resolve => setTimeout(resolve, 50))
  }
  t.equal(status, 404, 'expired: 404')
})

t.test('cancel reaches the producer, ends the run with end { cancelled }, and fences off later values', async t => {
  const { app, url, runs } = await setup(t)
  const channel = (app.sse as any).channels.get('generations/:id')
  let aborted = false
  let yieldedAfterCancel = 0
  let cancelled!: () => void
  const wasCancelled = new Promise<void>(resolve => { cancelled = resolve })
  const run = app.sse.run(channel.topic({ id: 'g4' }), async function * (signal: AbortSignal) {
    signal.addEventListener('abort', () => { aborted = true })
    for (let i = 0; i < 5; i++) yield { event: 'token' as const, data: { text: `a${i}` } }
    await wasCancelled
    // A producer that ignores its signal: what it yields now must never be published.
    for (let i = 0; i < 5; i++) {
      yieldedAfterCancel++
      yield { event: 'token' as const, data: { text: `late${i}` } }
    }
  })
  runs.set('g4', run)
  await run.started
  const c = await SseClient.open(url + '/generations/g4/stream')
  await c.waitEvents(5)
  const res = await fetch(url + '/generations/g4/cancel', { method: 'POST' })
  t.same(await res.json(), { cancelled: true })
  cancelled()
  t.equal(await c.waitEnd(), 'end')
  t.same(names(c), ['token', 'token', 'token', 'token', 'token', 'end'])
  t.equal(c.events.at(-1)?.data, '{"reason":"cancelled"}')
  const outcome = await run.finished
  t.equal(outcome.reason, 'cancelled')
  t.ok(aborted, 'the producer\'s signal aborted')
  t.ok(yieldedAfterCancel <= 1, 'the producer was stopped at its next value')
  const all = await SseClient.open(url + '/generations/g4/all')
  await all.waitEvents(6)
  await all.until('nothing after the end', () => true)
  t.equal(all.events.at(-1)?.event, 'end', 'nothing was published after the end')
  t.notOk(all.events.some(e => e.data.includes('late')))
  all.close()
  t.same(await (await fetch(url + '/generations/g4/cancel', { method: 'POST' })).json(), { cancelled: false }, 'a second cancel finds nothing running')
})

t.test('a producer that throws, or yields an invalid value, ends the run with end { error }', async t => {
  const { url, start } = await setup(t)
  const thrown = await start('g5', tokens(10), { throwAt: 4 })
  const outcome = await thrown.finished
  t.equal(outcome.reason, 'error')
  t.match(String(outcome.error), /model failed/)
  const c = await SseClient.open(url + '/generations/g5/stream')
  t.equal(await c.waitEnd(), 'end')
  t.same(texts(c), tokens(4))
  t.same(c.events.at(-1), { ...c.events.at(-1), event: 'end', data: '{"reason":"error"}' })

  const invalid = await start('g6', tokens(10), { invalidAt: 3 })
  const o2 = await invalid.finished
  t.equal(o2.reason, 'error')
  t.equal((o2.error as { code?: string }).code, 'FST_ERR_SSEHUB_PAYLOAD_INVALID', 'refused before anything was written')
  const c2 = await SseClient.open(url + '/generations/g6/stream')
  t.equal(await c2.waitEnd(), 'end')
  t.same(texts(c2), tokens(3))
  t.notOk(c2.text.includes('42'))
})

t.test('one run per topic; a new run may follow an ended one', async t => {
  const { start, app } = await setup(t)
  let open!: () => void
  const gate = new Promise<void>(resolve => { open = resolve })
  const first = await start('g7', tokens(4), { gate })
  await t.rejects(start('g7', tokens(2)), { code: 'FST_ERR_SSEHUB_RUN_ACTIVE' })
  open()
  await first.finished
  const second = await start('g7', tokens(2))
  t.equal((await second.finished).reason, 'complete')
  t.throws(() => app.sse.run({} as any, async function * () {}), { code: 'FST_ERR_SSEHUB_TOPIC_INVALID' })
})

t.test('a generation published in one turn goes out in a few writes per follower, not one per token', async t => {
  const { app, url } = await setup(t)
  const channel = (app.sse as any).channels.get('generations/:id')
  let go!: () => void
  const gate = new Promise<void>(resolve => { go = resolve })
  const run = app.sse.run(channel.topic({ id: 'g8' }), async function * () {
    yield { event: 'token' as const, data: { text: 'first' } }
    await gate
    for (let i = 0; i < 2_000; i++) yield { event: 'token' as const, data: { text: 'x' } }
    yield { event: 'done' as const, data: { reason: 'stop' } }
  })
  await run.started
  const c = await SseClient.open(url + '/generations/g8/stream')
  await c.waitEvents(1)
  const before = app.sse.stats().writes
  go()
  t.equal(await c.waitEnd(), 'end')
  t.equal(texts(c).length, 2_001)
  const writes = app.sse.stats().writes - before
  // One write per turn: on memory the whole burst is one turn; on Redis the
  // replies of a window of publishes arrive together (64 in flight).
  t.ok(writes * 20 <= 2_001, `2,001 events reached the follower in ${writes} writes (at least 20 events a write)`)
})

t.test('per-channel history: a generation outlives the plugin-wide history bound; other channels keep theirs', async t => {
  const { app, url, start } = await setup(t, { history: 10 })
  const all = tokens(500)
  await (await start('g9', all)).finished
  const c = await SseClient.open(url + '/generations/g9/stream')
  t.equal(await c.waitEnd(), 'end')
  t.same(texts(c), all, 'all 500 tokens, with the plugin keeping 10 per topic')
  const other = (app.sse as any).channels.get('other/:id').topic({ id: 'x' })
  for (let i = 0; i < 50; i++) await other.publish('token', { text: `o${i}` })
  const latest = await (app.sse as any).backend.latest('other/x', 1_000)
  t.equal(latest.length, 10, 'another channel keeps the plugin\'s 10')
})

t.test('until names events of the followed channels; since takes \'start\'', async t => {
  const { app, url } = await makeApp(t, app => {
    const g = app.sse.channel('g/:id', { events })
    app.get('/bad-until', (req, reply) => reply.sse({ subscribe: [g.topic({ id: 'a' })], until: 'nope' }))
    app.get('/bad-since', (req, reply) => reply.sse({ subscribe: [g.topic({ id: 'a' })], since: 'begin' as any }))
  })
  for (const [path, option] of [['/bad-until', 'until'], ['/bad-since', 'since']]) {
    const r = await fetch(url + path)
    t.equal(r.status, 500)
    const body = await r.json()
    t.equal(body.code, 'FST_ERR_SSEHUB_REPLY_OPTION_INVALID', `${option}: coded`)
  }
  t.throws(() => app.sse.channel('h', { events: { end: Type.Object({}) } }), { code: 'FST_ERR_SSEHUB_CHANNEL_INVALID' }, '`end` is the hub\'s own event')
  t.throws(() => app.sse.channel('k', { events, history: { limit: -1 } }), { code: 'FST_ERR_SSEHUB_CHANNEL_INVALID' })
  t.throws(() => app.sse.channel('k2', { events, history: { maxAge: 5 } as any }), { code: 'FST_ERR_SSEHUB_CHANNEL_INVALID' })
})

t.test('a follow from the start of a run whose first events history dropped gets reset first, then the rest', async t => {
  let short: any
  const { app, url } = await makeApp(t, app => {
    short = app.sse.channel('short/:id', { events, history: { limit: 10 } })
    app.get<{ Params: { id: string } }>('/short/:id', (req, reply) => reply.sse({ subscribe: [short.topic(req.params)], since: 'start', until: 'done' }))
  })
  const run = app.sse.run(short.topic({ id: 'x' }), function * () {
    for (let i = 0; i < 20; i++) yield { event: 'token' as const, data: { text: `t${i} ` } }
    yield { event: 'done' as const, data: { reason: 'stop' } }
  })
  await run.finished
  const c = await SseClient.open(url + '/short/x')
  t.equal(await c.waitEnd(), 'end')
  t.equal(c.events[0].event, 'reset', 'reset first')
  t.match(JSON.parse(c.events[0].data), { reason: 'trimmed' })
  const kept = c.events.slice(1)
  t.equal(Number(c.events[0].id?.split('-')[1]), Number(kept[0].id?.split('-')[1]) - 1, 'its id sits just before what is left: a resume from it gets exactly that')
  t.same(kept.map(e => e.event), [...Array(8).fill('token'), 'done'], 'then what history kept, in order: the last 10 events of the run minus its end')
  // A run that history kept whole gets no reset.
  const whole = app.sse.run(short.topic({ id: 'y' }), function * () { yield { event: 'done' as const, data: { reason: 'stop' } } })
  await whole.finished
  const w = await SseClient.open(url + '/short/y')
  t.equal(await w.waitEnd(), 'end')
  t.same(w.events.map(e => e.event), ['done'])
})
