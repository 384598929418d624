// Redis backend: ids and history live in Redis. In each engine (Chromium,
// Firefox, WebKit) the server is stopped and started again on the same port,
// twice, while a worker (createPublisher) keeps publishing, and two pages
// follow it: a native EventSource (the probe page) and the demo page (the
// typed client). Both reconnect by themselves with their Last-Event-ID and
// get every event exactly once, in order: none lost while the server was
// down, none twice, no reset. The first restart comes before anything was
// published: the pages only had the hub's head event, and still get every
// event published while the server was down.
import t from 'tap'
import { CONNECTION_NOISE, ENGINES, engineSkip, startEngines, openEnginePage, type EngineName } from './helpers/browser.js'
import { startDemo, ensureDist } from './helpers/demo.js'
import { openRaw, PROBE_PATH, probeRoute, type RawSeen } from './helpers/probe.js'
import { RedisServer, redisSkip } from './helpers/redis.js'
import { heavySuite } from './helpers/heavy.js'

await heavySuite()

interface Seen {
  events: Array<{ event: string, id: string, data: Record<string, unknown> }>
  resets: unknown[]
  states: Array<{ state: string, at: number }>
  state: string
  stateLoads: number
  subscriptions: number
  errors: string[]
}
declare const demo: Seen
declare const raw: Record<string, RawSeen>

const sse = { retry: 200, retryJitter: 0, shutdownJitter: 0 }
const NAMES = ['price', 'message', 'reset', 'sse-hub:head']

const noRedis = redisSkip()
let redis: RedisServer | null = null
if (noRedis === false && ENGINES.some(e => engineSkip(e) === false)) {
  redis = await new RedisServer().start()
  t.teardown(() => redis?.stop())
}

/** A worker publishing through the same channel definitions (the built package, as the demo uses). */
async function worker (t: Tap.Test, url: string, prefix: string): Promise<{ publish: () => Promise<string>, published: string[] }> {
  ensureDist()
  // @ts-expect-error plain ESM JavaScript, no declarations
  const { demoChannels } = await import('../demo/channels.mjs') as { demoChannels: () => Record<'ticker' | 'room', any> }
  const { createPublisher } = await import('../dist/esm/redis.js')
  const publisher = await createPublisher({ url, prefix, log: { info () {}, warn () {}, error () {} } })
  t.teardown(() => publisher.close())
  const { ticker, room } = demoChannels()
  publisher.channel(ticker)
  publisher.channel(room)
  const published: string[] = []
  let n = 0
  const publish = async (): Promise<string> => {
    n++
    const id = n % 5 === 0
      ? await room.topic({ roomId: 'lobby' }).publish('message', { user: 'worker', text: `message ${n}`, at: Date.now() })
      : await ticker.publish('price', { symbol: 'ACME', price: 100 + n, change: n / 100, at: Date.now() })
    published.push(id)
    return id
  }
  return { publish, published }
}

// Launched at once: the slower engines start while the first one's tests run.
const engines = startEngines(t, {}, noRedis === false ? ENGINES : [])

for (const name of ENGINES) {
  t.test(name, { skip: noRedis || engineSkip(name) }, t => restarts(t, name))
}

async function restarts (t: Tap.Test, name: EngineName): Promise<void> {
  const engine = await engines.get(t, name)
  const prefix = `demo-e2e-${name}`
  const options = { tickMs: 0, sse, redisUrl: (redis as RedisServer).url, redisPrefix: prefix }
  const { publish, published } = await worker(t, (redis as RedisServer).url, prefix)
  const engineTest = t

  let server = await startDemo(t, options, { setup: probeRoute })
  const probe = await openEnginePage(t, engine)
  const page = await openEnginePage(t, engine)
  await probe.goto(server.origin + PROBE_PATH)
  await probe.evaluate(openRaw, { key: 'es', url: '/events', names: NAMES })
  await page.goto(server.origin + '/')
  await probe.waitFor(() => raw.es.events.length === 1)
  await page.waitFor(() => demo.state === 'open')
  t.equal(await page.text('#backend'), 'redis', 'the page says which backend')
  const [head] = (await probe.evaluate(() => raw.es)).events
  t.match(head, { event: 'sse-hub:head', id: /^[0-9a-z]+-0$/, data: '' }, 'nothing published yet: the stream opened with the head event')

  /** Stops the server; the worker publishes `down` events; a new server on the port; `after` more while the pages reconnect. */
  const restart = async (t: Tap.Test, down: number, after: number): Promise<void> => {
    const stopAt = Date.now()
    await server.close()
    await probe.waitFor(() => raw.es.states.at(-1) === 0)
    await page.waitFor(() => demo.state === 'connecting')
    for (let i = 0; i < down; i++) await publish()
    t.equal(await page.evaluate(() => demo.state), 'connecting', 'the page is still waiting for the server')
    server = await startDemo(engineTest, options, { port: server.port, setup: probeRoute })
    for (let i = 0; i < after; i++) await publish()
    await probe.waitFor(() => raw.es.states.at(-1) === 1)
    await page.waitFor(() => demo.state === 'open')
    // One more, so that anything sent twice would have arrived before it.
    const sentinel = await publish()
    await probe.waitFor((id) => raw.es.events.some(e => e.id === id), sentinel)
    await page.waitFor((id) => demo.events.some(e => e.id === id), sentinel)
    t.comment(`${name}: both pages had every event ${Date.now() - stopAt} ms after the stop (${down} published while down; retry 200 ms)`)

    const wire = (await probe.evaluate(() => raw.es.events)).filter(e => e.event !== 'sse-hub:head').map(e => e.event === 'reset' ? 'reset' : e.id)
    t.same(wire, published, `native EventSource: all ${published.length} events once, in order, no reset`)
    const seen = await page.evaluate(() => demo)
    t.same(seen.events.map(e => e.id), published, `typed client: all ${published.length} events once, in order`)
    t.same(seen.resets, [], 'no reset: Redis kept the history')
    t.equal(seen.stateLoads, 1, 'the state was never loaded again')
    t.equal(seen.subscriptions, 1, 'the client\'s own EventSource reconnected (no resubscribe)')
  }

  t.test('restart while nothing was published: the pages resume from the head event\'s id', async t => {
    await restart(t, 5, 0)
    t.ok(server.app.sse.stats().resumes >= 2, 'the new server resumed both streams from history')
  })

  t.test('restart after events: every event once, those published while the server was down included', async t => {
    for (let i = 0; i < 10; i++) await publish()
    await page.waitFor((n) => demo.events.length >= n, published.length)
    await restart(t, 25, 10)
    const lastMessage = `message ${published.length - (published.length % 5)}`
    await page.waitFor((text) => Array.from(document.querySelectorAll('#messages .text')).some(e => e.textContent === text), lastMessage)
    t.equal(await page.count('#messages li'), Math.floor(published.length / 5), 'every message shown once')
    t.same(await page.evaluate(() => demo.errors), [], 'no client errors')
    for (const p of [probe, page]) t.same(p.errors.filter(e => !CONNECTION_NOISE.test(e)), [], 'no console errors other than refused connections')
  })
}
