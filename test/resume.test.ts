// Resume with Last-Event-ID (DESIGN "Nothing lost on reconnect", checklist
// a client that comes back gets exactly the events it missed on every
// topic it follows, once each, in strictly increasing id order, none of the
// topics it does not follow, and then live events. A fresh subscriber gets
// the head event and only what was published after it subscribed.
import t from 'tap'
import { makeApp, SseClient } from './helpers/index.js'
import { Ev, hubApp, received, seqOf } from './helpers/hub-app.js'

function strictlyIncreasing (ids: string[]): boolean {
  return ids.every((id, i) => i === 0 || seqOf(id) > seqOf(ids[i - 1]))
}

t.test('one channel: by the Last-Event-ID header and by the lastEventId query', async t => {
  const { url, publish, app } = await hubApp(t)
  const before = []
  for (let i = 0; i < 6; i++) before.push(await publish('ticker', i))

  for (const how of ['header', 'query'] as const) {
    const asked = before[1].id
    const missed = before.slice(2)
    const c = how === 'header'
      ? await SseClient.open(url + '/follow?t=ticker', { 'last-event-id': asked })
      : await SseClient.open(url + '/follow?t=ticker&lastEventId=' + encodeURIComponent(asked))
    t.equal(c.status, 200)
    await c.waitEvents(missed.length)
    t.same(received(c.events), missed.map(p => ({ id: p.id, event: 'e', topic: 'ticker', n: p.n })),
      `${how}: exactly the ${missed.length} missed events, in order`)
    // Then live: the next publish arrives right after the replay, nothing in between.
    const live = await publish('ticker', how === 'header' ? 100 : 101)
    await c.waitEvents(missed.length + 1)
    await c.until('the live event', () => c.events.some(e => e.id === live.id))
    t.same(c.events.map(e => e.id), [...missed.map(p => p.id), live.id], `${how}: live follows the replay, nothing else`)
    t.notOk(c.text.includes('event: reset'), `${how}: no reset`)
    c.close()
    before.push(live)
  }
  t.equal(app.sse.stats().resumes, 2, 'both counted as resumes')
  t.equal(app.sse.stats().resets, 0)
})

t.test('several topics: missed events of every followed topic, once each, in id order, then live', async t => {
  const { url, publish, expected } = await hubApp(t)
  const follow = ['ticker', 'a', 'b']
  const all = ['ticker', 'a', 'b', 'c'] // rooms/c is not followed
  // Interleaved, irregularly, so that consecutive ids often jump topics and
  // runs of one topic alternate with runs of another.
  let seed = 7
  const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return Math.floor(seed / 2 ** 31 * n) }
  for (let i = 0; i < 80; i++) await publish(all[rnd(4)], i)
  // Resume from an id of a topic the client does not follow: ids are hub-wide.
  const asked = (await publish('c', 1000)).id
  const fromSeq = seqOf(asked)
  for (let i = 0; i < 80; i++) await publish(all[rnd(4)], 2000 + i)
  const missed = expected(follow, fromSeq)
  t.ok(missed.length > 40, `${missed.length} missed events across the 3 followed topics`)
  t.ok(new Set(missed.map(p => p.topic)).size === 3, 'every followed topic has missed events')

  const c = await SseClient.open(url + '/follow?t=ticker,a,b', { 'last-event-id': asked })
  await c.waitEvents(missed.length)
  // Live: publish on every topic, then a final marker; wait for the marker.
  for (let i = 0; i < 20; i++) await publish(all[i % 4], 5000 + i)
  const marker = await publish('b', 9999)
  const want = expected(follow, fromSeq)
  await c.until('the marker', () => c.events.some(e => e.id === marker.id))
  const got = received(c.events)
  t.same(got.map(e => e.id), want.map(p => p.id), 'exactly the missed then the live events of the followed topics')
  t.same(got.map(e => `${e.topic}:${e.n}`), want.map(p => `${p.topic}:${p.n}`), 'each with its own payload')
  t.ok(strictlyIncreasing(got.map(e => e.id)), 'ids strictly increase')
  t.equal(new Set(got.map(e => e.id)).size, got.length, 'no duplicate')
  t.notOk(got.some(e => e.topic === 'c'), 'nothing of rooms/c, which it does not follow')
  t.notOk(c.text.includes('event: reset'), 'no reset')
  t.equal(got.filter(e => e.n >= 5000 && e.n < 5020).length, 15, 'the 15 live events of the followed topics arrived')
  c.close()
  // The same resume by the lastEventId query parameter (EventSource polyfills): the same events.
  const q = await SseClient.open(url + '/follow?t=ticker,a,b&lastEventId=' + encodeURIComponent(asked))
  await q.until('the marker', () => q.events.some(e => e.id === marker.id))
  t.same(received(q.events).map(e => e.id), want.map(p => p.id), 'by query: the same events, in the same order')
  q.close()
})

