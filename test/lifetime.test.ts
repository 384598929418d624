// Stream lifetime and re-auth (issue 8): a stream lives at most maxLifetime
// (the shorter of the plugin's and the reply's), then ends cleanly with a
// jittered `retry:`; the client's reconnect goes through the onRequest auth
// hook again and resumes exactly what was published while it was away; a
// revoked token is refused. One shared sweep timer, no timer per stream.
import t, { type Test } from 'tap'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { makeApp, SseClient, finalRetry } from './helpers/index.js'
import { closeClients } from './helpers/closing.js'
import { trackLibTimers } from './helpers/timers.js'

const RETRY = 1_000
const JITTER = 500
const Item = Type.Object({ n: Type.Number() })

/** An app with a token-checking onRequest hook (counting its calls) and a news channel. */
async function authApp (t: Test, plugin: Record<string, unknown>) {
  const tokens = new Set(['good', 'other'])
  const auth = { calls: 0 }
  let news!: ReturnType<typeof declare>
  const declare = (app: FastifyInstance) => app.sse.channel('news', { events: { item: Item } })
  const bad: unknown[] = [0, -1, 1.5, 2 ** 31, '400', Number.NaN, Infinity, null, true]
  const made = await makeApp(t, app => {
    news = declare(app)
    app.addHook('onRequest', async (req, reply) => {
      if (!req.url.startsWith('/s')) return
      auth.calls++
      const token = String(req.headers.authorization ?? '').replace(/^Bearer /, '')
      if (!tokens.has(token)) return reply.code(401).send({ error: 'bad token' })
    })
    // ?life=N gives the reply its own maxLifetime; without it, the plugin's applies.
    app.get('/s', (req, reply) => {
      const life = (req.query as { life?: string }).life
      return reply.sse({ subscribe: [news], ...(life === undefined ? {} : { maxLifetime: Number(life) }) })
    })
    app.get('/s/bad/:i', (req, reply) => reply.sse({ subscribe: [news], maxLifetime: bad[Number((req.params as { i: string }).i)] as number }))
  }, { plugin: { retry: RETRY, retryJitter: JITTER, ...plugin } })
  return { ...made, tokens, auth, bad, news: () => news }
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

t.test('a stream past its maxLifetime ends cleanly with a jittered retry; the reconnect re-authenticates and resumes exactly', async t => {
  const { app, url, auth, tokens, news, logs, untilLog } = await authApp(t, { maxLifetime: 60_000 })

  const opened = Date.now()
  const c1 = await SseClient.open(url + '/s?life=400', bearer('good'))
  t.equal(c1.status, 200)
  t.equal(auth.calls, 1, 'the open went through the auth hook')
  await c1.until('head', () => c1.heads.length === 1)
  const before = [await news().publish('item', { n: 1 }), await news().publish('item', { n: 2 })]
  await c1.waitEvents(2)
  t.same(c1.events.map(e => e.id), before)

  t.equal(await c1.waitEnd(3_000), 'end', 'the body ended cleanly, not reset')
  const lived = Date.now() - opened
  t.ok(lived >= 400, `it lived at least its 400 ms (${lived} ms)`)
  t.ok(lived < 2_000, `and ended long before the plugin's 60 s (${lived} ms)`)
  const retry = finalRetry(c1)
  t.not(retry, null, 'the last frame is a retry:')
  t.ok(retry! >= RETRY && retry! <= RETRY + JITTER, `retry ${retry} in [${RETRY}, ${RETRY + JITTER}]`)
  t.equal(c1.retries.length, 2, 'the opening retry and the closing one')
  t.equal(c1.events.length, 2, 'no extra event at expiry')
  t.equal(app.sse.stats().expired, 1, 'stats.expired counted it')
  await untilLog('the stream closed as expired', l => l.msg === 'sse stream closed' && l.reason === 'expired')
  t.equal(app.sse.stats().openStreams, 0)

  // While the client is away.
  const missed = [await news().publish('item', { n: 3 }), await news().publish('item', { n: 4 }), await news().publish('item', { n: 5 })]
  const resumesBefore = app.sse.stats().resumes
  const c2 = await SseClient.open(url + '/s?life=400', { ...bearer('good'), 'last-event-id': c1.lastEventId! })
  t.equal(c2.status, 200)
  t.equal(auth.calls, 2, 'the reconnect went through the auth hook again')
  await c2.waitEvents(3)
  const live = await news().publish('item', { n: 6 })
  await c2.waitEvents(4)
  t.same(c2.events.map(e => e.id), [...missed, live], 'exactly the missed events, once each, in order, then live')
  t.same(c2.events.map(e => JSON.parse(e.data).n), [3, 4, 5, 6])
  t.notOk(c2.events.some(e => e.event === 'reset'), 'no reset')
  t.equal(c2.heads.length, 0, 'a resume gets no head event')
  t.equal(app.sse.stats().resumes, resumesBefore + 1, 'counted as a resume')
  t.equal(await c2.waitEnd(3_000), 'end', 'the resumed stream expires too')
  t.equal(app.sse.stats().expired, 2)

  // The token is revoked while the client is away: its reconnect is refused.
  tokens.delete('good')
  const opensBefore = app.sse.stats().streamsOpened
  const res = await fetch(url + '/s?life=400', { headers: { accept: 'text/event-stream', ...bearer('good'), 'last-event-id': c2.lastEventId! } })
  t.equal(res.status, 401, 'the revoked token is refused by the hook')
  t.match(res.headers.get('content-type'), /^application\/json/)
  await res.body?.cancel()
  t.equal(auth.calls, 3)
  t.equal(app.sse.stats().streamsOpened, opensBefore, 'no stream opened for it')
  await closeClients(logs, untilLog, c1, c2)
})

t.test('the shorter lifetime wins: the reply\'s under the plugin\'s, the plugin\'s under the reply\'s, the plugin\'s alone', async t => {
  const { app, url, logs, untilLog } = await authApp(t, { maxLifetime: 300 })
  const cases: Array<[string, string, number]> = [
    ['plugin 300 alone', '/s', 300],
    ['reply 60 s under plugin 300', '/s?life=60000', 300],
    ['reply 200 over plugin 300', '/s?life=200', 200]
  ]
  for (const [what, path, expected] of cases) {
    const opened = Date.now()
    const c = await SseClient.open(url + path, bearer('good'))
    t.equal(c.status, 200, `${what}: opened`)
    t.equal(await c.waitEnd(3_000), 'end', `${what}: clean end`)
    const lived = Date.now() - opened
    // The shared sweep runs every 250 ms, so an end comes at most ~250 ms late.
    t.ok(lived >= expected && lived < expected + 1_000, `${what}: lived ${lived} ms, expected ${expected}..${expected + 1_000}`)
    const retry = finalRetry(c)
    t.ok(retry !== null && retry >= RETRY && retry <= RETRY + JITTER, `${what}: ends with retry ${retry}`)
  }
  t.equal(app.sse.stats().expired, 3, 'stats.expired counted all three')
  await closeClients(logs, untilLog)
})

t.test('without any maxLifetime a stream does not expire', async t => {
  const { app, url, news, logs, untilLog } = await authApp(t, {})
  const c = await SseClient.open(url + '/s', bearer('good'))
  await c.until('head', () => c.heads.length === 1)
  // Another stream that does expire marks time: after it has ended, the first is still open.
  const marker = await SseClient.open(url + '/s?life=300', bearer('good'))
  t.equal(await marker.waitEnd(3_000), 'end')
  const id = await news().publish('item', { n: 1 })
  await c.waitEvents(1)
  t.equal(c.events[0].id, id, 'still open and receiving after the other stream expired')
  t.equal(c.ending, null)
  t.equal(app.sse.stats().expired, 1)
  await closeClients(logs, untilLog, c, marker)
})

t.test('invalid per-stream maxLifetime: FST_ERR_SSEHUB_REPLY_OPTION_INVALID, 500, no stream', async t => {
  const { app, url, bad } = await authApp(t, { maxLifetime: 60_000 })
  for (let i = 0; i < bad.length; i++) {
    const before = app.sse.stats()
    const res = await fetch(`${url}/s/bad/${i}`, { headers: { accept: 'text/event-stream', ...bearer('good') } })
    const what = `maxLifetime ${typeof bad[i] === 'string' ? JSON.stringify(bad[i]) : String(bad[i])}`
    t.equal(res.status, 500, `${what}: 500`)
    t.match(res.headers.get('content-type'), /^application\/json/, `${what}: not an event stream`)
    const body = await res.json() as { code: string, message: string }
    t.equal(body.code, 'FST_ERR_SSEHUB_REPLY_OPTION_INVALID', `${what}: coded error`)
    t.match(body.message, /maxLifetime/, `${what}: the message names the option`)
    const after = app.sse.stats()
    t.equal(after.streamsOpened, before.streamsOpened, `${what}: no stream opened`)
    t.equal(after.subscriptions, 0, `${what}: no subscription`)
  }
})

t.test('no timer per stream: 100 streams with lifetimes add at most 2 timers (heartbeat + the shared sweep)', async t => {
  const { app, url, logs, untilLog } = await authApp(t, {})
  const N = 100
  const timers = trackLibTimers()
  t.teardown(() => timers.stop())
  t.equal(timers.live(), 0, 'no timer of the hub runs with no stream open')
  // Counted on the server at the moment the last stream is admitted: every one then holds its deadline.
  let connects = 0
  let atLast = -1
  app.sse.on('connect', () => { if (++connects === N) atLast = timers.live() })

  const clients = await Promise.all(Array.from({ length: N }, () => SseClient.open(url + '/s?life=600', bearer('good'))))
  await Promise.all(clients.map(c => c.until('head', () => c.heads.length === 1, 3_000)))
  t.equal(connects, N, `${N} admitted`)
  t.ok(atLast >= 1, `the hub's timers are seen (${atLast}), so the count is meaningful`)
  t.ok(atLast <= 2, `timers of lib/ alive with ${N} streams with lifetimes: ${atLast} (at most heartbeat + sweep)`)

  const ends = await Promise.all(clients.map(c => c.waitEnd(5_000)))
  t.ok(ends.every(e => e === 'end'), 'every one ended cleanly')
  t.ok(clients.every(c => { const r = finalRetry(c); return r !== null && r >= RETRY && r <= RETRY + JITTER }), 'each with a jittered retry in range')
  const retries = new Set(clients.map(finalRetry))
  t.ok(retries.size > 1, `the retries are jittered (${retries.size} distinct values)`)
  t.equal(app.sse.stats().expired, N, 'stats.expired counts all')
  t.equal(app.sse.stats().openStreams, 0)
  await untilLog('all closed on the server', () => logs.filter(l => l.msg === 'sse stream closed' && l.reason === 'expired').length === N)
  t.equal(timers.live(), 0, 'the sweep and heartbeat timers are cleared with the last stream')
})
