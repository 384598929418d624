// follow() from the client entry, in Node with a real EventSource (the
// `eventsource` package) against a real server running producer runs:
// it gets every token and resolves on the terminal event (the route's
// `until`, or the hub's `end` with its reason) and closes the EventSource;
// with a storage key it keeps the last id, resumes exactly after it (nothing
// missing or doubled) and clears it at the end; a 204 resolves as already
// finished; a 404 rejects with FST_ERR_SSEHUB_STREAM_NOT_FOUND, told apart
// from other answers and from an unreachable server.
import t from 'tap'
import { Type } from '@sinclair/typebox'
import { EventSource } from 'eventsource'
import type { FastifyInstance } from 'fastify'
import { follow, FollowError, type FollowOptions, type StorageLike } from '../lib/client.js'
import type { Channel, Run } from '../lib/index.js'
import { makeApp, type T } from './helpers/index.js'
import { until } from './helpers/demo.js'

const events = {
  token: Type.Object({ text: Type.String() }),
  done: Type.Object({ reason: Type.String() })
}
type Generation = Channel<'generations/:id', typeof events>

class MemoryStorage implements StorageLike {
  readonly map = new Map<string, string>()
  readonly writes: string[] = []
  getItem (key: string): string | null { return this.map.get(key) ?? null }
  setItem (key: string, value: string): void { this.writes.push(value); this.map.set(key, value) }
  removeItem (key: string): void { this.map.delete(key) }
}

interface Setup {
  app: FastifyInstance
  url: string
  requests: Array<{ url: string, lastEventId: string | undefined }>
  /** Starts a run of `tokens`; with `gate`, the second half waits for it. */
  start: (id: string, tokens: string[], gate?: Promise<void>) => Promise<Run>
}

async function setup (t: T, ttl = 60_000): Promise<Setup> {
  let generation!: Generation
  const requests: Setup['requests'] = []
  let flaky = 0
  const { app, url } = await makeApp(t, app => {
    generation = app.sse.channel('generations/:id', { events, history: { limit: 10_000, ttl }, authorize: (req, params) => params.id !== 'secret' })
    app.addHook('onRequest', async (req) => {
      requests.push({ url: req.url, lastEventId: (req.headers['last-event-id'] as string | undefined) ?? (req.query as Record<string, string>).lastEventId })
    })
    app.get<{ Params: { id: string } }>('/g/:id/stream', (req, reply) =>
      reply.sse({ subscribe: [generation.topic(req.params)], since: 'start', until: 'done' }))
    app.get<{ Params: { id: string } }>('/g/:id/all', (req, reply) =>
      reply.sse({ subscribe: [generation.topic(req.params)], since: 'start' }))
    // Like a proxy while the app restarts: the first answers are 502s.
    app.get<{ Params: { id: string }, Querystring: { fail: string } }>('/g/:id/flaky', (req, reply) => {
      if (flaky++ < Number(req.query.fail)) return reply.code(502).send({ error: 'bad gateway' })
      reply.sse({ subscribe: [generation.topic(req.params)], since: 'start', until: 'done' })
    })
  }, { plugin: { retry: 50, retryJitter: 0 } })
  const start: Setup['start'] = async (id, tokens, gate) => {
    const run = app.sse.run(generation.topic({ id }), async function * () {
      for (let i = 0; i < tokens.length; i++) {
        if (gate !== undefined && i === Math.floor(tokens.length / 2)) await gate
        yield { event: 'token' as const, data: { text: tokens[i] } }
      }
      yield { event: 'done' as const, data: { reason: 'stop' } }
    })
    await run.started
    return run
  }
  return { app, url, requests, start }
}

const tokens = (n: number): string[] => Array.from({ length: n }, (_, i) => `t${i} `)

/** A follow with typed handlers that collect the text; closed at teardown. */
function text (t: T, url: string, options: FollowOptions<Generation> = {}) {
  const got: string[] = []
  const ids: string[] = []
  const f = follow<Generation>(url, {
    token: (data, meta) => { got.push(data.text); ids.push(meta.id) },
    done: (data) => { got.push(`[${data.reason}]`) }
  }, { EventSource, until: 'done', reconnect: { delay: 20, maxDelay: 100 }, ...options })
  t.teardown(() => f.close())
  return { f, got, ids }
}

