// The client entry in Node, with a real EventSource (the `eventsource`
// package) against a real server: typed handlers get parsed data and meta,
// the state goes connecting -> open -> closed, `reset` reaches onReset, the
// lastEventId option resumes from a stored id, a cut stream resumes with no
// loss, and close() ends the stream for good.
import t from 'tap'
import { Type } from '@sinclair/typebox'
import { EventSource } from 'eventsource'
import type { FastifyInstance } from 'fastify'
import { subscribe, type ConnectionState, type ResetInfo, type SubscribeOptions, type Subscription } from '../lib/client.js'
import type { Channel, SseStream } from '../lib/index.js'
import { makeApp, type T } from './helpers/index.js'
import { until } from './helpers/demo.js'

const Price = Type.Object({ symbol: Type.String(), price: Type.Number() })
const Halt = Type.Object({ symbol: Type.String() })
type Ticker = Channel<'ticker', { price: typeof Price, halt: typeof Halt }>

interface Got { event: string, id: string, data: unknown }

async function tickerApp (t: T, plugin = {}) {
  let ticker!: Ticker
  const streams: SseStream[] = []
  const requests: Array<{ query: string | undefined, header: string | string[] | undefined }> = []
  const { app, url } = await makeApp(t, (app: FastifyInstance) => {
    ticker = app.sse.channel('ticker', { events: { price: Price, halt: Halt } })
    app.get('/ticker', (req, reply) => {
      requests.push({ query: (req.query as Record<string, string>).lastEventId, header: req.headers['last-event-id'] })
      streams.push(reply.sse({ subscribe: [ticker] }))
    })
  }, { plugin: { retry: 50, retryJitter: 0, ...plugin } })
  return { app, url: url + '/ticker', ticker, streams, requests }
}

/** Subscribes with typed handlers that record what they get; closed at teardown. */
function open (t: T, url: string, options: SubscribeOptions = {}) {
  const got: Got[] = []
  const states: ConnectionState[] = []
  const resets: ResetInfo[] = []
  const sub: Subscription = subscribe<Ticker>(url, {
    price: (data, meta) => { got.push({ event: meta.event, id: meta.id, data: { symbol: data.symbol.toLowerCase(), price: data.price * 2 } }) },
    halt: (data, meta) => { got.push({ event: meta.event, id: meta.id, data }) }
  }, {
    EventSource,
    onStateChange: (state) => states.push(state),
    onReset: (info) => resets.push(info),
    ...options
  })
  t.teardown(() => sub.close())
  return { sub, got, states, resets }
}

t.test('typed handlers get parsed data and meta; state and lastEventId follow the stream', async t => {
  const { app, url, ticker } = await tickerApp(t)
  const { sub, got, states } = open(t, url)
  t.equal(sub.state, 'connecting')
  t.equal(sub.lastEventId, undefined, 'no id yet')
  t.equal(sub.url, url, 'no lastEventId parameter without the option')
  await until('open', () => sub.state === 'open')
  await until('subscribed', () => app.sse.stats().subscriptions === 1)
  const a = await ticker.publish('price', { symbol: 'ACME', price: 21 })
  const b = await ticker.publish('halt', { symbol: 'ACME' })
  await until('two events', () => got.length === 2)
  t.same(got, [
    { event: 'price', id: a, data: { symbol: 'acme', price: 42 } },
    { event: 'halt', id: b, data: { symbol: 'ACME' } }
  ], 'the handler computed on parsed, typed data; meta has id and event')
  t.equal(sub.lastEventId, b, 'lastEventId is the last event\'s id')
  t.same(states, ['open'], 'connecting -> open')
})

t.test('the lastEventId option: resumes after a stored id, sent as the lastEventId query parameter', async t => {
  const { app, url, ticker, requests } = await tickerApp(t)
  const ids = []
  for (let i = 1; i <= 4; i++) ids.push(await ticker.publish('price', { symbol: 'ACME', price: i }))
  const { sub, got, resets } = open(t, url + '?x=1', { lastEventId: ids[1] })
  t.equal(sub.url, `${url}?x=1&lastEventId=${encodeURIComponent(ids[1])}`, 'appended to the query')
  t.equal(sub.lastEventId, ids[1], 'lastEventId starts at the option')
  await until('the two missed events', () => got.length === 2)
  t.same(got.map(e => e.id), ids.slice(2), 'exactly the events after the stored id')
  t.same(requests, [{ query: ids[1], header: undefined }], 'the server got it as the query parameter')
  const live = await ticker.publish('price', { symbol: 'ACME', price: 5 })
  await until('live', () => got.length === 3)
  t.equal(got[2].id, live, 'then live')
  t.same(resets, [], 'no reset')
  t.equal(app.sse.stats().resumes, 1)
})

