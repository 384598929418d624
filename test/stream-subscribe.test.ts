// stream.subscribe() / stream.unsubscribe() on an open stream: a topic added
// mid-stream catches up from the stream's last id (events published to it
// after that id, even before the subscribe call, in order), then goes live;
// an unsubscribed topic stops; subscribing twice never duplicates; a refused
// subscribe rejects FST_ERR_SSEHUB_FORBIDDEN and leaves the stream as it was;
// stats() follow every step and return to 0 when the client goes.
import t from 'tap'
import { SseClient } from './helpers/index.js'
import { hubApp, received, seqOf, type Published } from './helpers/hub-app.js'

/** Rooms whose id starts with 'secret' are refused (the async ones with 'secret-async'). */
function roomAuthorize (_req: unknown, params: Record<string, string>): boolean | Promise<boolean> {
  if (params.roomId.startsWith('secret-async')) return Promise.resolve(false)
  return !params.roomId.startsWith('secret')
}

/** Publishes a marker on `topic` and waits until the client has it. */
async function marker (c: SseClient, publish: (topic: string, n: number) => Promise<Published>, topic: string): Promise<Published> {
  const m = await publish(topic, -1)
  await c.until(`the marker ${m.id}`, () => c.events.some(e => e.id === m.id))
  return m
}

function label (ps: Array<{ id: string, topic: string, n: number }>): string[] {
  return ps.map(p => `${p.id} ${p.topic}:${p.n}`)
}

t.test('a topic added mid-stream replays what it got since the stream\'s last id, in order, then live', async t => {
  const { url, publish, streams, room } = await hubApp(t, {}, roomAuthorize)
  const c = await SseClient.open(url + '/follow?t=ticker')
  await c.until('the head event', () => c.heads.length === 1)
  const stream = streams[0]

  const t1 = await publish('ticker', 1)
  const before = await publish('a', 0) // on rooms/a, but before the stream's last id: not part of its catch-up
  const t2 = await publish('ticker', 2)
  await c.until('ticker 2', () => c.events.some(e => e.id === t2.id))
  // Published to rooms/a after the stream's last delivered id, BEFORE the subscribe call:
  const a1 = await publish('a', 1)
  await publish('c', 1) // not followed
  const a2 = await publish('a', 2)

  await stream.subscribe(room.topic({ roomId: 'a' }))
  const a3 = await publish('a', 3)
  const t3 = await publish('ticker', 3)
  await c.until('ticker 3', () => c.events.some(e => e.id === t3.id))
  const got = received(c.events)
  t.same(label(got), label([t1, t2, a1, a2, a3, t3]), 'ticker, then rooms/a from the last id (a1, a2 replayed), then live on both')
  t.notOk(got.some(e => e.id === before.id), 'nothing of rooms/a from before the stream\'s last id')
  t.ok(got.every((e, i) => i === 0 || seqOf(e.id) > seqOf(got[i - 1].id)), 'ids strictly increase')
  t.notOk(c.text.includes('event: reset'))

  // A stream that has delivered nothing yet catches up from its head frame.
  const d = await SseClient.open(url + '/follow?t=ticker')
  await d.until('the head event', () => d.heads.length === 1)
  const b1 = await publish('b', 1)
  const b2 = await publish('b', 2)
  await streams[1].subscribe(room.topic({ roomId: 'b' }))
  const b3 = await publish('b', 3)
  await d.until('b 3', () => d.events.some(e => e.id === b3.id))
  t.same(label(received(d.events)), label([b1, b2, b3]), 'no delivered event yet: catch-up from the head id')
  c.close()
  d.close()
})

t.test('unsubscribe stops delivery from that topic only', async t => {
  const { url, publish, streams, room, app } = await hubApp(t)
  const c = await SseClient.open(url + '/follow?t=ticker,a')
  await c.until('the head event', () => c.heads.length === 1)
  const stream = streams[0]
  const a1 = await publish('a', 1)
  const m1 = await marker(c, publish, 'ticker')
  t.same(app.sse.stats().channels['rooms/:roomId'], { topics: 1, subscribers: 1 })

  stream.unsubscribe(room.topic({ roomId: 'a' }))
  t.equal(app.sse.stats().subscriptions, 1, 'one subscription left')
  t.same(app.sse.stats().channels['rooms/:roomId'], { topics: 0, subscribers: 0 }, 'rooms/a dropped')
  t.same(app.sse.stats().channels.ticker, { topics: 1, subscribers: 1 })
  const gone = [await publish('a', 2), await publish('a', 3)]
  const m2 = await marker(c, publish, 'ticker')
  t.same(c.events.map(e => e.id), [a1.id, m1.id, m2.id], 'nothing of rooms/a after unsubscribe; the other topic goes on')
  t.notOk(c.events.some(e => gone.some(g => g.id === e.id)))

  // Unsubscribing from what it does not follow is harmless; and it can come back.
  stream.unsubscribe(room.topic({ roomId: 'zz' }))
  t.equal(app.sse.stats().subscriptions, 1)
  await stream.subscribe(room.topic({ roomId: 'a' }))
  const a4 = await publish('a', 4)
  const m3 = await marker(c, publish, 'ticker')
  t.same(c.events.map(e => e.id), [a1.id, m1.id, m2.id, a4.id, m3.id],
    're-subscribed: live again, and no replay of what was published while unsubscribed (before the last id)')
  c.close()
})