t.test('follows a generation to its end: every token once, in order; resolves on done and closes', async t => {
  const { url, start, requests } = await setup(t)
  let open!: () => void
  const gate = new Promise<void>(resolve => { open = resolve })
  const all = tokens(200)
  const run = await start('a', all, gate)
  const { f, got } = text(t, url + '/g/a/stream')
  t.equal(f.resumedFrom, undefined, 'from the start')
  await until('the first half', () => got.length === 100)
  open()
  const end = await f.finished
  t.equal(end.event, 'done')
  t.same(end.data, { reason: 'stop' }, 'resolves with the terminal event\'s typed data')
  t.match(end.id, /^[0-9a-z]+-\d+$/)
  t.same(got, [...all, '[stop]'], 'every token once, in order, then the done handler ran')
  t.equal(f.state, 'closed', 'the EventSource is closed: no reconnection')
  t.equal(f.lastEventId, end.id)
  t.equal(requests.filter(r => r.url.startsWith('/g/a/')).length, 1, 'one request')
  t.equal((await run.finished).reason, 'complete')
})

t.test('storageKey: the last id is kept, a new follow resumes exactly after it, and it is cleared at the end', async t => {
  const { url, start, requests } = await setup(t)
  let open!: () => void
  const gate = new Promise<void>(resolve => { open = resolve })
  const all = tokens(120)
  await start('b', all, gate)
  const storage = new MemoryStorage()
  const first = text(t, url + '/g/b/stream', { storage, storageKey: 'gen:b' })
  await until('the first half', () => first.got.length === 60)
  t.equal(storage.getItem('gen:b'), first.ids.at(-1), 'the last token\'s id is stored')
  t.ok(storage.writes.length >= 60, 'stored after every event')
  // A reload: this page goes away without a word; the next one starts from storage.
  first.f.close()
  await t.rejects(first.f.finished, { code: 'FST_ERR_SSEHUB_CLIENT_CLOSED' }, 'close() rejects finished, coded')
  t.equal(storage.getItem('gen:b'), first.ids.at(-1), 'close() keeps the stored id')

  const second = text(t, url + '/g/b/stream', { storage, storageKey: 'gen:b' })
  t.equal(second.f.resumedFrom, first.ids.at(-1), 'resumes from the stored id')
  t.match(second.f.url, `lastEventId=${encodeURIComponent(first.ids.at(-1) as string)}`, 'sent as the lastEventId query parameter')
  open()
  const end = await second.f.finished
  t.equal(end.event, 'done')
  t.same([...first.got, ...second.got], [...all, '[stop]'], 'both pages together: every token exactly once')
  t.equal(storage.getItem('gen:b'), null, 'cleared at the end')
  t.equal(requests.at(-1)?.lastEventId, first.ids.at(-1), 'the server got the stored id')

  // A follow after the end, with nothing stored: the whole generation from history, then done.
  const again = text(t, url + '/g/b/stream', { storage, storageKey: 'gen:b' })
  t.equal((await again.f.finished).event, 'done')
  t.same(again.got, [...all, '[stop]'], 'replayed whole within the ttl')
})

t.test('204: an id that already covers the end resolves as already finished, and clears storage', async t => {
  const { url, start } = await setup(t)
  await (await start('c', tokens(5))).finished
  const whole = text(t, url + '/g/c/stream')
  const done = await whole.f.finished
  const storage = new MemoryStorage()
  storage.setItem('gen:c', done.id as string)
  const again = text(t, url + '/g/c/stream', { storage, storageKey: 'gen:c' })
  const end = await again.f.finished
  t.same(end, { event: null, data: null, id: done.id }, 'event null: finished before this follow')
  t.same(again.got, [], 'no handler ran')
  t.equal(again.f.state, 'closed')
  t.equal(storage.getItem('gen:c'), null, 'storage cleared')
})

t.test('the hub\'s end: resolves with its reason (a route without until, a cancelled run)', async t => {
  const { url, start } = await setup(t)
  await (await start('d', tokens(3))).finished
  const got: string[] = []
  const f = follow<Generation>(url + '/g/d/all', { token: (d) => { got.push(d.text) } }, { EventSource })
  t.teardown(() => f.close())
  t.same(await f.finished, { event: 'end', data: { reason: 'complete' }, id: f.lastEventId }, 'end { complete } after done, without until')
  t.same(got, tokens(3))

  let open!: () => void
  const gate = new Promise<void>(resolve => { open = resolve })
  t.teardown(open)
  const run = await start('e', tokens(10), gate)
  const c = text(t, url + '/g/e/stream')
  await until('half', () => c.got.length === 5)
  await run.cancel()
  const end = await c.f.finished
  t.match(end, { event: 'end', data: { reason: 'cancelled' } }, 'a cancel reaches the follower as end { cancelled }')
  t.same(c.got, tokens(5))
})

