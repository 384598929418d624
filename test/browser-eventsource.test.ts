// Where the engines' EventSources differ, and what the hub and the typed
// client do about it, in Chromium, Firefox and WebKit:
// - An id-only block (`id: x`, a blank line, no data) dispatches nothing.
//   Chromium still adopts its id as the last event id; Firefox and WebKit do
//   not (no Last-Event-ID on the next connection). A block with an event
//   name and an empty `data:` is adopted by all three: that is why the hub's
//   head event carries an empty `data:`.
// - A non-200 answer (a proxy's 502, an app that is restarting) closes every
//   engine's EventSource for good; the typed client opens a new one after
//   its backoff, resuming from its last id, and nothing is lost.
import t from 'tap'
import type { Socket } from 'node:net'
import { CONNECTION_NOISE, ENGINES, engineSkip, startEngines, openEnginePage, type EngineName, type EnginePage } from './helpers/browser.js'
import { startDemo, until, type DemoApp } from './helpers/demo.js'
import { openRaw, openTyped, PROBE_PATH, probeRoute, type RawSeen, type TypedSeen } from './helpers/probe.js'
import { heavySuite } from './helpers/heavy.js'

await heavySuite()

declare const raw: Record<string, RawSeen>
declare const typed: Record<string, TypedSeen>

/** Measured: Chromium 156 adopts the id of an id-only block; Firefox 153 ESR and WebKitGTK 2.50 do not. */
const ADOPTS_ID_ONLY: Record<EngineName, boolean> = { chromium: true, firefox: false, webkit: false }

interface Seen { path: string, lastEventId: string | undefined, query: string | null, status: number }

/** The demo plus /frames/:kind (one frame, then the end) and a switch that answers 503 on /events. */
async function app (t: Tap.Test) {
  const requests: Seen[] = []
  const sockets: Socket[] = []
  const control = { refusing: false }
  const server = await startDemo(t, { tickMs: 0, sse: { retry: 200, retryJitter: 0, shutdownJitter: 0 } }, {
    setup: (app: DemoApp) => {
      probeRoute(app)
      app.addHook('onRequest', async (request, reply) => {
        const url = new URL(request.url, 'http://x')
        if (url.pathname !== '/events' && !url.pathname.startsWith('/frames/')) return
        const seen = { path: url.pathname + url.search, lastEventId: request.headers['last-event-id'] as string | undefined, query: url.searchParams.get('lastEventId'), status: 200 }
        requests.push(seen)
        if (url.pathname === '/events' && control.refusing) {
          seen.status = 503
          return reply.code(503).type('text/html').send('<h1>503 the app is restarting</h1>')
        }
        sockets.push(request.raw.socket)
      })
      app.get('/frames/:kind', (request, reply) => {
        const { kind } = request.params as { kind: string }
        reply.hijack()
        reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
        // The first connection gets the frame; each later one ends at once, so the page reconnects again.
        const first = requests.filter(r => r.path.startsWith(`/frames/${kind}`)).length === 1
        const frame = kind === 'id-only' ? 'id: frame-1\n\n' : 'event: sse-hub:head\nid: frame-1\ndata:\n\n'
        reply.raw.end('retry: 50\n' + (first ? frame : ': again\n\n'))
      })
    }
  })
  return { ...server, requests, sockets, control }
}

// Launched at once: the slower engines start while the first one's tests run.
const engines = startEngines(t)

