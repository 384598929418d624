// Channel definitions are checked once, at declaration: a bad name, a bad or
// reserved event name, a schema TypeBox cannot compile, a duplicate or
// overlapping name each throw a coded error at once (synchronously), and
// leave nothing half-registered. defineChannel() declares without an app; an
// unattached definition cannot publish; one definition belongs to one hub.
import t from 'tap'
import { Type, type TSchema } from '@sinclair/typebox'
import { defineChannel } from '../lib/index.js'
import { makeApp, SseClient } from './helpers/index.js'
import { closeClients } from './helpers/closing.js'

const Ev = Type.Object({ n: Type.Number() })

/** Calls `fn` and returns what it threw synchronously (fails the test if it returned, or returned a promise). */
function thrown (t: { fail: (message: string) => unknown }, fn: () => unknown, what: string): { code?: string, message: string, statusCode?: number } {
  let result: unknown
  try {
    result = fn()
  } catch (err) {
    return err as { code?: string, message: string }
  }
  t.fail(`${what}: expected a synchronous throw, got ${result instanceof Promise ? 'a promise' : typeof result}`)
  return { message: '' }
}

t.test('bad definitions throw FST_ERR_SSEHUB_CHANNEL_INVALID at once', async t => {
  const { app } = await makeApp(t, () => {}, { listen: false })
  const cases: Array<[string, string, unknown, RegExp]> = [
    // [what, name, options, message fragment]
    ['reserved event "reset"', 'r1', { events: { reset: Ev } }, /"reset" is reserved/],
    ['reserved event "open"', 'r2', { events: { open: Ev } }, /"open" is reserved/],
    ['reserved event "error"', 'r3', { events: { error: Ev } }, /"error" is reserved/],
    ['empty event name', 'e1', { events: { '': Ev } }, /event name ""/],
    ['event name with a space', 'e2', { events: { 'a b': Ev } }, /event name "a b"/],
    ['event name with CR', 'e3', { events: { 'a\rb': Ev } }, /event name/],
    ['event name with LF', 'e4', { events: { 'a\nb': Ev } }, /event name/],
    ['event name with NUL', 'e5', { events: { 'a\u0000b': Ev } }, /event name/],
    ['event name of 65 characters', 'e6', { events: { ['a'.repeat(65)]: Ev } }, /at most 64/],
    ['event name starting with a digit', 'e7', { events: { '1a': Ev } }, /event name "1a"/],
    ['empty channel name', '', { events: { ok: Ev } }, /1 to 128 characters/],
    ['channel name "//"', '//', { events: { ok: Ev } }, /segment ""/],
    ['channel name with a space', 'a b', { events: { ok: Ev } }, /segment "a b"/],
    ['parameter starting with a digit', 'a/:1x', { events: { ok: Ev } }, /segment ":1x"/],
    ['a parameter twice', 'a/:id/b/:id', { events: { ok: Ev } }, /":id" appears twice/],
    ['trailing slash', 'a/', { events: { ok: Ev } }, /segment ""/],
    ['leading slash', '/a', { events: { ok: Ev } }, /segment ""/],
    ['channel name of 129 characters', 'c'.repeat(129), { events: { ok: Ev } }, /1 to 128 characters/],
    ['schema { type: "nope" }', 's1', { events: { ok: { type: 'nope' } as unknown as TSchema } }, /schema of event "ok" does not compile/],
    ['schema with an unresolvable $ref', 's2', { events: { ok: Type.Ref('Missing') } }, /schema of event "ok" does not compile/],
    ['schema with an invalid regex pattern', 's3', { events: { ok: Type.String({ pattern: '(' }) } }, /schema of event "ok" does not compile/],
    ['schema that is not an object', 's4', { events: { ok: 42 as unknown as TSchema } }, /schema of event "ok" does not compile/],
    ['no events', 'n1', { events: {} }, /at least one event/],
    ['events is a string', 'n2', { events: 'price' }, /options\.events must map/],
    ['events is null', 'n3', { events: null }, /options\.events must map/],
    ['events missing', 'n4', {}, /options\.events must map/],
    ['options missing', 'n5', undefined, /options\.events must map/],
    ['authorize not a function', 'n6', { events: { ok: Ev }, authorize: true }, /authorize must be a function/]
  ]
  for (const [what, name, options, message] of cases) {
    const channel = app.sse.channel as unknown as (n: string, o: unknown) => unknown
    const err = thrown(t, () => channel.call(app.sse, name, options), what)
    t.equal(err.code, 'FST_ERR_SSEHUB_CHANNEL_INVALID', `${what}: code`)
    t.match(err.message, message, `${what}: message says why`)
    // defineChannel applies the same checks, without an app.
    const def = defineChannel as unknown as (n: string, o: unknown) => unknown
    t.equal(thrown(t, () => def(name, options), `defineChannel: ${what}`).code, 'FST_ERR_SSEHUB_CHANNEL_INVALID', `defineChannel: ${what}`)
  }
  // Nothing was half-registered: every name that failed is still free.
  for (const name of ['r1', 'e1', 's1', 'n1', 'a/:id/b/:other']) {
    t.doesNotThrow(() => app.sse.channel(name, { events: { ok: Ev } }), `"${name}" is free after its failed declaration`)
  }
  t.same(app.sse.stats().channels, {}, 'no channel counts were created')
})