t.test('reset: an id the hub cannot replay from reaches onReset, then live events follow', async t => {
  const { app, url, ticker } = await tickerApp(t, { history: 2 })
  const ids = []
  for (let i = 1; i <= 5; i++) ids.push(await ticker.publish('price', { symbol: 'ACME', price: i }))

  // History holds 2 events: resuming after the first is a gap it no longer covers.
  const trimmed = open(t, url, { lastEventId: ids[0] })
  await until('reset', () => trimmed.resets.length === 1)
  t.same(trimmed.resets, [{ lastEventId: ids[0], reason: 'trimmed', id: ids[4] }], 'onReset(info): asked id, reason, the head id')
  t.equal(trimmed.sub.lastEventId, ids[4], 'the client\'s lastEventId moved to the head')
  t.same(trimmed.got, [], 'nothing replayed')

  // An id of another epoch (e.g. from before a restart).
  const other = `${ids[0].split('-')[0] === 'zz' ? 'zy' : 'zz'}-3`
  const epoch = open(t, url, { lastEventId: other })
  await until('reset', () => epoch.resets.length === 1)
  t.match(epoch.resets[0], { lastEventId: other, reason: 'epoch' })

  // Not an id at all.
  const unknown = open(t, url, { lastEventId: 'not-an-id' })
  await until('reset', () => unknown.resets.length === 1)
  t.match(unknown.resets[0], { lastEventId: 'not-an-id', reason: 'unknown' })

  await until('three subscribed', () => app.sse.stats().subscriptions === 3)
  const live = await ticker.publish('price', { symbol: 'ACME', price: 6 })
  await until('live everywhere', () => [trimmed, epoch, unknown].every(s => s.got.length === 1))
  for (const s of [trimmed, epoch, unknown]) t.equal(s.got[0].id, live, 'live after the reset')
  t.equal(app.sse.stats().resets, 3)
})

t.test('a stream cut by the server: the EventSource reconnects with Last-Event-ID and nothing is lost or doubled', async t => {
  const { app, url, ticker, streams, requests } = await tickerApp(t)
  const { sub, got, states } = open(t, url)
  await until('open', () => sub.state === 'open')
  await until('subscribed', () => app.sse.stats().subscriptions === 1)
  const ids: string[] = []
  ids.push(await ticker.publish('price', { symbol: 'A', price: 1 }))
  await until('first', () => got.length === 1)
  streams[0].close()
  await until('reconnecting', () => sub.state === 'connecting')
  for (let i = 2; i <= 6; i++) ids.push(await ticker.publish('price', { symbol: 'A', price: i }))
  await until('open again', () => sub.state === 'open')
  await until('all', () => got.length >= ids.length)
  const sentinel = await ticker.publish('halt', { symbol: 'A' })
  await until('sentinel', () => got.some(e => e.id === sentinel))
  t.same(got.map(e => e.id), [...ids, sentinel], 'every event once, in order')
  t.same(states, ['open', 'connecting', 'open'])
  t.equal(streams.length, 2, 'one reconnection')
  t.same(requests[1], { query: undefined, header: ids[0] }, 'it sent the last id it had as Last-Event-ID')
})

t.test('close(): the stream ends for good and no handler runs after it', async t => {
  const { app, url, ticker, streams } = await tickerApp(t)
  const { sub, got, states } = open(t, url)
  await until('open', () => sub.state === 'open')
  await until('subscribed', () => app.sse.stats().subscriptions === 1)
  await ticker.publish('price', { symbol: 'A', price: 1 })
  await until('one', () => got.length === 1)
  sub.close()
  t.equal(sub.state, 'closed')
  t.same(states, ['open', 'closed'])
  sub.close()
  t.same(states, ['open', 'closed'], 'a second close() is a no-op')
  await streams[0].closed
  t.equal(app.sse.stats().openStreams, 0, 'the server saw the stream end')
  await ticker.publish('price', { symbol: 'A', price: 2 })
  // A fresh subscriber on the same topic gets the next event: by then the closed one would have had it too.
  const watcher = open(t, url)
  await until('watcher subscribed', () => app.sse.stats().subscriptions === 1)
  const next = await ticker.publish('price', { symbol: 'A', price: 3 })
  await until('watcher got it', () => watcher.got.some(e => e.id === next))
  t.equal(got.length, 1, 'the closed subscription got nothing more')
  t.equal(streams.length, 2, 'and did not reconnect')
})

t.test('bad data and throwing handlers go to onError; no EventSource is a clear error', async t => {
  const { app, url } = await makeApp(t, (app: FastifyInstance) => {
    app.get('/raw', (req, reply) => {
      const stream = reply.sse()
      stream.send({ event: 'price', id: '1', data: 'not json' })
      stream.send({ event: 'halt', id: '2', data: '{"symbol":"X"}' })
    })
  })
  const errors: Array<[string, string]> = []
  const sub = subscribe<Ticker>(url + '/raw', {
    price: () => { t.fail('not called on bad JSON') },
    halt: () => { throw new Error('boom') }
  }, { EventSource, onError: (err, meta) => errors.push([meta.event, err.message]) })
  t.teardown(() => sub.close())
  await until('two errors', () => errors.length === 2)
  t.match(errors, [['price', /the data of event "price" is not JSON/], ['halt', 'boom']])
  t.equal(sub.lastEventId, '2')
  void app
  t.throws(() => subscribe<Ticker>(url, {}), { name: 'TypeError', message: /no EventSource here; pass one as options\.EventSource/ }, 'Node 20 has no global EventSource')
  t.throws(() => subscribe<Ticker>(url, { price: 'nope' as never }, { EventSource }), { message: /handler of "price" must be a function/ })
  t.throws(() => subscribe<Ticker>(url, { reset: () => {} } as never, { EventSource }), { message: /"reset" is not a channel event \(use options\.onReset\)/ })
  // Neither throw left an EventSource behind: the process would not exit (tap's timeout would fail this file).
})
