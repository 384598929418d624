// Topic parameters are checked by topic(), synchronously: every value a
// string of 1-128 characters with no "/" and no control character (C0, DEL,
// C1), every declared parameter present. A templated channel is only used
// through its topics. A route that feeds a hostile URL parameter to topic()
// answers 400 JSON and opens no stream; unicode values work, and parameters
// never reach the wire.
import t from 'tap'
import { Type } from '@sinclair/typebox'
import { makeApp, SseClient } from './helpers/index.js'
import { closeClients } from './helpers/closing.js'

const Message = Type.Object({ text: Type.String() })

t.test('hostile topic params throw FST_ERR_SSEHUB_TOPIC_INVALID synchronously', async t => {
  const { app } = await makeApp(t, () => {}, { listen: false })
  const room = app.sse.channel('rooms/:roomId', { events: { message: Message } })
  const pair = app.sse.channel('orgs/:org/rooms/:room', { events: { message: Message } })
  const topic = room.topic.bind(room) as unknown as (p: unknown) => unknown
  const pairTopic = pair.topic.bind(pair) as unknown as (p: unknown) => unknown
  const cases: Array<[string, () => unknown]> = [
    ['empty string', () => topic({ roomId: '' })],
    ['129 characters', () => topic({ roomId: 'x'.repeat(129) })],
    ['a slash', () => topic({ roomId: 'a/b' })],
    ['a lone slash', () => topic({ roomId: '/' })],
    ['LF', () => topic({ roomId: '\n' })],
    ['CR inside', () => topic({ roomId: 'a\rb' })],
    ['NUL', () => topic({ roomId: '\u0000' })],
    ['TAB', () => topic({ roomId: 'a\tb' })],
    ['DEL', () => topic({ roomId: '\u007f' })],
    ['C1 NEL', () => topic({ roomId: '\u0085' })],
    ['C1 0x9f', () => topic({ roomId: 'a\u009f' })],
    ['a number', () => topic({ roomId: 5 })],
    ['a boolean', () => topic({ roomId: true })],
    ['an object value', () => topic({ roomId: { toString: () => 'a' } })],
    ['an array value', () => topic({ roomId: ['a'] })],
    ['missing param', () => topic({})],
    ['misspelt param', () => topic({ roomid: 'a' })],
    ['one of two params missing', () => pairTopic({ org: 'acme' })],
    ['second of two params hostile', () => pairTopic({ org: 'acme', room: 'x\ny' })],
    ['params null', () => topic(null)],
    ['params undefined', () => topic(undefined)],
    ['params a string', () => topic('a')],
    ['params an array', () => topic(['a'])]
  ]
  for (const [what, fn] of cases) {
    let result: unknown
    let err = null as { code?: string, statusCode?: number, message?: string } | null
    try {
      result = fn()
    } catch (e) {
      err = e as { code?: string, statusCode?: number, message?: string }
    }
    t.ok(err !== null, `${what}: thrown synchronously${err === null ? ` (returned ${result instanceof Promise ? 'a promise' : typeof result})` : ''}`)
    t.equal(err?.code, 'FST_ERR_SSEHUB_TOPIC_INVALID', `${what}: code`)
    t.equal(err?.statusCode, 400, `${what}: 400`)
    t.match(err?.message, /"rooms\/:roomId"|"orgs\/:org\/rooms\/:room"/, `${what}: names the channel`)
  }
  // The edges that are fine.
  t.equal(room.topic({ roomId: 'x'.repeat(128) }).key, 'rooms/' + 'x'.repeat(128), '128 characters is fine')
  t.equal(room.topic({ roomId: 'a b.c:d-e_f~' }).key, 'rooms/a b.c:d-e_f~', 'spaces and punctuation are fine')
  t.same(room.topic({ roomId: 'a', extra: 'ignored' } as never).params, { roomId: 'a' }, 'undeclared params are not kept')
  t.equal(pair.topic({ org: 'acme', room: 'r1' }).key, 'orgs/acme/rooms/r1')
  // A plain channel has no topics.
  const plain = app.sse.channel('plain', { events: { message: Message } })
  t.throws(() => (plain as unknown as { topic: (p: unknown) => unknown }).topic({}), { code: 'FST_ERR_SSEHUB_TOPIC_INVALID' })
})