t.test('subscribing twice to a topic (in turn, concurrently, or one followed at open) does not duplicate', async t => {
  const { url, publish, streams, room, ticker, app } = await hubApp(t)
  const c = await SseClient.open(url + '/follow?t=ticker')
  await c.until('the head event', () => c.heads.length === 1)
  const stream = streams[0]
  const a0 = await publish('a', 0) // after the last id: replayed once, however many subscribe calls
  await stream.subscribe(room.topic({ roomId: 'a' }))
  await stream.subscribe(room.topic({ roomId: 'a' }))
  await Promise.all([stream.subscribe(room.topic({ roomId: 'b' })), stream.subscribe(room.topic({ roomId: 'b' }))])
  await stream.subscribe(ticker, room.topic({ roomId: 'b' }), room.topic({ roomId: 'a' }))
  t.equal(app.sse.stats().subscriptions, 3, 'three subscriptions: ticker, rooms/a, rooms/b')
  t.same(app.sse.stats().channels, { ticker: { topics: 1, subscribers: 1 }, 'rooms/:roomId': { topics: 2, subscribers: 2 } })
  const live = [await publish('a', 1), await publish('b', 1), await publish('ticker', 1), await publish('b', 2)]
  const m = await marker(c, publish, 'a')
  t.same(label(received(c.events)), label([a0, ...live, m]), 'each event once')
  c.close()
})

t.test('a refused subscribe rejects FST_ERR_SSEHUB_FORBIDDEN; the stream stays open and keeps its topics', async t => {
  const { url, publish, streams, room, app } = await hubApp(t, {}, roomAuthorize)
  const c = await SseClient.open(url + '/follow?t=ticker,a')
  await c.until('the head event', () => c.heads.length === 1)
  const stream = streams[0]
  const statsBefore = app.sse.stats()

  await t.rejects(stream.subscribe(room.topic({ roomId: 'secret' })), { code: 'FST_ERR_SSEHUB_FORBIDDEN', statusCode: 403 }, 'refused (sync authorize)')
  await t.rejects(stream.subscribe(room.topic({ roomId: 'secret-async' })), { code: 'FST_ERR_SSEHUB_FORBIDDEN' }, 'refused (async authorize)')
  // One refused topic in a list refuses the list: none of it is followed.
  await t.rejects(stream.subscribe(room.topic({ roomId: 'b' }), room.topic({ roomId: 'secret-2' })), { code: 'FST_ERR_SSEHUB_FORBIDDEN' }, 'refused (a list with one refused topic)')

  t.equal(stream.ended, false, 'the stream is still open')
  t.equal(c.ending, null, 'the client is still connected')
  t.equal(app.sse.stats().subscriptions, statsBefore.subscriptions, 'no subscription added')
  t.same(app.sse.stats().channels, statsBefore.channels, 'no topic added')

  const secret = [await publish('secret', 1), await publish('secret-async', 1), await publish('b', 1)]
  const live = [await publish('a', 1), await publish('ticker', 1)]
  const m = await marker(c, publish, 'ticker')
  t.same(label(received(c.events)), label([...live, m]), 'its other topics keep arriving; nothing of the refused ones')
  t.notOk(c.events.some(e => secret.some(s => s.id === e.id)))
  t.notOk(c.text.includes('event: reset'))
  c.close()
})

t.test('stats() follow subscribe and unsubscribe, and return to 0 when the client goes', async t => {
  const { url, streams, room, app } = await hubApp(t)
  const zero = { openStreams: 0, subscriptions: 0, topics: 0 }
  t.match(app.sse.stats(), zero)
  const c = await SseClient.open(url + '/follow?t=ticker')
  await c.until('the head event', () => c.heads.length === 1)
  const d = await SseClient.open(url + '/follow?t=ticker,a')
  await d.until('the head event', () => d.heads.length === 1)
  const [s1, s2] = streams
  t.match(app.sse.stats(), { openStreams: 2, subscriptions: 3, topics: 2 })
  t.same(app.sse.stats().channels, { ticker: { topics: 1, subscribers: 2 }, 'rooms/:roomId': { topics: 1, subscribers: 1 } })

  await s1.subscribe(room.topic({ roomId: 'a' }), room.topic({ roomId: 'b' }))
  t.match(app.sse.stats(), { subscriptions: 5, topics: 3 })
  t.same(app.sse.stats().channels, { ticker: { topics: 1, subscribers: 2 }, 'rooms/:roomId': { topics: 2, subscribers: 3 } })

  s2.unsubscribe(room.topic({ roomId: 'a' }))
  t.match(app.sse.stats(), { subscriptions: 4, topics: 3 })
  t.same(app.sse.stats().channels['rooms/:roomId'], { topics: 2, subscribers: 2 }, 'rooms/a still has s1')

  s1.unsubscribe(room.topic({ roomId: 'b' }))
  t.match(app.sse.stats(), { subscriptions: 3, topics: 2 })
  t.same(app.sse.stats().channels['rooms/:roomId'], { topics: 1, subscribers: 1 })

  c.close()
  await s1.closed
  t.match(app.sse.stats(), { openStreams: 1, subscriptions: 1, topics: 1 })
  t.same(app.sse.stats().channels, { ticker: { topics: 1, subscribers: 1 }, 'rooms/:roomId': { topics: 0, subscribers: 0 } })

  // A stream that subscribed mid-stream and then goes: everything is released.
  await s2.subscribe(room.topic({ roomId: 'c' }))
  t.match(app.sse.stats(), { subscriptions: 2, topics: 2 })
  d.close()
  await s2.closed
  t.match(app.sse.stats(), zero, 'back to 0')
  t.same(app.sse.stats().channels, { ticker: { topics: 0, subscribers: 0 }, 'rooms/:roomId': { topics: 0, subscribers: 0 } })

  // subscribe() on a stream that has ended adds nothing.
  await s2.subscribe(room.topic({ roomId: 'late' })).catch(() => {})
  t.match(app.sse.stats(), zero, 'a subscribe after the end adds nothing')
})
