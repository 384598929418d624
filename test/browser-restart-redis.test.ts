// Redis backend: ids and history live in Redis. The server is stopped and
// started again on the same port while a worker (createPublisher) keeps
// publishing; Chromium reconnects by itself with its Last-Event-ID and the
// page gets every event exactly once, in order: none lost while the server
// was down, none twice, no reset.
import t from 'tap'
import { browserSkip, launchBrowser, openPage } from './helpers/browser.js'
import { startDemo, ensureDist } from './helpers/demo.js'
import { RedisServer, redisSkip } from './helpers/redis.js'
import { heavySuite } from './helpers/heavy.js'

await heavySuite()

const skip = browserSkip() || redisSkip()

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

const sse = { retry: 200, retryJitter: 0, shutdownJitter: 0 }

t.test('restart on the same port: the page resumes with no event lost and none twice', { skip }, async t => {
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  const options = { tickMs: 0, sse, redisUrl: redis.url, redisPrefix: 'demo-e2e' }

  // A worker publishing through the same channel definitions (the built package, as the demo uses).
  ensureDist()
  // @ts-expect-error plain ESM JavaScript, no declarations
  const { demoChannels } = await import('../demo/channels.mjs') as { demoChannels: () => Record<'ticker' | 'room', any> } // eslint-disable-line @typescript-eslint/no-explicit-any
  const { createPublisher } = await import('../dist/esm/redis.js')
  const publisher = await createPublisher({ url: redis.url, prefix: 'demo-e2e', log: { info () {}, warn () {}, error () {} } })
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

  const first = await startDemo(t, options)
  const browser = await launchBrowser(t)
  const { page, errors } = await openPage(t, browser)
  await page.goto(first.origin + '/')
  await page.waitForFunction(() => demo.state === 'open')
  t.equal(await page.locator('#backend').textContent(), 'redis', 'the page says which backend')

  for (let i = 0; i < 10; i++) await publish()
  await page.waitForFunction((n) => demo.events.length >= n, published.length)

  // Stop the server. The worker keeps publishing while it is down.
  const stopAt = Date.now()
  await first.close()
  await page.waitForFunction(() => demo.state === 'connecting')
  const downAt = await page.evaluate(() => performance.now())
  const whileDown = published.length
  for (let i = 0; i < 25; i++) await publish()
  t.equal(await page.evaluate(() => demo.state), 'connecting', 'the page is still waiting for the server')

  const second = await startDemo(t, options, { port: first.port })
  const upAt = Date.now()
  const upAtPage = await page.evaluate(() => performance.now())
  t.equal(second.port, first.port, 'same port')
  // And on, while the page reconnects.
  for (let i = 0; i < 10; i++) await publish()
  await page.waitForFunction(() => demo.state === 'open')
  await page.waitForFunction((n) => demo.events.length >= n, published.length)
  const seen = await page.evaluate(() => demo)
  const openAgain = seen.states.filter(s => s.state === 'open').at(-1) as { at: number }
  t.comment(`reconnect: page back open ${(openAgain.at - downAt).toFixed(0)} ms after it saw the stream end, ` +
    `${Math.max(0, openAgain.at - upAtPage).toFixed(0)} ms after the new server listened (server was down ${upAt - stopAt} ms; retry 200 ms)`)

  // One more, so that anything sent twice would have arrived before it.
  const sentinel = await publish()
  await page.waitForFunction((id) => demo.events.some(e => e.id === id), sentinel)
  const ids = (await page.evaluate(() => demo.events)).map(e => e.id)
  t.equal(ids.length, published.length, `${published.length} events received`)
  t.same(ids, published, 'every event once, in order: the 25 published while the server was down included')
  t.equal(new Set(ids).size, ids.length, 'no duplicates')
  t.same(seen.resets, [], 'no reset: Redis kept the history')
  t.equal(seen.stateLoads, 1, 'the state was never loaded again')
  t.equal(seen.subscriptions, 1, 'the client\'s own EventSource reconnected (no resubscribe)')
  t.ok(second.app.sse.stats().resumes >= 1, 'the new server resumed the stream from history')
  const lastMessage = `message ${published.length - (published.length % 5)}`
  await page.waitForFunction((text) => Array.from(document.querySelectorAll('#messages .text')).some(e => e.textContent === text), lastMessage)
  t.equal(await page.locator('#messages li').count(), Math.floor(published.length / 5), 'every message shown once')
  t.ok(whileDown > 0)
  t.same(seen.errors, [], 'no client errors')
  t.same(errors.filter(e => !/net::ERR/.test(e)), [], 'no console errors other than refused connections')
})