t.test('a templated channel is used only through topic()', async t => {
  let room!: { publish?: unknown, topic: (p: { roomId: string }) => unknown }
  let sseError = null as { code?: string } | null
  let handleError = null as { code?: string } | null
  let handleStillOpen = false
  const { app, url } = await makeApp(t, app => {
    const ch = app.sse.channel('rooms/:roomId', { events: { message: Message } })
    room = ch as never
    app.get('/whole', (req, reply) => {
      try {
        return reply.sse({ subscribe: [ch as never] })
      } catch (err) {
        sseError = err as { code?: string }
        throw err
      }
    })
    app.get('/late', async (req, reply) => {
      const stream = reply.sse()
      await stream.subscribe(ch as never).catch((err: { code?: string }) => { handleError = err })
      handleStillOpen = !stream.ended
      stream.close()
    })
  })
  // Publishing to the channel itself (not a topic) rejects.
  const publish = (room as unknown as { publish: (e: string, d: unknown) => Promise<string> }).publish
  const p = publish.call(room, 'message', { text: 'hi' })
  t.ok(p instanceof Promise, 'publish returns a promise')
  await t.rejects(p, { code: 'FST_ERR_SSEHUB_TOPIC_INVALID', message: /topic\(\{ roomId \}\)/ })
  t.equal(app.sse.stats().published, 0)

  // Subscribing a stream to the channel itself throws in reply.sse() (a 400 for the route).
  const res = await fetch(url + '/whole')
  t.equal(res.status, 400)
  t.match(res.headers.get('content-type'), /^application\/json/)
  t.match(await res.json(), { code: 'FST_ERR_SSEHUB_TOPIC_INVALID' })
  t.equal(sseError?.code, 'FST_ERR_SSEHUB_TOPIC_INVALID', 'reply.sse() threw it')

  // stream.subscribe(channel) rejects the same way; the stream stays usable.
  const late = await SseClient.open(url + '/late')
  await late.waitEnd()
  t.equal(handleError?.code, 'FST_ERR_SSEHUB_TOPIC_INVALID', 'stream.subscribe(channel) rejects')
  t.ok(handleStillOpen, 'the stream stayed open after the refusal')
  t.equal(app.sse.stats().subscriptions, 0, 'no subscription was made')
})

t.test('a route that passes a hostile URL param to topic() answers 400 JSON and opens no stream', async t => {
  const { app, url } = await makeApp(t, app => {
    const room = app.sse.channel('rooms/:roomId', { events: { message: Message } })
    app.get('/rooms/:roomId/events', (req, reply) =>
      reply.sse({ subscribe: [room.topic({ roomId: (req.params as { roomId: string }).roomId })] }))
    app.get('/q', (req, reply) =>
      reply.sse({ subscribe: [room.topic({ roomId: (req.query as { room: string }).room })] }))
  })
  const hostile: Array<[string, string]> = [
    ['LF', '/rooms/a%0Ab/events'],
    ['CR', '/rooms/a%0Db/events'],
    ['NUL', '/rooms/%00/events'],
    ['DEL', '/rooms/%7F/events'],
    ['C1 NEL (UTF-8)', '/rooms/%C2%85/events'],
    ['encoded slash', '/rooms/a%2Fb/events'],
    ['query: 129 characters (URL params stop at Fastify maxParamLength 100)', `/q?room=${'x'.repeat(129)}`],
    ['query: empty', '/q?room='],
    ['query: missing', '/q'],
    ['query: repeated (an array)', '/q?room=a&room=b'],
    ['query: LF', '/q?room=%0A']
  ]
  for (const [what, path] of hostile) {
    const res = await fetch(url + path, { headers: { accept: 'text/event-stream' } })
    const type = res.headers.get('content-type') ?? ''
    const body = await res.text()
    t.equal(res.status, 400, `${what}: 400`)
    t.match(type, /^application\/json/, `${what}: JSON, not an event stream`)
    t.match(JSON.parse(body), { code: 'FST_ERR_SSEHUB_TOPIC_INVALID', statusCode: 400 }, `${what}: the code`)
  }
  t.match(app.sse.stats(), { streamsOpened: 0, openStreams: 0, subscriptions: 0, topics: 0 }, 'no stream was opened, no topic held')
})

t.test('unicode params work, topics stay distinct, and params never reach the wire', async t => {
  let room!: { topic: (p: { roomId: string }) => { publish: (e: 'message', d: { text: string }) => Promise<string> } }
  const { url, logs, untilLog } = await makeApp(t, app => {
    const ch = app.sse.channel('rooms/:roomId', { events: { message: Message } })
    room = ch
    app.get('/rooms/:roomId/events', (req, reply) =>
      reply.sse({ subscribe: [ch.topic({ roomId: (req.params as { roomId: string }).roomId })] }))
  })
  const names = ['café', 'cafe', '🎉', '日本語', 'a b']
  const clients = new Map<string, SseClient>()
  for (const name of names) {
    const c = await SseClient.open(`${url}/rooms/${encodeURIComponent(name)}/events`)
    t.equal(c.status, 200, `${name}: opened`)
    await c.until('head id', () => /^id: /m.test(c.text))
    clients.set(name, c)
  }
  const ids = new Map<string, string>()
  for (const name of names) ids.set(name, await room.topic({ roomId: name }).publish('message', { text: `to #${names.indexOf(name)}` }))
  for (const name of names) {
    const c = clients.get(name)!
    await c.waitEvents(1)
    // A sentinel on the same topic proves nothing else is still in flight.
    const sentinel = await room.topic({ roomId: name }).publish('message', { text: 'end' })
    await c.until('sentinel', () => c.events.some(e => e.id === sentinel))
    t.same(c.events.map(e => [e.event, e.id, e.data]), [
      ['message', ids.get(name), JSON.stringify({ text: `to #${names.indexOf(name)}` })],
      ['message', sentinel, '{"text":"end"}']
    ], `${name}: its own events only`)
    const lines = c.text.split('\n').filter(l => l !== '')
    const odd = lines.filter(l => !/^(retry|id|event|data):( |$)/.test(l))
    t.same(odd, [], `${name}: only retry/id/event/data lines on the wire`)
    if (odd.length > 0) t.comment(JSON.stringify(c.text))
    t.notOk(c.text.includes(name) || c.text.includes('rooms/'), `${name}: neither the param nor the topic is on the wire`)
    await closeClients(logs, untilLog, c)
  }
})