for (const name of ENGINES) {
  t.test(name, { skip: engineSkip(name) }, async t => {
    const engine = await engines.get(t, name)
    const page = await openEnginePage(t, engine)
    const server = await app(t)
    await page.goto(server.origin + PROBE_PATH)

    t.test('an id-only block: its id is a resume point in Chromium only; with an empty data: line, in every engine', async t => {
      for (const kind of ['id-only', 'empty-data']) {
        await page.evaluate(openRaw, { key: kind, url: `/frames/${kind}`, names: ['sse-hub:head'] })
        // Two reconnections: the first carries what the frame left, the second shows it stays.
        await page.waitFor((kind) => raw[kind].errors >= 3, kind)
        await page.evaluate((kind) => { (window as unknown as { sources: Record<string, EventSource> }).sources[kind].close() }, kind)
        const sent = server.requests.filter(r => r.path === `/frames/${kind}`).map(r => r.lastEventId ?? null)
        const adopted = sent[1] === 'frame-1'
        t.comment(`${name}, ${kind}: Last-Event-ID on each connection: ${JSON.stringify(sent.slice(0, 3))}`)
        t.equal(sent[0], null, `${kind}: the first connection has no id`)
        if (kind === 'id-only') {
          t.equal(adopted, ADOPTS_ID_ONLY[name], `${kind}: ${name} ${ADOPTS_ID_ONLY[name] ? 'adopts' : 'does NOT adopt'} the id of a block that dispatches nothing`)
        } else {
          t.ok(adopted, `${kind}: ${name} adopts the id of an event with empty data (the hub's head event)`)
          t.same((await page.evaluate((kind) => raw[kind].events, kind)).map(e => [e.event, e.id, e.data]), [['sse-hub:head', 'frame-1', '']], 'dispatched once, with empty data')
        }
        t.equal(sent[2], adopted ? 'frame-1' : null, 'and keeps it (or nothing) on the next connection')
      }
    })

    t.test('a 503 closes the native EventSource for good; the typed client comes back from its last id, nothing lost', async t => {
      const publish = (n: number): Promise<string> => server.app.demo.tick(['ACME', 'HOOLI'][n % 2])
      await page.evaluate(openRaw, { key: 'native', url: '/events?who=native', names: ['price', 'reset'] })
      await page.evaluate(openTyped, { key: 'client', url: '/events?who=client', names: ['price', 'message'], options: { reconnect: { delay: 100, maxDelay: 400 } } })
      await page.waitFor(() => raw.native.opens === 1 && typed.client.states.includes('open'))
      const ids = [await publish(1)]
      await page.waitFor((id) => raw.native.events.some(e => e.id === id) && typed.client.events.some(e => e.id === id), ids[0])

      // The app "restarts": its streams are cut and it answers 503 for a while.
      server.control.refusing = true
      const cutAt = Date.now()
      for (const socket of server.sockets.splice(0)) socket.destroy()
      await page.waitFor(() => raw.native.states.at(-1) === 2)
      const refused = (who: string): number => server.requests.filter(r => r.path.includes(`who=${who}`) && r.status === 503).length
      // The EventSource's own attempt, then at least two of the client's.
      await until('three refusals of the typed client', () => refused('client') >= 3)
      t.ok(refused('client') >= 3, `the typed client kept trying (${refused('client')} attempts answered 503)`)
      for (let i = 2; i <= 4; i++) ids.push(await publish(i))
      server.control.refusing = false
      await page.waitFor((id) => typed.client.events.some(e => e.id === id), ids.at(-1))
      const back = Date.now() - cutAt
      ids.push(await publish(5))
      await page.waitFor((id) => typed.client.events.some(e => e.id === id), ids.at(-1))
      t.comment(`${name}: typed client back ${back} ms after the cut (${refused('client')} refusals, backoff 100..400 ms)`)

      const client = await page.evaluate(() => typed.client)
      t.same(client.events.map(e => e.id), ids, 'typed client: every event once, in order, those published while refused included')
      t.same(client.resets, [], 'no reset: the hub replayed from the id it resumed with')
      t.notOk(client.states.includes('closed'), 'typed client: never closed')
      const retried = server.requests.filter(r => r.path.includes('who=client')).slice(2)
      t.ok(retried.length >= 3 && retried.every(r => r.query === ids[0] && r.lastEventId === undefined), 'each new EventSource resumed from the last id, as the lastEventId parameter')
      const native = await page.evaluate(() => raw.native)
      t.same(native.events.map(e => e.id), [ids[0]], 'the native EventSource got nothing after the 503...')
      t.equal(native.states.at(-1), 2, '...and stays closed (readyState CLOSED)')
      t.equal(refused('native'), 1, 'it tried once, with its Last-Event-ID, and gave up')
      t.equal(server.requests.find(r => r.path.includes('who=native') && r.status === 503)?.lastEventId, ids[0])
      checkConsole(t, page)
    })
  })
}

function checkConsole (t: Tap.Test, page: EnginePage): void {
  t.same(page.errors.filter(e => !CONNECTION_NOISE.test(e)), [], 'no console errors other than failed connections')
}