t.test('the edges that are allowed', async t => {
  const { app } = await makeApp(t, () => {}, { listen: false })
  t.doesNotThrow(() => app.sse.channel('edge', {
    events: { ['a'.repeat(64)]: Ev, _x: Ev, 'a.b:c-d_e': Ev, message: Ev }
  }), 'a 64-character event name, "_", ".", ":", "-" and "message" are fine')
  t.doesNotThrow(() => app.sse.channel('x'.repeat(128), { events: { ok: Ev } }), 'a 128-character name is fine')
  t.doesNotThrow(() => app.sse.channel('orgs/:org_1/rooms/:Room', { events: { ok: Ev } }), 'several parameters')
})

t.test('duplicate and overlapping names throw FST_ERR_SSEHUB_CHANNEL_DUPLICATE at once', async t => {
  const pairs: Array<[string, string]> = [
    ['ticker', 'ticker'],
    ['rooms/:id', 'rooms/:id'],
    ['rooms/:id', 'rooms/:other'],
    ['rooms/:id', 'rooms/lobby'],
    ['rooms/lobby', 'rooms/:id'],
    [':x/lobby', 'rooms/lobby'],
    ['rooms/lobby', ':x/lobby'],
    ['rooms/:id', ':x/lobby'],
    [':x/lobby', 'rooms/:id'],
    [':a/:b', 'rooms/lobby']
  ]
  for (const [first, second] of pairs) {
    const { app } = await makeApp(t, () => {}, { listen: false })
    app.sse.channel(first, { events: { ok: Ev } })
    const refused = defineChannel(second, { events: { other: Ev } })
    const err = thrown(t, () => app.sse.channel(refused), `"${first}" then "${second}"`)
    t.equal(err.code, 'FST_ERR_SSEHUB_CHANNEL_DUPLICATE', `"${first}" then "${second}": code`)
    t.ok(err.message.includes(`"${second}"`), `"${first}" then "${second}": the message names the new channel`)
    // The refused definition was not attached by the failed call.
    await t.rejects(Promise.resolve().then(() => (refused as unknown as { publish: (e: string, d: unknown) => Promise<string> }).publish('other', { n: 1 })),
      { code: /FST_ERR_SSEHUB_(CHANNEL|TOPIC)_INVALID/ }, `"${second}" stayed unattached`)
  }
  // Same-length names that cannot share a key, and different lengths, are fine together.
  const { app } = await makeApp(t, () => {}, { listen: false })
  for (const name of ['rooms/:id', 'users/:id', 'rooms/:id/members', 'rooms', 'rooms/:id/:member/x', 'lobby/rooms']) {
    t.doesNotThrow(() => app.sse.channel(name, { events: { ok: Ev } }), `"${name}" does not overlap the others`)
  }
})

