// A channel's authorize(request, params) decides at open, sync or async.
// Refused: 403 JSON FST_ERR_SSEHUB_FORBIDDEN before any stream opens (no SSE
// content type, streamsOpened unchanged, no subscription). Allowed: the
// stream opens and events flow. A check that throws or rejects answers 500,
// no stream. One refused topic among several refuses the whole request.
import t, { type Test } from 'tap'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { makeApp, SseClient, type LogLine } from './helpers/index.js'
import { closeClients } from './helpers/closing.js'

const Message = Type.Object({ text: Type.String() })

interface Seen { request: FastifyRequest, params: Record<string, string> }

/** An app whose rooms/:roomId channel answers by `decide`, recording every call. */
async function roomApp (t: Tap, decide: (request: FastifyRequest, params: Record<string, string>) => boolean | Promise<boolean>) {
  const seen: Seen[] = []
  const handlerRequests: FastifyRequest[] = []
  let room!: ReturnType<typeof declare>
  let open!: ReturnType<typeof declareOpen>
  const declare = (app: FastifyInstance) => app.sse.channel('rooms/:roomId', {
    events: { message: Message },
    authorize: (request, params) => {
      seen.push({ request, params })
      return decide(request, params)
    }
  })
  const declareOpen = (app: FastifyInstance) => app.sse.channel('lobby', { events: { message: Message } })
  const made = await makeApp(t, app => {
    room = declare(app)
    open = declareOpen(app)
    // ?rooms=a,b,c subscribes to each room (and to the lobby, which has no check).
    app.get('/s', (req, reply) => {
      handlerRequests.push(req)
      const rooms = String((req.query as { rooms?: string }).rooms ?? 'a').split(',')
      return reply.sse({ subscribe: [open, ...rooms.map(roomId => room.topic({ roomId }))] })
    })
    app.get('/async', async (req, reply) => {
      handlerRequests.push(req)
      return reply.sse({ subscribe: [room.topic({ roomId: 'a' })] })
    })
  })
  return { ...made, seen, handlerRequests, room: () => room, lobby: () => open }
}
type Tap = Test

/** Asserts a 403 refusal with no stream, and returns its body. */
async function expectRefused (t: Tap, url: string, app: FastifyInstance, headers: Record<string, string> = {}): Promise<void> {
  const before = app.sse.stats()
  const res = await fetch(url, { headers: { accept: 'text/event-stream', ...headers } })
  t.equal(res.status, 403, 'answered 403')
  t.match(res.headers.get('content-type'), /^application\/json/, 'JSON, not an event stream')
  const body = await res.json() as { code: string, statusCode: number }
  t.equal(body.code, 'FST_ERR_SSEHUB_FORBIDDEN')
  t.equal(body.statusCode, 403)
  const after = app.sse.stats()
  t.equal(after.streamsOpened, before.streamsOpened, 'streamsOpened unchanged')
  t.equal(after.openStreams, before.openStreams, 'openStreams unchanged')
  t.equal(after.subscriptions, before.subscriptions, 'no subscription made')
  t.equal(after.topics, before.topics, 'no topic held')
}

async function expectFlowing (t: Tap, url: string, publish: () => Promise<string>, logs: LogLine[], untilLog: Parameters<typeof closeClients>[1], headers: Record<string, string> = {}): Promise<void> {
  const c = await SseClient.open(url, headers)
  t.equal(c.status, 200, 'stream opened')
  t.match(c.headers['content-type'], /^text\/event-stream/)
  await c.until('head id', () => /^id: /m.test(c.text))
  const id = await publish()
  await c.waitEvents(1)
  t.same(c.events.map(e => [e.event, e.id]), [['message', id]], 'events flow')
  await closeClients(logs, untilLog, c)
}

t.test('sync authorize: refusal is 403 before any stream; allowance streams', async t => {
  const { app, url, seen, handlerRequests, room, logs, untilLog } = await roomApp(t, (request, params) =>
    request.headers['x-user'] === 'alice' && params.roomId !== 'secret')
  await expectRefused(t, url + '/s?rooms=a', app)
  t.equal(seen.length, 1, 'authorize was asked once')
  t.equal(seen[0].request, handlerRequests[0], 'authorize got the route\'s request object')
  t.same(seen[0].params, { roomId: 'a' }, 'and the topic params')
  await expectRefused(t, url + '/s?rooms=secret', app, { 'x-user': 'alice' })
  t.same(seen.at(-1)?.params, { roomId: 'secret' })
  await expectFlowing(t, url + '/s?rooms=a', () => room().topic({ roomId: 'a' }).publish('message', { text: 'hi' }), logs, untilLog, { 'x-user': 'alice' })
  t.equal(seen.at(-1)?.request.headers['x-user'], 'alice', 'the request carries the caller\'s headers')
})

