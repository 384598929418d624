// Three small ways to a silent gap or a leaked slot (issue 12, case 7):
// - `?lastEventId=a&lastEventId=b` (the parameter repeated) is malformed:
//   the stream gets `reset`, not a silent fresh start;
// - a template parameter named `__proto__` is refused at channel(): as an
//   object key it would have collapsed every topic into one;
// - a client that leaves while an async `authorize` is pending gives its
//   maxConnections and maxStreamsPerClient slots back at once.
import t from 'tap'
import { Type } from '@sinclair/typebox'
import { makeApp, SseClient } from './helpers/index.js'
import { hubApp } from './helpers/hub-app.js'
import { stalledClient } from './helpers/raw.js'

const Ev = Type.Object({ n: Type.Number() })

t.test('a repeated lastEventId query parameter gets reset (unknown), not a fresh start', async t => {
  const { url, publish } = await hubApp(t)
  const p = await publish('ticker', 1)
  const c = await SseClient.open(url + `/follow?t=ticker&lastEventId=${p.id}&lastEventId=${p.id}`)
  await c.until('a reset', () => c.events.length > 0)
  t.equal(c.events[0].event, 'reset', 'reset first')
  t.match(JSON.parse(c.events[0].data), { reason: 'unknown', lastEventId: `${p.id},${p.id}` })
  t.equal(c.heads.length, 0, 'no fresh start (no head event)')
  c.close()
})

t.test('a template parameter named __proto__ is refused at channel()', async t => {
  const { app } = await makeApp(t, () => {}, { listen: false })
  t.throws(() => app.sse.channel('rooms/:__proto__', { events: { e: Ev } }), { code: 'FST_ERR_SSEHUB_CHANNEL_INVALID', message: /__proto__/ })
  // Other parameter names that are Object.prototype members keep topics apart.
  const ch = app.sse.channel('rooms/:constructor', { events: { e: Ev } })
  t.not(ch.topic({ constructor: 'a' }).key, ch.topic({ constructor: 'b' }).key)
  t.equal(ch.topic({ constructor: 'a' }).key, 'rooms/a')
})

t.test('a client that leaves during a pending async authorize frees its slots at once', async t => {
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  let asked = 0
  let askedOnce!: () => void
  const wasAsked = new Promise<void>(resolve => { askedOnce = resolve })
  let gone!: () => void
  const leftServer = new Promise<void>(resolve => { gone = resolve })
  const { app, url } = await makeApp(t, app => {
    const ch = app.sse.channel('private', {
      events: { e: Ev },
      authorize: async () => {
        asked++
        askedOnce()
        await gate
        return true
      }
    })
    app.get('/s', (req, reply) => {
      reply.raw.once('close', () => gone())
      return reply.sse({ subscribe: [ch] })
    })
    app.get('/open', (req, reply) => reply.sse())
  }, { plugin: { maxConnections: 1, maxStreamsPerClient: 1 } })
  t.teardown(() => release())
  // Its response headers never come while authorize hangs: a raw socket that just leaves.
  const first = await stalledClient(url, '/s')
  await wasAsked
  first.destroy()
  await leftServer
  // Its slots are back as soon as the server saw it go, while authorize still hangs.
  const second = await SseClient.open(url + '/open')
  await second.until('the opening frame', () => second.retries.length > 0)
  const stats = app.sse.stats()
  t.equal(stats.openStreams, 1, 'the new stream is open')
  t.equal(stats.shed, 0, 'not shed over maxConnections')
  t.equal(stats.shedPerClient, 0, 'not shed over maxStreamsPerClient')
  t.equal(second.ending, null, 'and stays open')
  t.equal(asked, 1)
  release()
  second.close()
})
