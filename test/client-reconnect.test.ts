// The typed client keeps reconnecting where the EventSource gives up for
// good: a non-200 answer (a proxy's 502 or 503 while the app restarts) makes
// every EventSource close, so the client opens a new one after a capped,
// jittered backoff, resuming from its last id (the lastEventId query
// parameter), and nothing is lost or doubled. With `reconnect: false` it
// gives up as the EventSource does. Node, with the `eventsource` package,
// against a real server; the browsers do the same in browser-eventsource.
import t from 'tap'
import { Type } from '@sinclair/typebox'
import { EventSource } from 'eventsource'
import type { FastifyInstance } from 'fastify'
import { subscribe, type ConnectionState, type ResetInfo, type SubscribeOptions, type Subscription } from '../lib/client.js'
import type { Channel, SseStream } from '../lib/index.js'
import { makeApp, type T } from './helpers/index.js'
import { until } from './helpers/demo.js'

const Price = Type.Object({ symbol: Type.String(), price: Type.Number() })
type Ticker = Channel<'ticker', { price: typeof Price }>

interface Request { at: number, status: number, query: string | undefined, header: string | undefined }

/** A ticker app whose stream route answers 503 while `refuse` > 0 (one per request). */
async function tickerApp (t: T) {
  let ticker!: Ticker
  const streams: SseStream[] = []
  const requests: Request[] = []
  const control = { refuse: 0 }
  const { app, url } = await makeApp(t, (app: FastifyInstance) => {
    ticker = app.sse.channel('ticker', { events: { price: Price } })
    app.get('/ticker', (req, reply) => {
      const seen = { at: performance.now(), query: (req.query as Record<string, string>).lastEventId, header: req.headers['last-event-id'] as string | undefined }
      if (control.refuse > 0) {
        control.refuse--
        requests.push({ ...seen, status: 503 })
        return reply.code(503).send('app restarting')
      }
      requests.push({ ...seen, status: 200 })
      streams.push(reply.sse({ subscribe: [ticker] }))
    })
  }, { plugin: { retry: 20, retryJitter: 0, shutdownJitter: 0 } })
  return { app, url: url + '/ticker', ticker, streams, requests, control }
}

function open (t: T, url: string, options: SubscribeOptions = {}) {
  const got: string[] = []
  const states: ConnectionState[] = []
  const resets: ResetInfo[] = []
  const sub: Subscription = subscribe<Ticker>(url, { price: (_data, meta) => { got.push(meta.id) } }, {
    EventSource,
    onStateChange: (state) => states.push(state),
    onReset: (info) => resets.push(info),
    ...options
  })
  t.teardown(() => sub.close())
  return { sub, got, states, resets }
}

t.test('after 503 answers the client opens a new EventSource from its last id: nothing lost, nothing twice', async t => {
  const { app, url, ticker, streams, requests, control } = await tickerApp(t)
  const { sub, got, states, resets } = open(t, url, { reconnect: { delay: 30, maxDelay: 200 } })
  await until('subscribed', () => app.sse.stats().subscriptions === 1)
  const ids = [await ticker.publish('price', { symbol: 'A', price: 1 }), await ticker.publish('price', { symbol: 'A', price: 2 })]
  await until('two events', () => got.length === 2)
  const firstSource = sub.source

  // The app "restarts": its stream ends and the next three answers are 503.
  control.refuse = 3
  streams[0].close()
  await until('three refusals', () => requests.filter(r => r.status === 503).length === 3)
  for (let i = 3; i <= 7; i++) ids.push(await ticker.publish('price', { symbol: 'A', price: i }))
  await until('open again', () => requests.at(-1)?.status === 200 && sub.state === 'open')
  await until('all events', () => got.length >= ids.length)
  const sentinel = await ticker.publish('price', { symbol: 'A', price: 8 })
  await until('the sentinel', () => got.includes(sentinel))

  t.same(got, [...ids, sentinel], 'every event once, in order: the five published while it was refused included')
  t.same(resets, [], 'no reset: the hub replayed from the id the client resumed from')
  t.equal(requests.length, 5, 'the first stream, the EventSource\'s own reconnection, two more by the client, then the stream')
  t.same(requests[1], { ...requests[1], status: 503, header: ids[1], query: undefined }, 'the EventSource\'s own attempt sent Last-Event-ID, got 503 and gave up')
  for (const r of requests.slice(2)) t.same([r.query, r.header], [ids[1], undefined], 'each new EventSource resumes from the last id, as the query parameter')
  t.not(sub.source, firstSource, 'a new EventSource')
  t.match(sub.url, new RegExp(`[?&]lastEventId=${encodeURIComponent(ids[1])}$`), 'sub.url is the one it resumed with')
  t.notOk(states.includes('closed'), 'never closed')
  t.same(states.filter((s, i) => s !== states[i - 1]), states, 'each change reported once')
  t.equal(states.at(-1), 'open')
  t.equal(sub.lastEventId, sentinel)
})

