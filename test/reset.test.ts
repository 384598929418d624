// Never a silent gap (DESIGN "Nothing lost on reconnect"): when history does
// not cover what a resuming client missed, or its Last-Event-ID is unknown,
// malformed or from another epoch, the FIRST event it gets is `reset` (id: the
// hub's head, data: { lastEventId: <asked, sanitised, <= 64 chars>, reason }),
// nothing from history follows it, and live events do.
import t, { type Test } from 'tap'
import { SseClient } from './helpers/index.js'
import { hubApp, received, seqOf } from './helpers/hub-app.js'

/** Waits for `live` (published after the reset) and checks the stream is [reset, ...live] and nothing else. */
async function expectResetThenLive (
  t: Test,
  c: SseClient,
  reset: { id: string, lastEventId: string, reason: string },
  publishLive: () => Promise<Array<{ id: string }>>
): Promise<void> {
  await c.waitEvents(1)
  t.equal(c.events[0].event, 'reset', 'the first event is reset')
  t.equal(c.events[0].id, reset.id, 'its id is the head id')
  t.same(JSON.parse(c.events[0].data), { lastEventId: reset.lastEventId, reason: reset.reason }, `reason '${reset.reason}', the asked id in data`)
  const live = await publishLive()
  const last = live[live.length - 1].id
  await c.until('the live events', () => c.events.some(e => e.id === last))
  t.same(c.events.slice(1).map(e => e.id), live.map(p => p.id), 'no historical event after the reset, then every live one')
  t.equal(c.events.filter(e => e.event === 'reset').length, 1, 'one reset')
}

t.test('trimmed: history 10, 60 published, resume from event 5 -> reset, nothing replayed, then live', async t => {
  const { url, publish, published, app } = await hubApp(t, { history: 10 })
  const pub = []
  for (let i = 1; i <= 60; i++) pub.push(await publish('ticker', i))
  await publish('a', 1) // rooms/a itself is fully in history
  await publish('a', 2)
  const asked = pub[4].id // event 5: 55 ticker events missed, 45 of them trimmed

  // On the trimmed topic alone, and with another topic whose history is complete:
  // either way the gap is signalled and NOTHING is replayed (not even rooms/a's).
  for (const follow of ['ticker', 'ticker,a']) {
    const head = published[published.length - 1].id
    const c = await SseClient.open(url + `/follow?t=${follow}`, { 'last-event-id': asked })
    await expectResetThenLive(t, c, { id: head, lastEventId: asked, reason: 'trimmed' }, async () => [await publish('ticker', 1000)])
    c.close()
    t.notOk(c.text.includes('"topic":"a"'), `${follow}: rooms/a's history was not replayed either`)
  }
  t.equal(app.sse.stats().resets, 2)
  t.equal(app.sse.stats().resumes, 0, 'a reset is not a resume')

  // Resuming from the reset's id replays exactly what came after it.
  const c = await SseClient.open(url + '/follow?t=ticker,a', { 'last-event-id': asked })
  await c.waitEvents(1)
  const resetId = c.events[0].id as string
  t.equal(c.events[0].event, 'reset')
  c.close()
  const after = [await publish('a', 3), await publish('c', 4), await publish('ticker', 5), await publish('a', 6)]
  const d = await SseClient.open(url + '/follow?t=ticker,a', { 'last-event-id': resetId })
  const want = after.filter(p => p.topic !== 'c')
  await d.waitEvents(want.length)
  const marker = await publish('ticker', 7)
  await d.until('the marker', () => d.events.some(e => e.id === marker.id))
  t.same(received(d.events).map(e => `${e.id} ${e.topic}:${e.n}`), [...want, marker].map(p => `${p.id} ${p.topic}:${p.n}`),
    'after the reset id: exactly what came after it, once, in order')
  t.notOk(d.text.includes('event: reset'), 'no second reset')
  d.close()
})

t.test('trimmed, at the boundary: from the oldest event still covered it is a plain resume; one further back, a reset', async t => {
  const { url, publish } = await hubApp(t, { history: 10 })
  const pub = []
  for (let i = 1; i <= 60; i++) pub.push(await publish('ticker', i))
  t.equal(seqOf(pub[49].id), 50, 'ticker events are seq 1..60; history keeps 51..60')
  // Live markers go to rooms/a, which has its own history: ticker's stays 51..60.
  const edge = await SseClient.open(url + '/follow?t=ticker,a', { 'last-event-id': pub[49].id })
  await edge.waitEvents(10)
  const mark = await publish('a', 2000)
  await edge.until('the marker', () => edge.events.some(e => e.id === mark.id))
  t.same(edge.events.map(e => e.id), [...pub.slice(50), mark].map(p => p.id), 'from event 50: 51..60 then live, no reset')
  edge.close()
  const past = await SseClient.open(url + '/follow?t=ticker,a', { 'last-event-id': pub[48].id })
  await expectResetThenLive(t, past, { id: mark.id, lastEventId: pub[48].id, reason: 'trimmed' }, async () => [await publish('a', 2001)])
  past.close()
})