t.test('404 rejects with FST_ERR_SSEHUB_STREAM_NOT_FOUND (unknown or expired) and clears storage; 403 is told apart', async t => {
  const { url, start } = await setup(t, 300)
  const storage = new MemoryStorage()
  storage.setItem('gen:none', 'zz-1')
  const none = text(t, url + '/g/none/stream', { storage, storageKey: 'gen:none' })
  const err = await none.f.finished.then(() => null, (e: unknown) => e)
  t.ok(err instanceof FollowError, 'a FollowError')
  t.match(err, { code: 'FST_ERR_SSEHUB_STREAM_NOT_FOUND', status: 404, body: { code: 'FST_ERR_SSEHUB_STREAM_NOT_FOUND' } })
  t.match((err as Error).message, /^fastify-sse-hub\/client: /)
  t.equal(storage.getItem('gen:none'), null, 'a stale id is removed')
  t.equal(none.f.state, 'closed')

  // Expired: the ttl (300 ms) passes after the end. Polled with a bound.
  await (await start('x', tokens(3))).finished
  let code = ''
  const deadline = Date.now() + 5_000
  while (code !== 'FST_ERR_SSEHUB_STREAM_NOT_FOUND' && Date.now() < deadline) {
    const f = text(t, url + '/g/x/stream')
    code = await f.f.finished.then(() => 'finished', (e: FollowError) => e.code)
  }
  t.equal(code, 'FST_ERR_SSEHUB_STREAM_NOT_FOUND', 'expired: the same code')

  const forbidden = text(t, url + '/g/secret/stream')
  await t.rejects(forbidden.f.finished, { code: 'FST_ERR_SSEHUB_FORBIDDEN', status: 403 }, '403: the hub\'s code')
})

t.test('a proxy\'s 502 is transient: the follow tries again and completes; with reconnect: false it rejects, network told apart', async t => {
  const { url, start, requests } = await setup(t)
  await (await start('f', tokens(20))).finished
  // The EventSource's request and the probe get 502, the next EventSource the stream.
  const flaky = text(t, url + '/g/f/flaky?fail=2')
  t.equal((await flaky.f.finished).event, 'done')
  t.same(flaky.got, [...tokens(20), '[stop]'])
  t.equal(requests.filter(r => r.url.startsWith('/g/f/flaky')).length, 3, 'EventSource, probe, EventSource')

  const once = text(t, url + '/g/f/flaky?fail=100', { reconnect: false })
  await t.rejects(once.f.finished, { code: 'FST_ERR_SSEHUB_CLIENT_HTTP', status: 502 }, 'reconnect: false: the 502 rejects')

  const unreachable = text(t, url + '/g/f/flaky?fail=100', {
    reconnect: false,
    fetch: async () => { throw new TypeError('fetch failed') }
  })
  await t.rejects(unreachable.f.finished, { code: 'FST_ERR_SSEHUB_CLIENT_NETWORK', status: null }, 'unreachable: a network error, not a 404')
})

t.test('checks its options before connecting', async t => {
  const bad = [
    [{ until: 3 }, /options.until/],
    [{ storageKey: '' }, /storageKey/],
    [{ storageKey: 'k' }, /no sessionStorage here/]
  ] as const
  for (const [options, message] of bad) {
    t.throws(() => follow<Generation>('http://127.0.0.1:9/x', {}, { EventSource, ...options } as FollowOptions<Generation>), message)
  }
  t.throws(() => follow<Generation>('http://127.0.0.1:9/x', { done: 1 } as never, { EventSource, until: 'done' }), /handler of "done"/)
})

// A follow from the start of a generation whose first events history has
// dropped (the channel's `limit` or `bytes`) gets a `reset` (trimmed) first,
// as a resume across a trimmed gap does, never the tail as if it were all.
t.test('a follow from the start of a trimmed generation is told (reset), not given the tail silently', async t => {
  let generation!: Generation
  const { app, url } = await makeApp(t, app => {
    generation = app.sse.channel('generations/:id', { events, history: { limit: 10 } })
    app.get<{ Params: { id: string } }>('/g/:id/stream', (req, reply) =>
      reply.sse({ subscribe: [generation.topic(req.params)], since: 'start', until: 'done' }))
  })
  const run = app.sse.run(generation.topic({ id: 't' }), async function * () {
    for (let i = 0; i < 20; i++) yield { event: 'token' as const, data: { text: `t${i} ` } }
    yield { event: 'done' as const, data: { reason: 'stop' } }
  })
  await run.finished
  const resets: unknown[] = []
  const { f, got } = text(t, url + '/g/t/stream', { onReset: (info) => resets.push(info) })
  await f.finished
  t.equal(resets.length, 1, `the follower learns that the start is gone (got ${got.length - 1} tokens from ${got[0]})`)
  t.match(resets[0], { reason: 'trimmed' })
  t.notOk(got.includes('t0 '), 'the start is gone indeed: the reset is what says so')
})
