// Memory backend: history goes with the process. The server is stopped and
// started again on the same port; Chromium reconnects by itself with its
// Last-Event-ID, the new hub cannot replay (another epoch) and says `reset`;
// the page's onReset loads the state again (which holds what was published
// while it was away) and subscribes from the state's id. Then live again.
import t from 'tap'
import { browserSkip, launchBrowser, openPage } from './helpers/browser.js'
import { startDemo, until } from './helpers/demo.js'
import { heavySuite } from './helpers/heavy.js'

await heavySuite()

const skip = browserSkip()

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

// Fast reconnection for the test: the browser retries every 200 ms.
const sse = { retry: 200, retryJitter: 0, shutdownJitter: 0 }

t.test('restart on the same port: the page gets reset, loads the state again, and goes on live', { skip }, async t => {
  const first = await startDemo(t, { tickMs: 0, sse })
  const browser = await launchBrowser(t)
  const { page, errors } = await openPage(t, browser)
  await page.goto(first.origin + '/')
  await page.waitForFunction(() => demo.state === 'open' && demo.stateLoads === 1)

  const p1 = await first.app.demo.tick('ACME')
  const m1 = await first.app.demo.room.topic({ roomId: 'lobby' }).publish('message', { user: 'old', text: 'before the restart', at: Date.now() })
  await page.waitForFunction((id) => demo.events.some(e => e.id === id), m1)
  t.same((await page.evaluate(() => demo.events)).map(e => e.id), [p1, m1], 'both events before the restart')

  // Stop: streams end cleanly (retry: 200); the browser keeps trying.
  const stopAt = Date.now()
  await first.close()
  await page.waitForFunction(() => demo.state === 'connecting')
  const downAt = await page.evaluate(() => performance.now())

  // The new process publishes before it listens: no stream can carry this
  // one to the page; only the state fetched after the reset has it.
  let away = ''
  const second = await startDemo(t, { tickMs: 0, sse }, {
    port: first.port,
    beforeListen: async app => {
      away = await app.demo.room.topic({ roomId: 'lobby' }).publish('message', { user: 'new', text: 'while you were away', at: Date.now() })
    }
  })
  const upAt = Date.now()
  const upAtPage = await page.evaluate(() => performance.now())
  t.equal(second.port, first.port, 'same port')
  t.not(away.split('-')[0], m1.split('-')[0], 'the new process has a new epoch')

  await page.waitForFunction(() => demo.resets.length === 1 && demo.stateLoads === 2 && demo.state === 'open' && demo.subscriptions === 2)
  const seen = await page.evaluate(() => demo)
  const openAgain = seen.states.filter(s => s.state === 'open').at(-1) as { at: number }
  t.comment(`reconnect: page back open ${(openAgain.at - downAt).toFixed(0)} ms after it saw the stream end; ` +
    `${Math.max(0, openAgain.at - upAtPage).toFixed(0)} ms after the new server listened, reset and state reload included ` +
    `(server was down ${upAt - stopAt} ms; retry 200 ms)`)

  const [reset] = seen.resets
  t.equal(reset.reason, 'epoch', 'reset: the hub restarted without its history')
  t.equal(reset.lastEventId, m1, 'the browser asked to resume after the last event it had')
  t.equal(reset.id.split('-')[0], away.split('-')[0], 'the reset carries the new hub\'s head id')
  t.notOk(seen.events.some(e => e.id === away), 'the message published while away did not come as an event...')
  await page.waitForFunction((id) => document.querySelector(`#messages li[data-id="${id}"]`) !== null, away)
  t.pass('...but the page shows it: the state was loaded again')
  t.equal(await page.locator(`#messages li[data-id="${m1}"]`).count(), 0, 'the old process\'s room is gone from the page too')

  // Live again, on the new epoch, once each.
  const p2 = await second.app.demo.tick('HOOLI')
  const m2 = await second.app.demo.room.topic({ roomId: 'lobby' }).publish('message', { user: 'new', text: 'live again', at: Date.now() })
  await page.waitForFunction((id) => demo.events.some(e => e.id === id), m2)
  const after = (await page.evaluate(() => demo.events)).map(e => e.id)
  t.same(after, [p1, m1, p2, m2], 'then the new process\'s events, each once')
  await page.waitForFunction((id) => document.querySelector(`#messages li[data-id="${id}"]`) !== null, m2)
  t.equal(second.app.sse.stats().resets, 1, 'the server counted one reset')
  t.equal(second.app.sse.stats().resumes, 1, 'and one resume: the page subscribed again from the state\'s id')
  await until('the reset stream to be closed', () => second.app.sse.stats().openStreams === 1)
  t.equal(second.app.sse.stats().streamsOpened, 2, 'the page holds one stream: the one that got the reset was closed, the state\'s one is open')
  t.same(seen.errors, [], 'no client errors')
  // A stream that cannot connect while the server is down logs one console error per attempt.
  t.same(errors.filter(e => !/ERR_CONNECTION_REFUSED|net::ERR/.test(e)), [], 'no other console errors')
})
