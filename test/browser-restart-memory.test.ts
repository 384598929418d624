// Memory backend: history goes with the process. In each engine (Chromium,
// Firefox, WebKit) the server is stopped and started again on the same port,
// twice, while two pages follow it:
// - a native EventSource (the probe page): it reconnects by itself with its
//   Last-Event-ID, and the new hub, which cannot replay (another epoch),
//   answers `reset` naming exactly the last id the page had;
// - the demo page (the typed client): on `reset` it loads the state again
//   (which holds what was published while it was away) and subscribes from
//   the state's id. Then live again.
// The first restart comes before anything was published: the pages only had
// the hub's head event, and must still resume from its id (an id-only frame
// would not do in Firefox and WebKit: see browser-eventsource).
import t from 'tap'
import { CONNECTION_NOISE, ENGINES, engineSkip, startEngines, openEnginePage, type EnginePage } from './helpers/browser.js'
import { startDemo, type DemoApp } from './helpers/demo.js'
import { openRaw, PROBE_PATH, probeRoute, type RawSeen } from './helpers/probe.js'
import { heavySuite } from './helpers/heavy.js'

await heavySuite()

interface Seen {
  events: Array<{ event: string, id: string, data: Record<string, unknown> }>
  resets: Array<{ lastEventId: string, reason: string, id: string, at: number }>
  states: Array<{ state: string, at: number }>
  state: string
  stateLoads: number
  subscriptions: number
  errors: string[]
}
declare const demo: Seen
declare const raw: Record<string, RawSeen>

// Fast reconnection for the test: the browser retries every 200 ms.
const sse = { retry: 200, retryJitter: 0, shutdownJitter: 0 }
const NAMES = ['price', 'message', 'reset', 'sse-hub:head']

const epochOf = (id: string): string => id.split('-')[0]
const say = (app: DemoApp, user: string, text: string): Promise<string> => app.demo.room.topic({ roomId: 'lobby' }).publish('message', { user, text, at: Date.now() })

// Launched at once: the slower engines start while the first one's tests run.
const engines = startEngines(t)

for (const name of ENGINES) {
  t.test(name, { skip: engineSkip(name) }, async t => {
    const engine = await engines.get(t, name)
    const probe = await openEnginePage(t, engine)
    const page = await openEnginePage(t, engine)

    const engineTest = t
    let server = await startDemo(t, { tickMs: 0, sse }, { setup: probeRoute })
    await probe.goto(server.origin + PROBE_PATH)
    await probe.evaluate(openRaw, { key: 'es', url: '/events', names: NAMES })
    await page.goto(server.origin + '/')
    await probe.waitFor(() => raw.es.events.length === 1)
    await page.waitFor(() => demo.state === 'open' && demo.stateLoads === 1)
    const [head] = (await probe.evaluate(() => raw.es)).events
    t.match(head, { event: 'sse-hub:head', data: '' }, 'a fresh stream on a quiet hub opens with the head event, empty data')
    t.match(head.id, /^[0-9a-z]+-0$/, 'its id: nothing published yet')

    /** Stops the server, starts a new one on its port that publishes `away` before it listens; both pages must reset. */
    const restart = async (t: Tap.Test, lastId: string, resets: number): Promise<{ away: string, reconnectMs: number }> => {
      const stopAt = Date.now()
      await server.close()
      await probe.waitFor(() => raw.es.states.at(-1) === 0)
      await page.waitFor(() => demo.state === 'connecting')
      let away = ''
      // Closed at the engine's teardown: the next test restarts it.
      server = await startDemo(engineTest, { tickMs: 0, sse }, {
        port: server.port,
        setup: probeRoute,
        // No stream can carry this one: only the state fetched after the reset has it.
        beforeListen: async app => { away = await say(app, 'new', 'while you were away') }
      })
      t.not(epochOf(away), epochOf(lastId), 'the new process has a new epoch')
      await probe.waitFor((n) => raw.es.events.filter(e => e.event === 'reset').length === n, resets)
      await page.waitFor((n) => demo.resets.length === n && demo.stateLoads === n + 1 && demo.state === 'open' && demo.subscriptions === n + 1, resets)
      const reconnectMs = Date.now() - stopAt

      const reset = (await probe.evaluate(() => raw.es.events)).filter(e => e.event === 'reset').at(-1) as RawSeen['events'][number]
      t.same(JSON.parse(reset.data), { lastEventId: lastId, reason: 'epoch' }, 'native EventSource: reset names the last id it had, reason epoch')
      t.equal(epochOf(reset.id), epochOf(away), 'and carries the new hub\'s head id')
      const typed = (await page.evaluate(() => demo.resets)).at(-1) as Seen['resets'][number]
      t.match(typed, { lastEventId: lastId, reason: 'epoch' }, 'typed client: the same reset')
      await page.waitFor((id) => document.querySelector(`#messages li[data-id="${id}"]`) !== null, away)
      t.notOk((await page.evaluate(() => demo.events)).some(e => e.id === away), 'the demo page shows what was published while it was away, from the state, not as an event')
      return { away, reconnectMs }
    }

    t.test('restart while nothing was published: both resume from the head event\'s id', async t => {
      const { reconnectMs } = await restart(t, head.id, 1)
      t.comment(`${name}: both pages reset and live again ${reconnectMs} ms after the stop (retry 200 ms)`)
    })

    t.test('restart after events: reset exactly after the last one, then live again', async t => {
      const p1 = await server.app.demo.tick('ACME')
      const m1 = await say(server.app, 'old', 'before the restart')
      await probe.waitFor((id) => raw.es.events.some(e => e.id === id), m1)
      await page.waitFor((id) => demo.events.some(e => e.id === id), m1)
      t.same((await page.evaluate(() => demo.events)).map(e => e.id), [p1, m1], 'both events before the restart')

      const { away, reconnectMs } = await restart(t, m1, 2)
      t.comment(`${name}: both pages reset and live again ${reconnectMs} ms after the stop (retry 200 ms)`)
      t.equal(await page.count(`#messages li[data-id="${m1}"]`), 0, 'the old process\'s room is gone from the page')

      const p2 = await server.app.demo.tick('HOOLI')
      const m2 = await say(server.app, 'new', 'live again')
      await probe.waitFor((id) => raw.es.events.some(e => e.id === id), m2)
      await page.waitFor((id) => demo.events.some(e => e.id === id), m2)
      const wire = (await probe.evaluate(() => raw.es.events)).filter(e => e.event !== 'sse-hub:head').map(e => e.event === 'reset' ? `reset after ${JSON.parse(e.data).lastEventId as string}` : e.id)
      t.same(wire, [`reset after ${head.id}`, p1, m1, `reset after ${m1}`, p2, m2], 'native EventSource: every event once, each reset exactly where the page was')
      t.same((await page.evaluate(() => demo.events)).map(e => e.id), [p1, m1, p2, m2], 'demo page: every event once')
      t.notOk(wire.includes(away), 'nothing from before the listen came as an event')
      await page.waitFor((id) => document.querySelector(`#messages li[data-id="${id}"]`) !== null, m2)
      const stats = server.app.sse.stats()
      t.equal(stats.resets, 2, 'the server counted two resets: one per page')
      t.equal(stats.resumes, 1, 'and one resume: the demo page subscribed again from the state\'s id')
      t.same(await page.evaluate(() => demo.errors), [], 'no client errors')
      for (const p of [probe, page] as EnginePage[]) {
        // A stream that cannot connect while the server is down logs an error per attempt.
        t.same(p.errors.filter(e => !CONNECTION_NOISE.test(e)), [], 'no other console errors')
      }
    })
  })
}