t.test('resuming from the newest id replays nothing, then live', async t => {
  const { url, publish, app } = await hubApp(t)
  for (let i = 0; i < 5; i++) await publish('ticker', i)
  await publish('a', 99)
  const asked = (await publish('ticker', 5)).id // the newest id of the hub
  const c = await SseClient.open(url + '/follow?t=ticker,a', { 'last-event-id': asked })
  await c.until('the opening retry', () => c.retries.length === 1)
  const live = await publish('a', 6)
  await c.waitEvents(1)
  t.same(c.events.map(e => e.id), [live.id], 'only the live event: nothing replayed')
  t.notOk(c.text.includes('event: reset'), 'no reset')
  t.equal(app.sse.stats().resumes, 1)
  c.close()
})

t.test('a fresh subscriber gets the head event, then only events published after it subscribed', async t => {
  const { url, publish, app } = await hubApp(t)
  const old = []
  for (let i = 0; i < 3; i++) old.push(await publish('ticker', i))
  const head = (await publish('a', 3)).id // head is on a topic the client does not follow
  const c = await SseClient.open(url + '/follow?t=ticker')
  await c.until('the head event', () => c.heads.length === 1)
  t.equal(c.heads[0].id, head, 'the head event carries the head id')
  t.equal(c.lastEventId, head, 'and the client adopts it as its last id')
  t.equal(c.events.length, 0, 'no other event')
  t.match(c.text, new RegExp(`^retry: \\d+\\n\\nevent: sse-hub:head\\nid: ${head}\\ndata:\\n\\n$`), 'retry, then exactly the head event: no history')
  const live = [await publish('ticker', 10), await publish('a', 11), await publish('ticker', 12)]
  await c.waitEvents(2)
  await c.until('the last live event', () => c.events.some(e => e.id === live[2].id))
  t.same(c.events.map(e => e.id), [live[0].id, live[2].id], 'only events of ticker published after it subscribed')
  t.not(c.events[0].id, undefined, 'the first dispatched event carries its own id')
  t.ok(c.text.indexOf(`id: ${head}\n`) < c.text.indexOf('event: e'), 'the head id came before any event')
  t.equal(app.sse.stats().resumes, 0, 'not a resume')

  // The head frame is a real resume point: drop and come back with it.
  c.close()
  const missed = await publish('ticker', 13)
  const d = await SseClient.open(url + '/follow?t=ticker', { 'last-event-id': head })
  await d.waitEvents(3)
  t.same(d.events.map(e => e.id), [live[0].id, live[2].id, missed.id], 'resuming from the head id replays what followed it')
  d.close()
})

t.test('a fresh subscriber gets an event published right after reply.sse() returned (it had already subscribed)', async t => {
  // reply.sse({ subscribe }) has attached the stream to the topic when it
  // returns; an event published from then on is "after it subscribed" and
  // must reach it (or at least be behind its head id, so a resume gets it).
  const handlerIds: string[] = []
  const { url } = await makeApp(t, app => {
    const ticker = app.sse.channel('ticker', { events: { e: Ev } })
    app.get('/join', async (req, reply) => {
      const stream = reply.sse({ subscribe: [ticker] })
      handlerIds.push(await ticker.publish('e', { topic: 'ticker', n: 1 })) // e.g. a "joined" event
      return stream
    })
  })
  const c = await SseClient.open(url + '/join')
  await c.until('the head event', () => c.heads.length === 1)
  const head = c.heads[0].id as string
  t.equal(handlerIds.length, 1)
  t.ok(seqOf(head) < seqOf(handlerIds[0]), `the head id (${head}) is before the event published after subscribing (${handlerIds[0]})`)
  await c.until('the event published after subscribing', () => c.events.some(e => e.id === handlerIds[0]), 2_000)
    .catch((err: Error) => t.fail(err.message))
  t.same(c.events.map(e => e.id), handlerIds, 'it arrived, once')
  c.close()
})