t.test('unknown: a foreign string, and a well-formed id beyond the head', async t => {
  const { url, publish, published } = await hubApp(t)
  const first = await publish('ticker', 1)
  const second = (await publish('ticker', 2)).id
  const epoch = second.slice(0, second.lastIndexOf('-'))
  const beyond = `${epoch}-${seqOf(second) + 1000}`
  for (const [asked, how] of [['zzz', 'header'], ['zzz', 'query'], [beyond, 'header'], [beyond, 'query']]) {
    const head = published[published.length - 1].id
    const c = how === 'header'
      ? await SseClient.open(url + '/follow?t=ticker', { 'last-event-id': asked })
      : await SseClient.open(url + '/follow?t=ticker&lastEventId=' + encodeURIComponent(asked))
    t.equal(c.status, 200)
    await expectResetThenLive(t, c, { id: head, lastEventId: asked, reason: 'unknown' }, async () => [await publish('ticker', 3)])
    t.notOk(c.events.some(e => e.id === first.id), 'history was not replayed')
    c.close()
  }
})

t.test('epoch: an id from another hub (another app instance) -> reset epoch', async t => {
  const one = await hubApp(t)
  const foreign = (await one.publish('ticker', 1)).id
  const two = await hubApp(t)
  await two.publish('ticker', 1)
  const head = (await two.publish('ticker', 2)).id
  t.not(foreign.split('-')[0], head.split('-')[0], 'two instances, two epochs')
  t.ok(seqOf(foreign) < seqOf(head), 'the foreign seq alone would look resumable here')
  const c = await SseClient.open(two.url + '/follow?t=ticker', { 'last-event-id': foreign })
  await expectResetThenLive(t, c, { id: head, lastEventId: foreign, reason: 'epoch' }, async () => [await two.publish('ticker', 3)])
  c.close()
})

t.test('malformed Last-Event-ID -> unknown, with the id sanitised and truncated, never raw on the wire', async t => {
  const { url, publish } = await hubApp(t)
  const head = (await publish('ticker', 1)).id
  const long = 'x'.repeat(200)
  const printable100 = 'y'.repeat(100) // well-formed as an SSE id, not a hub id
  const cases: Array<{ path: string, headers?: Record<string, string>, shown: string, what: string }> = [
    { what: '200 chars (header)', path: '/follow?t=ticker', headers: { 'last-event-id': long }, shown: 'x'.repeat(64) },
    { what: '200 chars (query)', path: '/follow?t=ticker&lastEventId=' + long, shown: 'x'.repeat(64) },
    { what: '100 printable chars', path: '/follow?t=ticker', headers: { 'last-event-id': printable100 }, shown: 'y'.repeat(64) },
    { what: 'NUL (query %00)', path: '/follow?t=ticker&lastEventId=ab%00cd', shown: 'ab?cd' },
    { what: 'NUL, LF, CR in a hub-like id (query)', path: `/follow?t=ticker&lastEventId=${encodeURIComponent(head)}%00%0A%0Devent%3A%20x`, shown: `${head}???event: x` },
    { what: 'NUL and 200 chars (query)', path: '/follow?t=ticker&lastEventId=%00' + long, shown: '?' + 'x'.repeat(63) }
  ]
  for (const k of cases) {
    const c = await SseClient.open(url + k.path, k.headers)
    t.equal(c.status, 200, k.what)
    await c.waitEvents(1)
    t.equal(c.events[0].event, 'reset', `${k.what}: reset first`)
    t.equal(c.events[0].id, head, `${k.what}: with the head id`)
    t.same(JSON.parse(c.events[0].data), { lastEventId: k.shown, reason: 'unknown' }, `${k.what}: sanitised and truncated id in data`)
    t.notOk(c.text.includes('\0'), `${k.what}: no NUL on the wire`)
    t.notOk(/x{65}|y{65}/.test(c.text), `${k.what}: no run longer than 64 of the asked id on the wire`)
    t.notOk(/\r|\nevent: x/.test(c.text), `${k.what}: nothing injected`)
    t.equal(c.events.length, 1, `${k.what}: nothing but the reset`)
    c.close()
  }
})

t.test('historyTtl: events older than the TTL are gone -> trimmed', async t => {
  const { url, publish } = await hubApp(t, { historyTtl: 200 })
  const pub = [await publish('ticker', 1), await publish('ticker', 2), await publish('ticker', 3)]
  // Control, right away (well inside the TTL): the same resume replays.
  const c = await SseClient.open(url + '/follow?t=ticker', { 'last-event-id': pub[0].id })
  await c.waitEvents(2)
  t.same(c.events.map(e => e.id), [pub[1].id, pub[2].id], 'inside the TTL: replayed')
  c.close()
  // A fixed wait on purpose: the TTL elapsing IS the feature under test. Nothing
  // is awaited through this timer; it only lets 300 ms (> historyTtl 200) pass.
  await new Promise(resolve => setTimeout(resolve, 300))
  const d = await SseClient.open(url + '/follow?t=ticker', { 'last-event-id': pub[0].id })
  await expectResetThenLive(t, d, { id: pub[2].id, lastEventId: pub[0].id, reason: 'trimmed' }, async () => [await publish('ticker', 4)])
  d.close()
})