t.test('async authorize: a promise of true streams, a promise of false is 403 before any stream', async t => {
  // The verdict arrives after a real delay, as a database lookup would.
  const { app, url, seen, room, logs, untilLog } = await roomApp(t, async (request, params) => {
    await new Promise(resolve => setTimeout(resolve, 20))
    return request.headers['x-user'] === 'alice' && params.roomId !== 'secret'
  })
  await expectRefused(t, url + '/s?rooms=a', app)
  await expectRefused(t, url + '/async', app)
  await expectRefused(t, url + '/s?rooms=secret', app, { 'x-user': 'alice' })
  t.same(seen.map(s => s.params.roomId), ['a', 'a', 'secret'])
  await expectFlowing(t, url + '/s?rooms=a', () => room().topic({ roomId: 'a' }).publish('message', { text: 'hi' }), logs, untilLog, { 'x-user': 'alice' })
  await expectFlowing(t, url + '/async', () => room().topic({ roomId: 'a' }).publish('message', { text: 'hi' }), logs, untilLog, { 'x-user': 'alice' })
})

t.test('authorize must say true: anything else (a forgotten return, a truthy non-boolean) refuses', async t => {
  const verdicts: unknown[] = [undefined, 1, 'yes', null, Promise.resolve(undefined), Promise.resolve(1)]
  let i = 0
  const { app, url } = await roomApp(t, () => verdicts[i++] as boolean)
  for (const v of verdicts) {
    t.comment(`verdict ${v instanceof Promise ? 'promise' : JSON.stringify(v)}`)
    await expectRefused(t, url + '/s?rooms=a', app)
  }
})

t.test('authorize that throws or rejects answers 500 and opens no stream', async t => {
  let mode: 'throw' | 'reject' = 'throw'
  const { app, url } = await roomApp(t, async () => {
    if (mode === 'throw') throw new Error('db down')
    await new Promise(resolve => setTimeout(resolve, 5))
    throw new Error('db down later')
  })
  const { app: syncApp, url: syncUrl } = await roomApp(t, () => { throw new Error('sync boom') })
  for (const [what, u, a, set] of [
    ['sync throw', syncUrl, syncApp, () => {}],
    ['async, rejects at once', url, app, () => { mode = 'throw' }],
    ['async, rejects later', url, app, () => { mode = 'reject' }]
  ] as const) {
    set()
    const before = a.sse.stats()
    const res = await fetch(u + '/s?rooms=a', { headers: { accept: 'text/event-stream' } })
    t.equal(res.status, 500, `${what}: 500`)
    t.match(res.headers.get('content-type'), /^application\/json/, `${what}: JSON, not an event stream`)
    t.match(await res.json(), { statusCode: 500 }, `${what}: Fastify's error body`)
    const after = a.sse.stats()
    t.equal(after.streamsOpened, before.streamsOpened, `${what}: no stream opened`)
    t.equal(after.subscriptions, 0, `${what}: no subscription`)
    t.equal(after.topics, 0, `${what}: no topic held`)
  }
})

t.test('one refused topic among several refuses the whole request', async t => {
  const { app, url, seen, room, lobby } = await roomApp(t, async (request, params) => {
    if (params.roomId === 'b') return params.roomId !== 'b' // refused, synchronously decided inside an async fn
    await new Promise(resolve => setTimeout(resolve, 10))
    return true
  })
  await expectRefused(t, url + '/s?rooms=a,b,c', app)
  t.ok(seen.some(s => s.params.roomId === 'b'), 'the refusing check was asked')
  await expectRefused(t, url + '/s?rooms=a,c,b', app)
  // Mixed sync/async: a sync refusal after an async allowance.
  const { app: app2, url: url2 } = await roomApp(t, (request, params) =>
    params.roomId === 'b' ? false : new Promise<boolean>(resolve => setTimeout(() => resolve(true), 10)))
  await expectRefused(t, url2 + '/s?rooms=a,b', app2)
  // An async refusal after a sync allowance.
  const { app: app3, url: url3 } = await roomApp(t, (request, params) =>
    params.roomId === 'b' ? new Promise<boolean>(resolve => setTimeout(() => resolve(false), 10)) : true)
  await expectRefused(t, url3 + '/s?rooms=a,b', app3)
  // Nothing published afterwards goes anywhere: no topic was left subscribed.
  await lobby().publish('message', { text: 'x' })
  await room().topic({ roomId: 'a' }).publish('message', { text: 'x' })
  t.equal(app.sse.stats().deliveries, 0, 'no delivery to a refused request')
})
