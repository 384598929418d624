// Per-client caps (issue 8): maxStreamsPerClient limits the open streams of
// one client key (the request IP by default, or clientKey(request)); past it
// a new stream gets 200 text/event-stream with a retry: backoff and ends at
// once (never a status that makes EventSource give up), counted as
// shedPerClient. A closed stream frees its slot; streams being authorised
// count from admission, so a burst cannot overshoot; a request that fails
// or is refused gives its slot back.
import t, { type Test } from 'tap'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { makeApp, SseClient } from './helpers/index.js'
import { closeClients } from './helpers/closing.js'

const RETRY = 1_000
const SHUTDOWN_JITTER = 500
const Item = Type.Object({ n: Type.Number() })

type Tap = Test

/**
 * An app capped at `cap` streams per client. /s streams news; `authorize`
 * decides for the news channel (by default, always true).
 */
async function capApp (t: Tap, cap: number, extra: {
  clientKey?: (request: FastifyRequest) => string
  authorize?: (request: FastifyRequest) => boolean | Promise<boolean>
} = {}) {
  let news!: ReturnType<typeof declare>
  const declare = (app: FastifyInstance) => app.sse.channel('news', {
    events: { item: Item },
    ...(extra.authorize === undefined ? {} : { authorize: (request: FastifyRequest) => (extra.authorize as (r: FastifyRequest) => boolean | Promise<boolean>)(request) })
  })
  const made = await makeApp(t, app => {
    news = declare(app)
    app.get('/s', (req, reply) => {
      const { tag, life } = req.query as { tag?: string, life?: string }
      return reply.sse({ subscribe: [news], ...(tag === undefined ? {} : { tags: [tag] }), ...(life === undefined ? {} : { maxLifetime: Number(life) }) })
    })
  }, {
    plugin: {
      retry: RETRY,
      retryJitter: 0,
      shutdownJitter: SHUTDOWN_JITTER,
      maxStreamsPerClient: cap,
      ...(extra.clientKey === undefined ? {} : { clientKey: extra.clientKey })
    }
  })
  const connects = { now: 0, max: 0, total: 0 }
  made.app.sse.on('connect', () => { connects.total++; connects.max = Math.max(connects.max, ++connects.now) })
  made.app.sse.on('disconnect', () => { connects.now-- })
  return { ...made, connects, news: () => news }
}

async function openReady (url: string, headers: Record<string, string> = {}): Promise<SseClient> {
  const c = await SseClient.open(url, headers)
  await c.until('head', () => c.heads.length === 1)
  return c
}

/** Asserts that `c` was turned away the EventSource-friendly way. */
async function expectShed (t: Tap, c: SseClient, what: string): Promise<void> {
  t.equal(c.status, 200, `${what}: 200, not a status that makes EventSource give up`)
  t.match(c.headers['content-type'], /^text\/event-stream/, `${what}: an event stream`)
  t.equal(await c.waitEnd(3_000), 'end', `${what}: ends at once, cleanly`)
  // The opening frame's retry (retry + retryJitter, 0 here) may come first; the last one is what the client adopts.
  const last = c.retries.at(-1)
  t.ok(last !== undefined && last >= RETRY && last <= RETRY + SHUTDOWN_JITTER, `${what}: retry ${last} in [${RETRY}, ${RETRY + SHUTDOWN_JITTER}]`)
  t.match(c.text, /retry: \d+\n\n$/, `${what}: the body ends with the retry:`)
  t.equal(c.heads.length + c.events.length, 0, `${what}: no head, no event`)
}

t.test('default key (the IP): the third stream from 127.0.0.1 is shed with a retry; a closed one frees its slot', async t => {
  const { app, url, news, logs, untilLog, connects } = await capApp(t, 2)
  const a = await openReady(url + '/s')
  const b = await openReady(url + '/s')
  const c = await SseClient.open(url + '/s')
  await expectShed(t, c, 'third')
  let s = app.sse.stats()
  t.equal(s.shedPerClient, 1, 'stats.shedPerClient')
  t.equal(s.shed, 0, 'not counted as maxConnections shedding')
  t.equal(s.openStreams, 2)
  t.equal(connects.total, 2, 'the shed stream was never announced')

  const id = await news().publish('item', { n: 1 })
  await a.waitEvents(1)
  await b.waitEvents(1)
  t.same([a.events[0].id, b.events[0].id], [id, id], 'the admitted two are unaffected')

  const d = await SseClient.open(url + '/s')
  await expectShed(t, d, 'fourth, still over')
  t.equal(app.sse.stats().shedPerClient, 2)

  await closeClients(logs, untilLog, a)
  const e = await openReady(url + '/s')
  t.equal(e.status, 200)
  t.equal(e.ending, null, 'after one closed, a new one is admitted')
  s = app.sse.stats()
  t.equal(s.openStreams, 2)
  t.equal(s.shedPerClient, 2)
  const f = await SseClient.open(url + '/s')
  await expectShed(t, f, 'and the cap holds again')
  t.equal(connects.max, 2, 'never more than 2 open at once')
  await closeClients(logs, untilLog, a, b, e)
})