t.test('defineChannel() + app.sse.channel(def) works end to end; an unattached definition cannot publish', async t => {
  const ticker = defineChannel('ticker', { events: { price: Type.Object({ symbol: Type.String(), price: Type.Number() }) } })
  const room = defineChannel('rooms/:roomId', { events: { message: Type.Object({ text: Type.String() }) } })

  // Unattached: publish rejects (a promise, not a throw) with CHANNEL_INVALID; nothing is attached by trying.
  const p = ticker.publish('price', { symbol: 'X', price: 1 })
  t.ok(p instanceof Promise, 'publish returns a promise')
  await t.rejects(p, { code: 'FST_ERR_SSEHUB_CHANNEL_INVALID', message: /not attached to a hub/ })
  await t.rejects(room.topic({ roomId: 'a' }).publish('message', { text: 'hi' }), { code: 'FST_ERR_SSEHUB_CHANNEL_INVALID' })
  t.throws(() => ticker.subscribe('price', () => {}), { code: 'FST_ERR_SSEHUB_CHANNEL_INVALID' }, 'in-process subscribe needs a hub too')
  // An invalid payload on an unattached definition is refused for the payload first, still without a hub.
  await t.rejects(ticker.publish('price', { symbol: 'X', price: 'no' } as never), { code: 'FST_ERR_SSEHUB_PAYLOAD_INVALID' })

  const { app, url, logs, untilLog } = await makeApp(t, app => {
    t.equal(app.sse.channel(ticker), ticker, 'channel(def) returns the definition itself')
    t.equal(app.sse.channel(ticker), ticker, 'attaching it again to the same hub is a no-op')
    app.sse.channel(room)
    app.get('/s', (req, reply) => reply.sse({ subscribe: [ticker, room.topic({ roomId: 'a' })] }))
  })
  // A plain channel of the same name as an attached definition is a duplicate.
  t.throws(() => app.sse.channel('ticker', { events: { price: Ev } }), { code: 'FST_ERR_SSEHUB_CHANNEL_DUPLICATE' })
  t.throws(() => app.sse.channel('rooms/lobby', { events: { x: Ev } }), { code: 'FST_ERR_SSEHUB_CHANNEL_DUPLICATE' })

  const c = await SseClient.open(url + '/s')
  await c.until('head id', () => c.text.includes('id: '))
  const id1 = await ticker.publish('price', { symbol: 'X', price: 1 })
  const id2 = await room.topic({ roomId: 'a' }).publish('message', { text: 'hi' })
  await c.waitEvents(2)
  t.same(c.events.map(e => [e.event, e.id, JSON.parse(e.data)]), [
    ['price', id1, { symbol: 'X', price: 1 }],
    ['message', id2, { text: 'hi' }]
  ], 'both attached definitions publish to the stream')
  await closeClients(logs, untilLog, c)
})

t.test('one definition attaches to one hub: a second app refuses it', async t => {
  const news = defineChannel('news', { events: { item: Type.Object({ title: Type.String() }) } })
  const { app: first } = await makeApp(t, () => {}, { listen: false })
  first.sse.channel(news)
  const { app: second } = await makeApp(t, () => {}, { listen: false })
  const err = thrown(t, () => second.sse.channel(news), 'attach to a second hub')
  t.match(err.code, /^FST_ERR_SSEHUB_CHANNEL_(DUPLICATE|INVALID)$/, 'a coded channel error')
  t.match(err.message, /news/, 'naming the channel')
  t.comment(`second hub says: ${err.code}: ${err.message}`)
  // The refusal changed nothing: it still publishes on the first hub only.
  await news.publish('item', { title: 'x' })
  t.equal(first.sse.stats().published, 1, 'published on the hub it belongs to')
  t.equal(second.sse.stats().published, 0, 'not on the hub that refused it')
})