t.test('the waits double up to maxDelay, each jittered (50 to 100 %), and start again after a stream opened', async t => {
  const { url, requests, control, streams } = await tickerApp(t)
  control.refuse = 6
  const { sub } = open(t, url, { reconnect: { delay: 40, maxDelay: 120 } })
  await until('open after six refusals', () => sub.state === 'open', 10_000)
  const gaps = requests.slice(1).map((r, i) => r.at - requests[i].at)
  t.comment(`waits between attempts: ${gaps.map(g => g.toFixed(0)).join(', ')} ms (ceilings 40, 80, 120, 120, 120, 120)`)
  const ceilings = [40, 80, 120, 120, 120, 120]
  t.equal(gaps.length, 6)
  gaps.forEach((gap, i) => t.ok(gap >= ceilings[i] * 0.5 - 2, `wait ${i + 1}: ${gap.toFixed(0)} ms >= half its ceiling (${ceilings[i] / 2})`))
  t.ok(gaps[1] >= 38 && gaps[2] >= 58, 'the waits grow')
  t.ok(gaps.slice(2).every(g => g < 120 + 400), 'capped (at 120 ms; 400 ms of slack for a loaded machine)')
  t.ok(new Set(gaps.slice(2).map(g => Math.round(g))).size > 1, 'jittered: the capped waits differ')

  // Once a stream opened, the next failure starts from `delay` again.
  control.refuse = 1
  const before = requests.length
  streams[0].close()
  await until('open again', () => requests.length === before + 2 && sub.state === 'open')
  const gap = requests[before + 1].at - requests[before].at
  t.ok(gap >= 18 && gap < 40 + 400, `after an open, the first wait is back to 20..40 ms (${gap.toFixed(0)})`)
})

t.test('reconnect: false gives up as the EventSource does; close() during a wait stops it', async t => {
  const { url, requests, control, streams } = await tickerApp(t)
  const off = open(t, url, { reconnect: false })
  await until('open', () => off.sub.state === 'open')
  control.refuse = 1
  streams[0].close()
  await until('closed', () => off.sub.state === 'closed')
  t.same(off.states, ['open', 'connecting', 'closed'], 'closed for good after the 503')
  t.equal(requests.length, 2)

  // With reconnection on, a close() while waiting: no new EventSource, ever.
  control.refuse = 1
  const waiting = open(t, url, { reconnect: { delay: 150, maxDelay: 150 } })
  await until('refused', () => requests.length === 3)
  t.equal(waiting.sub.state, 'connecting', 'waiting to reconnect')
  waiting.sub.close()
  t.equal(waiting.sub.state, 'closed')
  // The published event would reach a stream opened after the wait: none may be.
  await new Promise(resolve => setTimeout(resolve, 300)) // the absence of a request: nothing to wait for
  t.equal(requests.length, 3, 'no request after close()')
  t.throws(() => subscribe<Ticker>(url, {}, { EventSource, reconnect: { delay: -1 } }), { message: /reconnect\.delay must be a number of ms >= 0/ })
  t.throws(() => subscribe<Ticker>(url, {}, { EventSource, reconnect: 5 as never }), { message: /must be false or \{ delay, maxDelay \}/ })
})

t.test('the app down (connection refused) and back on the same port: the client comes back, from its last id', async t => {
  // Memory backend: the new process cannot replay, so the client gets reset
  // naming the id it resumed from, then live events.
  const first = await tickerApp(t)
  const port = new URL(first.url).port
  const { sub, got, resets } = open(t, first.url, { reconnect: { delay: 30, maxDelay: 100 } })
  await until('subscribed', () => first.app.sse.stats().subscriptions === 1)
  const last = await first.ticker.publish('price', { symbol: 'A', price: 1 })
  await until('one event', () => got.length === 1)
  await first.app.close()
  await until('connecting', () => sub.state === 'connecting')
  const second = await (async () => {
    let ticker!: Ticker
    const { app } = await makeApp(t, (app: FastifyInstance) => {
      ticker = app.sse.channel('ticker', { events: { price: Price } })
      app.get('/ticker', (req, reply) => { reply.sse({ subscribe: [ticker] }) })
    }, { plugin: { retry: 20, retryJitter: 0, shutdownJitter: 0 }, listen: false })
    await app.listen({ port: Number(port), host: '127.0.0.1' })
    return { app, ticker }
  })()
  await until('reset', () => resets.length === 1, 15_000)
  t.equal(resets[0].lastEventId, last, 'it resumed from the last event it had')
  t.equal(resets[0].reason, 'epoch')
  await until('subscribed again', () => second.app.sse.stats().subscriptions === 1)
  const live = await second.ticker.publish('price', { symbol: 'A', price: 2 })
  await until('live', () => got.includes(live))
  t.same(got, [last, live])
})
