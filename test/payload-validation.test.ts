// An invalid payload is refused before anything is stored or sent, with
// FST_ERR_SSEHUB_PAYLOAD_INVALID (400) naming the channel, the event and the
// JSON path of the first bad field. Nothing of it reaches a subscriber, the
// published count or history (a resume replays none of it). A route that lets
// the error through answers 400 JSON; the channel's schema doubles as a route
// body schema; properties a plain Type.Object allows reach the wire as given.
import t, { type Test } from 'tap'
import { Type } from '@sinclair/typebox'
import { makeApp, SseClient } from './helpers/index.js'
import { closeClients } from './helpers/closing.js'

const Order = Type.Object({
  symbol: Type.String({ maxLength: 8 }),
  price: Type.Number(),
  side: Type.Union([Type.Literal('buy'), Type.Literal('sell')]),
  a: Type.Object({ b: Type.Array(Type.Number()) }),
  items: Type.Array(Type.Integer())
}, { additionalProperties: false })

const valid = (): Record<string, unknown> => ({ symbol: 'ACME', price: 10.5, side: 'buy', a: { b: [1, 2] }, items: [1, 2, 3, 4] })
const Marker = Type.Object({ n: Type.Integer() })

/** [what, payload, the exact JSON path the error must name] */
const INVALID: Array<[string, unknown, string]> = [
  ['a string at the root', 'ACME', '/'],
  ['null', null, '/'],
  ['undefined', undefined, '/'],
  ['a number for an object', 42, '/'],
  ['an array for an object', [valid()], '/'],
  ['a missing required field', (() => { const p = valid(); delete p.price; return p })(), '/price'],
  ['a string for a number', { ...valid(), price: '10.5' }, '/price'],
  ['NaN (TypeBox refuses it; JSON would make it null)', { ...valid(), price: NaN }, '/price'],
  ['Infinity', { ...valid(), price: Infinity }, '/price'],
  ['a BigInt', { ...valid(), price: 10n }, '/price'],
  ['a wrong nested type', { ...valid(), a: { b: ['1', 2] } }, '/a/b/0'],
  ['a wrong array item', { ...valid(), items: [1, 2, 3, 4.5] }, '/items/3'],
  ['an extra property under additionalProperties: false', { ...valid(), extra: 1 }, '/extra'],
  ['a string over maxLength', { ...valid(), symbol: 'ACMEACMEA' }, '/symbol'],
  ['an enum miss', { ...valid(), side: 'hold' }, '/side']
]

t.test('each invalid payload is refused with its path, and nothing of it is delivered, counted or stored', async t => {
  let orders!: ReturnType<typeof declare>
  const declare = (app: Parameters<Parameters<typeof makeApp>[1]>[0]) => app.sse.channel('orders', { events: { placed: Order, marker: Marker } })
  const { app, url, logs, untilLog } = await makeApp(t, app => {
    orders = declare(app)
    app.get('/s', (req, reply) => reply.sse({ subscribe: [orders] }))
  })
  const live = await SseClient.open(url + '/s')
  await live.until('head id', () => /^id: /m.test(live.text))
  const headBefore = /^id: (.+)$/m.exec(live.text)![1]

  const markers: string[] = []
  markers.push(await orders.publish('marker', { n: 0 }))
  for (const [what, payload, path] of INVALID) {
    const p = orders.publish('placed', payload as never)
    t.ok(p instanceof Promise, `${what}: publish returns a promise (no synchronous throw)`)
    const err = await p.then(() => null, (e: { code: string, statusCode: number, message: string }) => e)
    if (err === null) {
      t.fail(`${what}: was accepted`)
      continue
    }
    t.equal(err.code, 'FST_ERR_SSEHUB_PAYLOAD_INVALID', `${what}: code`)
    t.equal(err.statusCode, 400, `${what}: status 400`)
    t.ok(err.message.includes('"orders"'), `${what}: names the channel`)
    t.ok(err.message.includes('"placed"'), `${what}: names the event`)
    t.ok(err.message.includes(`at "${path}":`), `${what}: names the path ${path} (${err.message})`)
    markers.push(await orders.publish('marker', { n: markers.length }))
  }
  t.ok(await orders.publish('placed', valid() as never), 'the valid base payload is accepted')
  const last = await orders.publish('marker', { n: -1 })

  // The live subscriber got the markers, the one valid order, and nothing else.
  await live.until('the last marker', () => live.events.some(e => e.id === last))
  const expected = [...markers, '(placed)', last]
  t.same(live.events.map(e => e.event === 'placed' ? '(placed)' : e.id), expected, 'only valid events reached the live subscriber')
  t.notOk(/"extra"|hold|ACMEACMEA|null,2/.test(live.text), 'no invalid payload on the wire')

  const stats = app.sse.stats()
  t.equal(stats.published, markers.length + 2, 'published counts only valid events')
  t.equal(stats.deliveries, markers.length + 2, 'deliveries count only valid events')
  if (stats.backend.kind === 'memory') t.equal(stats.historyEvents, markers.length + 2, 'history holds only valid events')

  // A resume from the head before the invalid publishes replays exactly the valid events.
  const resumed = await SseClient.open(url + '/s', { 'last-event-id': headBefore })
  await resumed.until('the replayed last marker', () => resumed.events.some(e => e.id === last))
  t.same(resumed.events.map(e => e.event === 'placed' ? '(placed)' : e.id), expected, 'the resume replays no invalid event')
  t.notOk(resumed.events.some(e => e.event === 'reset'), 'and no reset')
  await closeClients(logs, untilLog, live, resumed)
})