t.test('custom clientKey (x-user header): separate budgets per user', async t => {
  const { app, url, logs, untilLog } = await capApp(t, 2, { clientKey: req => String(req.headers['x-user'] ?? req.ip) })
  const alice = [await openReady(url + '/s', { 'x-user': 'alice' }), await openReady(url + '/s', { 'x-user': 'alice' })]
  const bob = [await openReady(url + '/s', { 'x-user': 'bob' }), await openReady(url + '/s', { 'x-user': 'bob' })]
  t.equal(app.sse.stats().openStreams, 4, 'two each, all from the same IP')
  await expectShed(t, await SseClient.open(url + '/s', { 'x-user': 'alice' }), 'alice\'s third')
  await expectShed(t, await SseClient.open(url + '/s', { 'x-user': 'bob' }), 'bob\'s third')
  const carol = await openReady(url + '/s', { 'x-user': 'carol' })
  t.equal(carol.ending, null, 'carol has her own budget')
  t.equal(app.sse.stats().shedPerClient, 2)
  await closeClients(logs, untilLog, alice[0])
  const alice3 = await openReady(url + '/s', { 'x-user': 'alice' })
  t.equal(alice3.ending, null, 'alice\'s closed stream freed her slot')
  await expectShed(t, await SseClient.open(url + '/s', { 'x-user': 'bob' }), 'and not bob\'s')
  t.equal(app.sse.stats().shedPerClient, 3)
  await closeClients(logs, untilLog, ...alice, ...bob, carol, alice3)
})

t.test('a burst of 10 with async authorize never admits more than the cap', async t => {
  let asked = 0
  const { app, url, logs, untilLog, connects } = await capApp(t, 2, {
    authorize: async () => {
      asked++
      await new Promise(resolve => setTimeout(resolve, 50))
      return true
    }
  })
  const clients = await Promise.all(Array.from({ length: 10 }, () => SseClient.open(url + '/s')))
  // Every response has its headers; the shed ones end, the admitted ones get their head.
  await Promise.all(clients.map(c => c.until('head or end', () => c.heads.length === 1 || c.ending !== null, 3_000)))
  const admitted = clients.filter(c => c.heads.length === 1)
  const shed = clients.filter(c => c.heads.length === 0)
  t.equal(admitted.length, 2, 'exactly the cap admitted')
  t.equal(shed.length, 8)
  for (const c of shed) t.equal(c.ending, 'end', 'shed cleanly')
  t.ok(shed.every(c => c.status === 200 && c.retries.length >= 1 && /retry: \d+\n\n$/.test(c.text)), 'each shed one: 200 and a closing retry')
  t.equal(asked, 2, 'only the admitted ones were authorised')
  t.equal(connects.max, 2, 'never more than 2 open at once')
  t.equal(app.sse.stats().shedPerClient, 8)
  t.equal(app.sse.stats().openStreams, 2)
  await closeClients(logs, untilLog, ...clients)
})

t.test('refused, async-failed, expired or disconnected streams give their slot back', async t => {
  let verdict: 'yes' | 'no' | 'throw' | 'reject' = 'yes'
  const { app, url, logs, untilLog } = await capApp(t, 1, {
    authorize: (): boolean | Promise<boolean> => {
      if (verdict === 'throw') throw new Error('auth backend down')
      if (verdict === 'reject') return Promise.reject(new Error('auth backend down later'))
      return verdict === 'yes'
    }
  })
  for (const v of ['no', 'no', 'reject', 'reject'] as const) {
    verdict = v
    const res = await fetch(url + '/s', { headers: { accept: 'text/event-stream' } })
    t.equal(res.status, v === 'no' ? 403 : 500, `${v}: answered ${res.status}`)
    await res.body?.cancel()
  }
  verdict = 'yes'
  const one = await openReady(url + '/s')
  t.equal(one.ending, null, 'refusals and async failures did not use up the slot')
  await closeClients(logs, untilLog, one)

  // A stream ended by disconnect({ tag }) frees its slot.
  const tagged = await openReady(url + '/s?tag=user:1')
  t.equal(await app.sse.disconnect({ tag: 'user:1' }), 1)
  t.equal(await tagged.waitEnd(), 'end')
  const three = await openReady(url + '/s')
  t.equal(three.ending, null, 'the disconnected stream\'s slot is free')
  await closeClients(logs, untilLog, three)

  // So does one that reached its maxLifetime.
  const brief = await openReady(url + '/s?life=200')
  t.equal(await brief.waitEnd(3_000), 'end')
  const four = await openReady(url + '/s')
  t.equal(four.ending, null, 'the expired stream\'s slot is free')
  t.equal(app.sse.stats().shedPerClient, 0)
  await closeClients(logs, untilLog, four)
})

t.test('a synchronous throw from authorize (500) gives its slot back', async t => {
  let verdict: 'yes' | 'throw' = 'throw'
  const { app, url, logs, untilLog } = await capApp(t, 1, {
    authorize: () => {
      if (verdict === 'throw') throw new Error('auth backend down')
      return true
    }
  })
  const res = await fetch(url + '/s', { headers: { accept: 'text/event-stream' } })
  t.equal(res.status, 500, 'sync throw: 500')
  await res.body?.cancel()
  t.equal(app.sse.stats().openStreams, 0, 'no stream open')
  verdict = 'yes'
  const c = await SseClient.open(url + '/s')
  await c.until('head or end', () => c.heads.length === 1 || c.ending !== null)
  t.equal(c.heads.length, 1, 'the client is admitted: the failed request did not keep its slot')
  t.equal(app.sse.stats().shedPerClient, 0, 'nothing was shed')
  await closeClients(logs, untilLog, c)
})
