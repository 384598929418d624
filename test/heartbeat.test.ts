// Idle streams get a ':' comment so proxies do not cut them; busy streams get
// none; one shared timer serves every stream.
import t from 'tap'
import type { SseStream } from '../lib/index.js'
import { makeApp, SseClient } from './helpers/index.js'
import { trackLibTimers } from './helpers/timers.js'

const HEARTBEAT = 200

t.test('an idle stream is pinged, never silent much longer than the interval', async t => {
  const { url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => { reply.sse() })
  }, { plugin: { heartbeat: HEARTBEAT } })
  const c = await SseClient.open(url + '/s')
  const arrivals: number[] = []
  let seen = 0
  await c.until('3 heartbeats', () => {
    while (c.comments.length > seen) { seen++; arrivals.push(performance.now()) }
    return c.comments.length >= 3
  }, 5_000)
  t.same(c.comments.slice(0, 3), ['', '', ''], 'heartbeats are bare ":" comments')
  t.equal(c.events.length, 0, 'a heartbeat dispatches no event')
  for (let i = 1; i < arrivals.length; i++) {
    const gap = arrivals[i] - arrivals[i - 1]
    // 3/4 to 1 interval by design; the upper slack is for a loaded CI machine.
    t.ok(gap >= HEARTBEAT * 0.5 && gap <= HEARTBEAT * 2, `gap ${gap.toFixed(0)} ms`)
  }
  c.close()
})

t.test('a stream that carries traffic gets no heartbeat', async t => {
  let stream!: SseStream
  const { url, app } = await makeApp(t, app => {
    app.get('/s', (req, reply) => { stream = reply.sse() })
  }, { plugin: { heartbeat: HEARTBEAT } })
  const c = await SseClient.open(url + '/s')
  // Traffic every 40 ms for 1 s, well inside 3/4 of the interval.
  for (let i = 0; i < 25; i++) {
    stream.send({ data: String(i) })
    await new Promise<void>(resolve => setTimeout(resolve, 40).unref())
  }
  await c.waitEvents(25)
  t.equal(c.comments.length, 0)
  t.equal(app.sse.stats().heartbeats, 0)
  c.close()
})

t.test('heartbeat: false sends none', async t => {
  let stream!: SseStream
  const { url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => { stream = reply.sse() })
  }, { plugin: { heartbeat: false } })
  // A witness app with heartbeats on, opened after: once its stream has had
  // 3 beats, the silent one has been idle through at least as many intervals.
  const witness = await makeApp(t, app => {
    app.get('/s', (req, reply) => { reply.sse() })
  }, { plugin: { heartbeat: HEARTBEAT } })
  const c = await SseClient.open(url + '/s')
  const w = await SseClient.open(witness.url + '/s')
  await w.until('3 heartbeats on the witness', () => w.comments.length >= 3, 5_000)
  stream.send({ data: 'marker' })
  await c.waitEvents(1)
  t.equal(c.comments.length, 0)
  c.close()
  w.close()
})

t.test('one shared timer, however many streams', async t => {
  // Every timer made by lib/, ref'd or not (the heartbeat timer is unref'd).
  const timers = trackLibTimers()
  t.teardown(() => timers.stop())
  const streams: SseStream[] = []
  const { url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => { streams.push(reply.sse()) })
  }, { plugin: { heartbeat: HEARTBEAT } })
  const baseline = timers.live()
  const clients = await Promise.all(Array.from({ length: 50 }, () => SseClient.open(url + '/s')))
  await Promise.all(clients.map(c => c.until('opening', () => c.retries.length === 1)))
  t.equal(timers.live() - baseline, 1, 'one timer for 50 streams')
  for (const c of clients) c.close()
  await Promise.all(streams.map(s => s.closed))
  t.equal(timers.live(), baseline, 'the timer stops with the last stream')
})