t.test('an unknown event is refused with FST_ERR_SSEHUB_EVENT_UNKNOWN (400)', async t => {
  const { app } = await makeApp(t, () => {}, { listen: false })
  const ch = app.sse.channel('c', { events: { known: Marker } })
  const room = app.sse.channel('rooms/:id', { events: { known: Marker } })
  for (const [what, p] of [
    ['plain channel', (ch.publish as (e: string, d: unknown) => Promise<string>)('unknown', { n: 1 })],
    ['topic', (room.topic({ id: 'a' }).publish as (e: string, d: unknown) => Promise<string>)('unknown', { n: 1 })],
    ['inherited name', (ch.publish as (e: string, d: unknown) => Promise<string>)('toString', { n: 1 })],
    ['prototype name', (ch.publish as (e: string, d: unknown) => Promise<string>)('__proto__', { n: 1 })]
  ] as const) {
    await t.rejects(p, { code: 'FST_ERR_SSEHUB_EVENT_UNKNOWN', statusCode: 400, message: /"c"|"rooms\/:id"/ }, what)
  }
  t.equal(app.sse.stats().published, 0, 'nothing published')
})

t.test('a route that lets the publish error through answers 400 JSON with the code', async t => {
  let published = 0
  const { url, app } = await makeApp(t, app => {
    const ticker = app.sse.channel('ticker', { events: { price: Type.Object({ symbol: Type.String(), price: Type.Number() }) } })
    app.post('/prices', async (req) => {
      const id = await ticker.publish('price', req.body as { symbol: string, price: number })
      published++
      return { id }
    })
  })
  const res = await fetch(url + '/prices', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ symbol: 'X', price: 'high' }) })
  t.equal(res.status, 400)
  t.match(res.headers.get('content-type'), /^application\/json/)
  const body = await res.json() as { code: string, statusCode: number, message: string }
  t.equal(body.code, 'FST_ERR_SSEHUB_PAYLOAD_INVALID')
  t.equal(body.statusCode, 400)
  t.ok(body.message.includes('at "/price":'), 'the body names the path')
  t.equal(published, 0, 'the handler stopped at the publish')
  t.equal(app.sse.stats().published, 0)
  const ok = await fetch(url + '/prices', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ symbol: 'X', price: 1 }) })
  t.equal(ok.status, 200, 'a valid body publishes')
})

t.test('README pattern: the event schema as the route body schema refuses a bad body before publish runs', async t => {
  let handlerRuns = 0
  const { url, app } = await makeApp(t, app => {
    const ticker = app.sse.channel('ticker', { events: { price: Type.Object({ symbol: Type.String(), price: Type.Number() }) } })
    app.post('/prices', { schema: { body: ticker.events.price } }, async (req) => {
      handlerRuns++
      return { id: await ticker.publish('price', req.body as { symbol: string, price: number }) }
    })
  })
  const post = (body: unknown): Promise<Response> => fetch(url + '/prices', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  for (const [what, body] of [['missing symbol', { price: 1 }], ['non-numeric price', { symbol: 'X', price: 'high' }], ['not an object', 'X']] as const) {
    const res = await post(body)
    t.equal(res.status, 400, `${what}: 400`)
    const json = await res.json() as { code: string }
    t.equal(json.code, 'FST_ERR_VALIDATION', `${what}: Fastify's own validation error`)
  }
  t.equal(handlerRuns, 0, 'the handler never ran')
  t.equal(app.sse.stats().published, 0, 'nothing published')
  const ok = await post({ symbol: 'X', price: 2 })
  t.equal(ok.status, 200)
  t.equal(handlerRuns, 1)
  t.equal(app.sse.stats().published, 1)
})

/** An app with a `ticker` channel (one `price` event) and one client following it, past its head. */
async function tickerStream (t: Test) {
  let ticker!: { publish: (e: 'price', d: { symbol: string, price: number }) => Promise<string> }
  const { url, logs, untilLog } = await makeApp(t, app => {
    const ch = app.sse.channel('ticker', { events: { price: Type.Object({ symbol: Type.String(), price: Type.Number() }) } })
    ticker = ch
    app.get('/s', (req, reply) => reply.sse({ subscribe: [ch] }))
  })
  const c = await SseClient.open(url + '/s')
  await c.until('head id', () => /^id: /m.test(c.text))
  return { ticker, c, logs, untilLog }
}

t.test('extra properties: a plain Type.Object lets them through, and they reach the wire as JSON.stringify writes them', async t => {
  const { ticker, c, logs, untilLog } = await tickerStream(t)
  const payload = { symbol: 'X', price: 1, note: 'extra', nested: { deep: [1, 'two'] } }
  const id = await ticker.publish('price', payload)
  await c.waitEvents(1)
  t.equal(c.events[0].id, id)
  t.same(JSON.parse(c.events[0].data), payload, 'the extra properties are in data')
  t.equal(c.events[0].data, JSON.stringify(payload), 'exactly as JSON.stringify writes them')
  await closeClients(logs, untilLog, c)
})

t.test('what reaches the wire is what was validated (toJSON cannot swap the payload after the check)', async t => {
  const { ticker, c, logs, untilLog } = await tickerStream(t)
  // A class instance passes the object check (its toJSON is on the prototype,
  // not an own property), but JSON.stringify sends what toJSON returns.
  class Sneaky {
    symbol = 'X'
    price = 1
    toJSON (): unknown { return { symbol: 42 } }
  }
  const outcome = await ticker.publish('price', new Sneaky()).then(id => ({ id }), (err: { code: string }) => ({ code: err.code }))
  const id = await ticker.publish('price', { symbol: 'OK', price: 2 })
  await c.until('the valid event', () => c.events.some(e => e.id === id))
  const sent = c.events.filter(e => e.id !== id).map(e => JSON.parse(e.data))
  // Either the publish is refused, or what was sent matches the schema.
  for (const data of sent) {
    t.ok(typeof data?.symbol === 'string' && typeof data?.price === 'number', `the wire data ${JSON.stringify(data)} matches the price schema`)
  }
  if (!('id' in outcome)) t.equal(outcome.code, 'FST_ERR_SSEHUB_PAYLOAD_INVALID', 'refused as an invalid payload')
  await closeClients(logs, untilLog, c)
})

t.test('a payload the schema allows but JSON cannot carry is refused with a coded 400, not a bare TypeError', async t => {
  const { app } = await makeApp(t, () => {}, { listen: false })
  // A plain Type.Object allows extra properties, so the check passes; JSON.stringify then throws.
  const ticker = app.sse.channel('ticker', { events: { price: Type.Object({ symbol: Type.String(), price: Type.Number() }) } })
  const cyclic: Record<string, unknown> = { symbol: 'X', price: 1 }
  cyclic.self = cyclic
  for (const [what, payload] of [['a BigInt in an extra property', { symbol: 'X', price: 1, big: 10n }], ['a cycle', cyclic]] as const) {
    const err = await ticker.publish('price', payload as never).then(() => null, (e: { code?: string, statusCode?: number, name: string }) => e)
    t.ok(err !== null, `${what}: refused`)
    t.equal(err?.code, 'FST_ERR_SSEHUB_PAYLOAD_INVALID', `${what}: coded (got ${err?.name} ${err?.code ?? ''})`)
    t.equal(err?.statusCode, 400, `${what}: status 400`)
  }
  t.equal(app.sse.stats().published, 0, 'nothing published')
})
